"""Where client commands find their API token: FARM_TOKEN, else the file `farm login` wrote in the user's config
folder (`~/.config/farm/token`, or under XDG_CONFIG_HOME), readable by its owner only."""

from __future__ import annotations

import os
from pathlib import Path

import click


def token_file() -> Path:
    return Path(click.get_app_dir("farm")) / "token"


def save(token: str) -> Path:
    """Write the token with mode 0600 (in a 0700 folder) before a byte of it is on disk."""
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file keeps its mode through O_CREAT: set it anyway
        out.write(token + "\n")
    return path


def load() -> str | None:
    try:
        return token_file().read_text().strip() or None
    except FileNotFoundError:
        return None
