"""End-to-end tests: real farm processes and real Blender."""
