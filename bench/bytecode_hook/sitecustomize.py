"""Counts the Python bytecodes a process's main thread runs, between two SIGUSR2s.

bench/bytecodes.py puts this folder on PYTHONPATH with BYTECODES_OUT=<prefix>; without
BYTECODES_OUT nothing happens. The first SIGUSR2 starts counting and creates
<prefix>.<pid>.on; the second stops, writes {"file:line function": bytecodes} as JSON to
<prefix>.<pid> and removes the .on file.

The trace function is installed here, at start-up, and is idle until switched on: on
CPython 3.11, sys.settrace called later (from a signal handler) does not reach the callbacks
that uvloop's C event loop runs. Idle, it still slows every Python call, so a process started
with this hook is for counting, never for timing.
"""
import json
import os
import signal
import sys

_OUT = os.environ.get("BYTECODES_OUT")

if _OUT:
    _on = False
    _counts: dict = {}  # code object -> bytecodes run in it

    def _opcode(frame, event, arg):
        if event == "opcode" and _on:
            code = frame.f_code
            _counts[code] = _counts.get(code, 0) + 1
        return _opcode

    def _call(frame, event, arg):
        if not _on:
            return None
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return _opcode

    def _toggle(signum, frame):
        global _on
        prefix = f"{_OUT}.{os.getpid()}"
        if not _on:
            _counts.clear()
            open(prefix + ".on", "w").close()
            _on = True
            return
        _on = False
        counts = {}
        for code, n in _counts.items():
            key = f"{code.co_filename}:{code.co_firstlineno} {code.co_qualname}"
            counts[key] = counts.get(key, 0) + n
        with open(prefix + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(prefix + ".tmp", prefix)
        os.remove(prefix + ".on")

    sys.settrace(_call)
    signal.signal(signal.SIGUSR2, _toggle)
