"""Render-node code: the Celery tasks, the Blender runner and the script Blender runs."""
