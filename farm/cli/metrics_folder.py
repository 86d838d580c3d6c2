"""The multiprocess folder prometheus-client needs under `farm web` and `farm worker`, set before anything imports
it (it picks its mode once, at import): kept apart from `farm.metrics`, which imports it."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(instance_dir: Path, kind: str) -> Path:
    """Give this process and its children a fresh folder under the instance's tmp/, removed at exit. The farm always
    makes its own (an inherited PROMETHEUS_MULTIPROC_DIR is replaced): a folder shared by two farm processes, or
    left from an earlier run, would add counts that are not this process's."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    parent = instance_dir / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"metrics-{kind}-", dir=parent))
    os.environ[ENV] = str(folder)
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder
