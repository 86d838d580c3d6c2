"""Runs inside Blender with no file loaded: list every device each Cycles compute backend can use, best first.

Standalone on purpose (stdlib + bpy only), so it works under a `blender` binary's own Python too. A backend whose
driver or library is missing simply lists nothing (or raises, which we treat the same).
"""

import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run

BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def main():
    prefs = bpy.context.preferences.addons["cycles"].preferences
    devices = []
    for backend in BACKENDS:
        try:
            listed = prefs.get_devices_for_type(backend)
        except (TypeError, ValueError, RuntimeError):
            continue
        devices += [{"backend": backend, "id": d.id, "name": d.name} for d in listed if d.type == backend]
    devices.append({"backend": "CPU", "id": "CPU", "name": f"{cpu_name()} ({os.cpu_count()} threads)"})
    emit(event="devices", devices=devices, blender=bpy.app.version_string)


if __name__ == "__main__":
    run(main)
