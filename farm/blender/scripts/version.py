"""Runs inside Blender: report its version, for `farm check`."""

import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run

if __name__ == "__main__":
    run(lambda: emit(event="version", blender=bpy.app.version_string))
