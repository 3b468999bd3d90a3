"""Agent data model, prompt builders and lenient parsers for planner and critic outputs."""
