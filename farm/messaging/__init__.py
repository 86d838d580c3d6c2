"""The broker side: sending chunks as Celery chords, reading the queues, and the janitor that repairs lost work."""
