"""Runs inside Blender: report its version, for `farm check`."""

import json

import bpy

print("@@FARM@@", json.dumps({"event": "version", "blender": bpy.app.version_string}), flush=True)
