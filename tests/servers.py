"""Private server instances for fault tests, so the machine's shared services stay up while we break ours:
a redis-server on a free port, a Postgres cluster made with initdb, and a TCP proxy in front of the moto S3 server
that can be cut to simulate an outage without losing the server's data."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.helpers import free_port, wait_until


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _answers(self.port), timeout=10, what="private redis to start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart_empty(self) -> None:
        """Kill it and start a new, empty one on the same port: every queued message is gone."""
        self.stop()
        self.start()


class PrivatePostgres:
    """A throwaway cluster (trust auth, one database) made with the machine's initdb and pg_ctl."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        assert found, "Postgres server binaries not found under /usr/lib/postgresql/*/bin"
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        # Not under pytest's private (0700, root-owned) temp folder: the server runs as the postgres user.
        self.folder = Path(tempfile.mkdtemp(prefix="farm-test-pg-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "pgdata"
        self.sockets = self.folder / "pgsock"
        for path in (self.data, self.sockets):
            path.mkdir()
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "farm")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/farm"

    def _run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l", str(self.data / "server.log"), action, *extra
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self) -> None:
        """Drop every connection, as a crash or a failover would."""
        self._ctl("restart", "-m", "immediate")


class CuttableProxy:
    """TCP proxy to a local port; `cut()` refuses and drops every connection until `restore()`; `stall()` keeps
    every connection open but lets nothing through, like a hung server, until `flow()`."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.cut_now = threading.Event()
        self.flowing = threading.Event()
        self.flowing.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.cut_now.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self.cut_now.set()
        if self.listener:
            with contextlib.suppress(OSError):  # wakes the accepting thread: a close alone leaves it accepting
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self.cut_now.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.cut_now.is_set():  # accepted while being cut: refused like the rest
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def flow(self) -> None:
        self.flowing.set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()


class SmallDisk:
    """A tmpfs of `size_mb` mounted at `path` (tests run as root, as CI does): a worker's disk that fills for real.
    `fill()` writes a ballast file until the disk says ENOSPC; `drain()` removes it."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)

    @property
    def ballast(self) -> Path:
        return self.path / "ballast"

    def fill(self) -> None:
        block = b"\0" * 2**16
        with open(self.ballast, "ab") as fh:
            try:
                while True:
                    fh.write(block)
                    fh.flush()
            except OSError:
                pass
        with contextlib.suppress(OSError), open(self.ballast, "ab") as fh:  # the last partial block, byte by byte
            while True:
                fh.write(b"\0")
                fh.flush()

    def drain(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def close(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=False)
