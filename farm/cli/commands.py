"""The `farm` command: API clients (submit, jobs, status, cancel, retry, download) and process starters
(web, worker, demo), plus `check` — the first thing to run when something is wrong.

Failures print one line on stderr and exit non-zero; there is never a traceback for a user's mistake.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from farm.blender.launcher import BlenderFailed, BlenderNotFound
from farm.cli import accounts, metrics_folder
from farm.cli.client import ClientError, FarmClient
from farm.cli.progress import ProgressPrinter
from farm.config import ConfigError, Settings, load_settings, require_secret_key
from farm.errors import FarmError
from farm.jobs.planning import parse_frame_range
from farm.projects import packing, sending

if TYPE_CHECKING:
    from farm.db import Database

USER_ERRORS = (ClientError, ConfigError, FarmError, BlenderNotFound, BlenderFailed, FileNotFoundError, ValueError)


def settings() -> Settings:
    return load_settings()


def client() -> FarmClient:
    return accounts.api()


def wait_for(api: FarmClient, job_id: str) -> dict[str, Any]:
    printer = ProgressPrinter()
    try:
        job = api.wait(job_id, printer)
    finally:
        printer.close()
    if job["status"] != "COMPLETED":
        raise ClientError(f"job {job_id} ended {job['status']}: {job.get('error') or 'no reason given'}")
    return job


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """farm: render Blender frames on every machine you have."""


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--frames", help="Inclusive range like 1-48 (default: the scene's own range).")
@click.option("--chunk-size", type=int, help="Frames per task (default: chosen by the farm).")
@click.option("--name", help="Job name (default: the file's stem).")
@click.option("--main", help="For a .zip project: the .blend inside it to render.")
@click.option(
    "--engine", type=click.Choice(["CYCLES", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH"], case_sensitive=False)
)
@click.option("--samples", type=int)
@click.option("--resolution", help="WIDTHxHEIGHT, e.g. 1920x1080.")
@click.option("--percentage", "resolution_percentage", type=int, help="Resolution scale, 1-100.")
@click.option("--format", "output_format", type=click.Choice(["PNG", "JPEG", "OPEN_EXR"], case_sensitive=False))
@click.option("--device", type=click.Choice(["AUTO", "GPU", "CPU"], case_sensitive=False))
@click.option("--priority", type=click.IntRange(0, 9), help="0-9, higher renders first.")
@click.option("--strict", is_flag=True, default=None, help="Refuse the job if a file the scene uses is missing.")
@click.option("--notify-url", "notify_url", help="POST the job's end here as signed JSON (a webhook).")
@click.option("--split", type=int, help="Render one still (--frames N) in this many parts, 2-64, on several workers.")
@click.option(
    "--project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The project's root folder (default: the deepest folder holding the .blend and what it names relatively).",
)
@click.option("--dry-run", is_flag=True, help="List the files that would be sent, and those missing; send nothing.")
@click.option("--wait", is_flag=True, help="Show progress and wait until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def submit(
    file: Path,
    frames: str | None,
    resolution: str | None,
    project: Path | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
    **fields: Any,
) -> None:
    """Queue FILE for rendering: a .blend is sent with every file it uses (only those the farm lacks are
    uploaded); a .zip project is uploaded whole."""
    if fields["strict"]:
        fields["strict"] = 1
    if frames:
        fields["frame_start"], fields["frame_end"] = parse_frame_range(frames)
    if resolution:
        try:
            fields["resolution_x"], fields["resolution_y"] = (int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise ValueError(f"--resolution must look like 1920x1080, got {resolution!r}") from None
    api = client()
    if file.suffix.lower() == ".zip":
        job = api.submit(file, fields)
    else:
        with tempfile.TemporaryDirectory(prefix="farm-pack-") as workdir:
            packed = packing.pack(file, Path(workdir), project)
            show_project(packed, dry_run)
            if dry_run:
                return
            sent = sending.send(api, packed, upload_bar)
            click.echo(f"uploaded {sent.uploaded} of {sent.total} files ({sent.uploaded_bytes} bytes)")
            job = api.submit_manifest(sent.manifest, fields)
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        click.echo(
            f"{job['id']}  {job['name']}  {job['status']}  frames {job['render']['frame_start']}-"
            f"{job['render']['frame_end']} in chunks of {job['settings']['chunk_size']}"
        )
    for warning in job.get("warnings", []):
        click.echo(f"warning: {warning['message']}", err=True)
    if wait:
        job = wait_for(api, job["id"])
        click.echo(f"completed: {job['asset']['filename']}  {job['asset']['url']}")


@contextlib.contextmanager
def upload_bar(files: int, total_bytes: int) -> Iterator[Callable[[int], None]]:
    """The upload's progress bar, drawn on a terminal only: piped, stderr is kept for one-line errors."""
    with click.progressbar(
        length=total_bytes,
        label=f"uploading {files} files",
        file=sys.stderr if sys.stderr.isatty() else io.StringIO(),
        show_pos=True,
    ) as bar:
        yield bar.update


def show_project(packed: packing.Project, everything: bool) -> None:
    """What will be sent (every file with --dry-run) and what is missing (stderr is kept for one-line errors)."""
    click.echo(f"project {packed.root}: {len(packed.files)} files, {packed.size} bytes")
    if everything:
        for rel in sorted(packed.files):
            click.echo(f"  {rel}")
    for rel in packed.repointed:
        click.echo(f"outside the project, sent as {rel}")
    for path in packed.missing:
        click.echo(f"missing: {path}")


@cli.command()
@click.option("--status", help="Only jobs with this status (comma-separated for several).")
@click.option("-q", "--query", "q", help="Only jobs whose name contains this.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(status: str | None, q: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    found = client().jobs(status=status, q=q, limit=limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for job in found:
        render = job["render"]
        click.echo(
            f"{job['id']}  {job['status']:<10} {render['frames_rendered']:>5}/{render['frames_to_render']:<5} "
            f"{job['name']}"
        )
    if not found:
        click.echo("no jobs", err=True)


@cli.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Follow progress until the job ends.")
def status(job_id: str, wait: bool) -> None:
    """Show one job as JSON."""
    api = client()
    job = wait_for(api, job_id) if wait else api.job(job_id)
    click.echo(json.dumps(job, indent=2))


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job: running Blender processes are stopped, rendered frames kept."""
    job = client().cancel(job_id)
    click.echo(f"{job['id']}  {job['status']}")


@cli.command()
@click.argument("job_id")
def delete(job_id: str) -> None:
    """Delete a job (canceling it first if it is active): its frames, zip, logs and rows are removed for good."""
    client().delete(job_id)
    click.echo(f"{job_id}  deleted")


@cli.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True)
def retry(job_id: str, wait: bool) -> None:
    """Re-render only the frames of a FAILED or CANCELED job that did not finish."""
    api = client()
    job = api.retry(job_id)
    click.echo(f"{job['id']}  {job['status']}")
    if wait:
        wait_for(api, job_id)


def output_folder(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`-o/--output DIR`, the current folder by default, passed as `out_dir`."""
    return click.option(
        "-o",
        "--output",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help=help_text,
    )


@cli.command()
@click.argument("job_id")
@output_folder("Folder to save the zip in.")
def download(job_id: str, out_dir: Path) -> None:
    """Save a completed job's zip."""
    click.echo(client().download(job_id, out_dir))


@cli.command()
@output_folder("Folder to write farm_submit.zip in.")
def addon(out_dir: Path) -> None:
    """Write the Blender add-on, farm_submit.zip: in Blender 4.2+, Preferences > Get Extensions > Install from Disk
    (or Add-ons > Install for a legacy add-on); its panel is under Render Properties."""
    from farm.addon.building import write_zip

    click.echo(write_zip(out_dir))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Web processes.")
@click.option(
    "--threads",
    type=click.IntRange(2, 1024),
    help="Threads per process; live pages may hold 3 in 4, the rest serve the API (default: FARM_WEB_THREADS, 32).",
)
def web(host: str, port: int, workers: int, threads: int | None) -> None:
    """Serve the web app and the API (gunicorn)."""
    from gunicorn.app.wsgiapp import WSGIApplication

    from farm.cli import gunicorn_json

    if threads is not None:
        os.environ["FARM_WEB_THREADS"] = str(threads)  # the app caps its live streams by it
    config = settings()  # fails on a bad setting or a weak secret key in one line, before gunicorn starts
    require_secret_key(config)
    metrics_folder.prepare(config.instance_dir, "web")  # /metrics sums every gunicorn process's counts
    say_how_to_make_the_first_admin(config)
    threads = config.web_threads
    sys.argv = [
        "farm web",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--no-control-socket",
        "--limit-request-line",
        str(gunicorn_json.REQUEST_LINE_LIMIT),
        "--timeout",
        "120",
        "--access-logfile",
        "-",
        "webapp.wsgi:app",
    ]
    gunicorn_json.install()
    WSGIApplication("%(prog)s").run()


def say_how_to_make_the_first_admin(config: Settings) -> None:
    """A farm with no users lets nobody in: say, on start, the one command that lets the first admin in."""
    from farm.db import Database, init_db
    from farm.users import count_users

    db = Database(config.database_url)
    try:
        init_db(db.engine)
        with db.session() as session:
            empty = count_users(session) == 0
    finally:
        db.engine.dispose()
    if empty:
        click.echo(
            "farm web: this farm has no users yet, so nobody can sign in. Create the first admin beside this "
            "database: `farm users create NAME --role admin --password-stdin` (it prints the admin's API token)",
            err=True,
        )


@cli.command()
@click.option(
    "-n",
    "--name",
    default="farm@%h",
    show_default=True,
    help="Worker name; give each worker on one machine its own (gpu0@%h, gpu1@%h).",
)
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Chunks rendered at once (Blender already uses every core).",
)
@click.option("-Q", "--queues", help="Queues to consume (default: FARM_QUEUE, and its GPU queue if there is a GPU).")
@click.option("--gpus", help="One worker process per GPU: 'all', or numbers as `farm devices` lists them (0,2).")
@click.option("--cpu-workers", type=click.IntRange(0, 64), default=0, help="Also start N CPU-only worker processes.")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(name: str, concurrency: int, queues: str | None, gpus: str | None, cpu_workers: int, loglevel: str) -> None:
    """Start a render worker (a Celery worker process) on this machine, or one per GPU with --gpus."""
    from farm.blender import devices
    from farm.celery_app import make_celery

    conf = settings()
    # closed before Celery forks its pool processes: the worker's processes make their own (workers.context)
    wait_for_schema(conf, f"worker {name.replace('%h', socket.gethostname())}").engine.dispose()
    found = devices.from_env() or devices.detect(conf)
    if gpus or cpu_workers:
        from farm.cli.supervisor import supervise

        plans = devices.worker_plans(found, gpus=gpus, cpu_workers=cpu_workers, name=name, queue=conf.queue)
        raise SystemExit(supervise(plans, concurrency=concurrency, loglevel=loglevel))
    os.environ[devices.ENV] = devices.to_env(found)  # the pool processes inherit it: no second detection
    metrics_folder.prepare(conf.instance_dir, "worker")  # FARM_METRICS_PORT sums every pool process's counts
    app = make_celery(conf)
    app.worker_main(
        [
            "worker",
            f"--hostname={name}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--queues={queues or ','.join(devices.queues_for(conf.queue, found))}",
            "--pool=prefork",
            "--task-events",
            "--without-gossip",
        ]
    )


@cli.command("devices")
def list_devices() -> None:
    """List the compute devices Cycles finds here, numbered as --gpus takes them."""
    from farm.blender import devices

    found = devices.detect(settings())
    for i, device in enumerate(devices.gpus(found)):
        click.echo(f"{i}  {device.describe()}  [{device.id}]")
    for device in devices.cpu_only(found):
        click.echo(f"-  {device.describe()}")
    if not devices.gpus(found):
        click.echo(f"no GPU: {devices.NO_GPU}", err=True)


@cli.command()
def janitor() -> None:
    """Run only the janitor (every worker already runs one): recovers lost, silent and unpackaged work."""
    import threading

    from farm.celery_app import make_celery
    from farm.messaging.janitor import Janitor
    from farm.webhooks import courier

    conf = settings()
    db = wait_for_schema(conf, "the janitor")
    courier.install(conf)  # the janitor's sweeps send the webhooks due again
    click.echo(f"janitor sweeping every {conf.janitor_seconds:g} s (Ctrl-C stops)", err=True)
    Janitor(db, make_celery(conf), conf, name=f"janitor@{socket.gethostname()}").run(threading.Event())


def wait_for_schema(conf: Settings, who: str) -> Database:
    """Workers never change the schema: they wait (FARM_SCHEMA_WAIT_SECONDS at most) for the web app to bring the
    database to the revision their code needs, saying so in the log."""
    import logging

    from farm.db import Database
    from farm.schema import SchemaNotReady, wait_until_ready

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db = Database(conf.database_url)
    try:
        wait_until_ready(db.engine, conf.schema_wait_seconds, who=who)
    except SchemaNotReady as exc:
        raise click.ClickException(str(exc)) from None
    return db


@cli.group()
def db() -> None:
    """The database's schema: see its revision, upgrade it (the web app also upgrades it at start)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database's schema to this code's revision (under a lock: safe while other processes start)."""
    from farm.db import make_engine
    from farm.schema import upgrade

    engine = make_engine(settings().database_url)
    before, after = upgrade(engine)
    engine.dispose()
    if before == after:
        click.echo(f"database already at revision {after} (current)")
    else:
        click.echo(f"database upgraded from revision {before or 'none (empty)'} to {after}")


@db.command("current")
def db_current() -> None:
    """Print the database's schema revision, and whether it is the one this code needs (exit 1 if not)."""
    from farm.db import make_engine
    from farm.schema import revision

    engine = make_engine(settings().database_url)
    state = revision(engine)
    engine.dispose()
    click.echo(f"database {state.describe()}")
    if not state.ready:
        raise SystemExit(1)


@cli.command()
def check() -> None:
    """Print the effective settings and whether the database, broker, storage and Blender answer."""
    from farm.cli.health import run_checks

    conf = settings()
    listed = conf.describe()
    width = max(map(len, listed))
    for key, value in listed.items():
        click.echo(f"{key:<{width}} {value}")
    failed = 0
    for name, ok, detail in run_checks(conf):
        failed += not ok
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {name:<9} {detail}")
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--frames", type=int, default=48, show_default=True)
@click.option("--chunk-size", type=int, default=4, show_default=True)
@click.option("--port", type=int, default=5000, show_default=True, help="Web port (a free one if it is taken).")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
def demo(frames: int, chunk_size: int, port: int, out_dir: Path) -> None:
    """Render the demo scene end to end: web app + worker on this machine, submit, watch, download."""
    from farm.cli.demo import run_demo

    run_demo(settings(), frames=frames, chunk_size=chunk_size, port=port_or_free(port), out_dir=out_dir)


def port_or_free(port: int) -> int:
    """`port` if nothing listens on it, else one the system picks."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


cli.add_command(accounts.users_group)
cli.add_command(accounts.tokens_group)
cli.add_command(accounts.login)


def main() -> None:
    """Entry point: one line on stderr and a non-zero exit for any error a user can cause."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("farm: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        command = f"farm {exc.ctx.info_name} --help" if exc.ctx and exc.ctx.parent else "farm --help"
        click.echo(f"farm: {exc.format_message()} (see {command})", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"farm: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except USER_ERRORS as exc:
        click.echo(f"farm: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("farm: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
