"""Flask extensions, created here unbound and bound to each app by `create_app`.

`db`: Flask-SQLAlchemy bound to the farm's own table metadata, so web requests get a session per request.
"""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from farm.models import Base

db = SQLAlchemy(metadata=Base.metadata)
