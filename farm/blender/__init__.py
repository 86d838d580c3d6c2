"""Blender as the farm runs it: the launcher, the devices it renders on, and the scripts that run inside it."""
