"""`farm users create` (beside the database, as `farm web` runs), `farm tokens` and `farm login` (over the API)."""

from __future__ import annotations

import socket
import sys

import click

from farm import users
from farm.cli import credentials
from farm.cli.client import FarmClient
from farm.config import load_settings
from farm.db import Database, init_db
from farm.models import Role


def api() -> FarmClient:
    settings = load_settings()
    return FarmClient(settings.api_url, token=settings.token or credentials.load())


@click.group("users")
def users_group() -> None:
    """Manage users directly in the farm's database (run where `farm web` runs)."""


@users_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read a password (for the login page) from standard input.")
def create_user(name: str, role: str, password_stdin: bool) -> None:
    """Create a user and print a new API token for it (the last line)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    db = Database(load_settings().database_url)
    try:
        init_db(db.engine)
        with db.session() as session:
            actor = f"farm users create@{socket.gethostname()}"
            user = users.create_user(session, name, Role(role), password, actor=actor)
            made = users.create_token(session, user, "made by farm users create", actor=actor)
    finally:
        db.engine.dispose()
    click.echo(f"created {role} {user.name}{' with a password' if password else ''}; API token (shown once):")
    click.echo(made.secret)


@click.group("tokens")
def tokens_group() -> None:
    """Your API tokens: create, list, revoke."""


@tokens_group.command("create")
@click.option("--name", default="", help="What it is for (laptop, CI).")
def create_token(name: str) -> None:
    """Make a new token for yourself and print it (the last line; it is not shown again)."""
    made = api().create_token(name)
    click.echo(f"token {made['id']} ({made['prefix']}…) for {made['user']}:")
    click.echo(made["token"])


@tokens_group.command("list")
def list_tokens() -> None:
    """Your tokens: id, first characters, name, last use."""
    for t in api().tokens():
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else f"last used {t['last_used_at'] or 'never'}"
        click.echo(f"{t['id']:>5}  {t['prefix']}…  {state}  {t['name']}")


@tokens_group.command("revoke")
@click.argument("token_or_id")
def revoke_token(token_or_id: str) -> None:
    """Revoke a token, named by its listed id or the token itself; it stops working at once."""
    row = api().revoke_token(token_or_id)
    click.echo(f"revoked token {row['id']} ({row['prefix']}…)")


@click.command()
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input instead of a prompt.")
def login(token_stdin: bool) -> None:
    """Store an API token (from the My tokens page, or `farm users create`) for the client commands."""
    token = sys.stdin.readline().strip() if token_stdin else click.prompt("API token", hide_input=True).strip()
    settings = load_settings()
    who = FarmClient(settings.api_url, token=token).me()
    path = credentials.save(token)
    click.echo(f"signed in to {settings.api_url} as {who['name']} ({who['role']}); token saved in {path}")
