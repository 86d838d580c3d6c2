"""WSGI entry point for `farm web` (gunicorn) and any other WSGI server: `webapp.wsgi:app`."""

from webapp import create_app

app = create_app()
