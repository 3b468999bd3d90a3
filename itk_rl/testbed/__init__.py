"""A verifiable toy world: shapes on a small canvas, a procedural generator and an exact judge."""
