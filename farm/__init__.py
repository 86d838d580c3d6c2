"""farm: a render farm for Blender. The core: settings, models, states, planning, storage, Celery app, CLI."""
