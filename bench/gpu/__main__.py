"""The GPU proof, prepared here and run on a lent GPU machine in as few calls as its limits allow.

    python -m bench.gpu pack       # build the runtime archive and cut it into bench/gpu_pieces/ (minutes: xz -9)
    python -m bench.gpu plan       # the calls to make on the lent machine, one per piece, as JSON lines
    python -m bench.gpu rehearse   # those calls here, one after the other, into a bare local store, on the CPU

A rehearsal runs bench/gpu_proof.sh exactly as the lent machine will, each call seeing only its own piece, with
the small scene; FARM_GPU_HOST_PYTHON names the Python that stands in for the machine's own (a 3.12, as there, if
you have one; default python3). Its report is bench/results/gpu-rehearsal.md.

On the lent machine (one NVIDIA H100, 16 cores, Python 3.12 only, no registry; a call carries at most 64 MiB, the
working tree included; a command runs at most 10 minutes; a session has 15 minutes of device time, start-up and idle
waits included; a machine goes back 30 s after a call, and a fresh one starts bare):
1. Here: `python -m bench.gpu pack` (unless bench/gpu_pieces/ is current), then `python -m bench.gpu plan`.
2. Make the calls it prints, in order and back to back: each runs `bash bench/gpu_proof.sh` (timeout_s 600) and
   carries the manifest and one piece; each answers "store …: k pieces of N". The store lives only as long as the
   machine: if k falls short of the call's number, a fresh machine took over; carry the pieces it names.
3. The call that brings the last piece unpacks the runtime (under a minute) and proves within 450 s (AUTO, OPTIX,
   CPU, the `--gpus all` job, then CUDA). Its files come back: gpu.md, proof.json, logs.tar.gz and the measured
   frame from AUTO and CPU; put gpu.md in bench/results/. To prove again on the same machine, call
   `bash bench/gpu_proof.sh` with nothing carried (compiled GPU kernels stay in the store). Then give it back.
Budget: start-up (1-2 min) + one call per piece (its transfer and the gap before the next) + the proof (7.5 min).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.gpu import pack, pieces

CALL_BYTES = 64 * 2**20  # what one call of the lent machine carries: the working tree and the carried paths
REHEARSAL_STORE = Path("/var/tmp/farm-gpu-rehearsal")  # like the machine's: outside the tree, readable by nobody


def travelling_bytes() -> int:
    """The working tree as a call sends it: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=pack.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum((pack.ROOT / n).stat().st_size for n in listed.decode().split("\0") if (pack.ROOT / n).is_file())


def plan() -> list[dict[str, object]]:
    manifest = pieces.read_manifest(pack.OUT)
    tree = travelling_bytes() + (pack.OUT / pieces.MANIFEST).stat().st_size
    folder = pack.OUT.relative_to(pack.ROOT)
    calls = []
    for piece in manifest["pieces"]:
        size = tree + piece["size"]
        if size > CALL_BYTES:
            raise SystemExit(f"{piece['name']} and the working tree make {size} bytes, over a call's {CALL_BYTES}")
        calls.append(
            {
                "carry": [str(folder / pieces.MANIFEST), str(folder / piece["name"])],
                "command": "bash bench/gpu_proof.sh",
                "timeout_s": 600,
                "MiB": round(size / 2**20, 1),
            }
        )
    return calls


def rehearse() -> int:
    shutil.rmtree(REHEARSAL_STORE, ignore_errors=True)
    manifest = pieces.read_manifest(pack.OUT)
    report = pack.ROOT / "bench" / "results" / "gpu-rehearsal.md"
    report.unlink(missing_ok=True)
    for number, piece in enumerate(manifest["pieces"], 1):
        with tempfile.TemporaryDirectory(prefix="gpu-call-") as carried:
            for name in (pieces.MANIFEST, piece["name"]):
                shutil.copyfile(pack.OUT / name, Path(carried) / name)
            env = dict(os.environ, FARM_GPU_CARRIED=carried, FARM_GPU_STORE=str(REHEARSAL_STORE))
            print(f"call {number}: carries {piece['name']}", file=sys.stderr, flush=True)
            args = ["bash", "bench/gpu_proof.sh", "--size", "rehearsal", "--report", str(report)]
            if subprocess.run(args, cwd=pack.ROOT, env=env, check=False).returncode:
                return 1
    return 0 if report.is_file() else 1


def main(argv: list[str]) -> int:
    if argv == ["pack"]:
        made = pack.build()
        print(f"{len(made['pieces'])} pieces, {made['size'] / 2**20:.0f} MiB, in {pack.OUT}")
        return 0
    if argv == ["plan"]:
        for call in plan():
            print(json.dumps(call))
        return 0
    if argv == ["rehearse"]:
        return rehearse()
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
