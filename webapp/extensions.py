"""Flask-SQLAlchemy bound to the farm's own table metadata, so web requests get a session per request."""

from flask_sqlalchemy import SQLAlchemy

from farm.models import Base

db = SQLAlchemy(metadata=Base.metadata)
