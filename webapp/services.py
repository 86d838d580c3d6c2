"""The farm's services for the current app, typed, so views never dig in `app.extensions` themselves."""

from __future__ import annotations

from celery import Celery
from flask import current_app

from farm.config import Settings
from farm.storage import Storage


def settings() -> Settings:
    return current_app.extensions["farm"]


def storage() -> Storage:
    return current_app.extensions["farm.storage"]


def celery() -> Celery:
    return current_app.extensions["celery"]
