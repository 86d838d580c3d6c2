"""Runs inside Blender: the farm's private line out of a Blender process, and the only way a script leaves it.

Events go to a pipe the farm opened for this process (its descriptor is in FARM_EVENTS_FD), never to stdout or
stderr: those carry whatever Blender prints, and Blender prints what a file tells it to (a failing driver's
expression, newlines included), so nothing read from them is trusted. A file cannot write to the pipe: with scripts
off, no Python of its own runs.

`leave` ends every script: it says `end`, flushes, closes the pipe and exits at once with `os._exit`. Blender's
normal teardown is skipped on purpose: a file with a Python driver makes it hang there, and a fluid domain without
its cache makes it abort there (SIGABRT), after the work was done.

Standalone on purpose (stdlib only), so it runs under a `blender` binary's own Python too. Run by hand (no farm,
no descriptor), events are printed to stderr for a person to read.
"""

import json
import os
import sys
import traceback

_FD = os.environ.pop("FARM_EVENTS_FD", None)
_pipe = os.fdopen(int(_FD), "w", encoding="utf-8", buffering=1) if _FD else sys.stderr
if _FD:
    os.set_inheritable(_pipe.fileno(), False)  # anything Blender starts gets no line to the farm


def emit(**event):
    """One event, one JSON line, written through at once (the farm stores each frame as soon as it hears of it)."""
    _pipe.write(json.dumps(event) + "\n")
    _pipe.flush()


def leave(code):
    """Say `end`, flush everything and exit now, skipping Blender's teardown (see the module's docstring)."""
    try:
        emit(event="end", code=code)
        for stream in (sys.stdout, sys.stderr, _pipe):
            stream.flush()
        if _pipe is not sys.stderr:
            _pipe.close()
    finally:
        os._exit(code)


def run(main):
    """Run `main()` and leave with its exit code; an exception is printed (it goes to the log) and exits with 3."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 3
    except BaseException:  # whatever happened, the process leaves through os._exit
        traceback.print_exc()
        code = 3
    leave(code or 0)
