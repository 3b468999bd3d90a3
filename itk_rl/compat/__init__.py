"""Workarounds for third-party packages, each applied only where the host needs it."""
