#!/usr/bin/env bash
# The GPU proof on a lent machine that has Python 3.12 only and reaches no registry. One command for every call:
#
#     bash bench/gpu_proof.sh [prove options]
#
# Each call carries bench/gpu_pieces/manifest.json and one piece (`python -m bench.gpu plan` lists the calls);
# this stores the piece, checked against its sha256, in $FARM_GPU_STORE, a folder outside the working tree that
# lasts as long as the machine. Once every piece is there, the same command joins them, checks the archive, unpacks
# the runtime (Python 3.11, bpy 4.5, the farm's packages, Postgres and Redis) and runs the proof under it:
# bench/gpu/prove.py, which writes bench/results/gpu.md and hands it back through $OUT.
#
# FARM_GPU_CARRIED: where this call's pieces are (default bench/gpu_pieces); FARM_GPU_HOST_PYTHON: the machine's
# own Python, for the steps before the runtime exists (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
store=${FARM_GPU_STORE:-/var/tmp/farm-gpu-proof}
carried=${FARM_GPU_CARRIED:-bench/gpu_pieces}
host_python=${FARM_GPU_HOST_PYTHON:-python3}

if [ -f "$carried/manifest.json" ]; then  # a call that carries nothing proves again with what is stored
    "$host_python" -m bench.gpu.pieces receive "$carried" "$store"
fi
status=0
runtime=$("$host_python" -m bench.gpu.pieces ready "$store") || status=$?
if [ "$status" = 1 ]; then
    echo "not every piece is here yet: carry the next one" >&2
    exit 0
fi
[ "$status" = 0 ] || exit "$status"
export LD_LIBRARY_PATH="$runtime/python/lib:$runtime/syslibs-used${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Where NVIDIA's container runtime mounts the driver (libcuda, libnvoptix); last, so the loader's own paths win.
if [ -d /usr/local/nvidia/lib64 ]; then
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
exec "$runtime/python/bin/python3.11" -m bench.gpu.prove --runtime "$runtime" "$@"
