"""Server-rendered pages for people; they read the same rows the API serves."""

from __future__ import annotations

from flask import Blueprint, Flask, render_template
from sqlalchemy import select

from farm.models import Job
from webapp.extensions import db

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    jobs = db.session.scalars(select(Job).order_by(Job.created_at.desc()).limit(50)).all()
    return render_template("index.html", jobs=jobs)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
