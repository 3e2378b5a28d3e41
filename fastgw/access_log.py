"""The access log: one line per request, written in batches by a thread of its own.

The request path only appends a formatted line to a list; the gateway's fold
(every 0.1 s, every 0.01 s under load: server.Gateway.fold) hands the batch to the
writer thread, so the event loop never waits on the log: a slow disk, or a pipe whose
reader has stopped reading (`FASTGW_ACCESS_LOG=stdout` into `| tee`, a logging driver),
never stops serving. While the writer is more than MAX_BEHIND bytes behind, or its
writes fail, lines are dropped, with one log line when that starts and one when it ends.
SIGUSR1 reopens the file, for log rotation. Tokens never appear: the path is logged
without its query.

    2026-11-29T03:14:00Z 127.0.0.1 GET /v1/json 200 430 1.82 1.41 jwt-auth-app json oiloil
    time client method path status bytes total-ms upstream-ms service route consumer
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

log = logging.getLogger("fastgw")

MAX_BEHIND = 8 << 20  # bytes handed to the writer and not yet written
_REOPEN = object()  # what the writer is told besides a batch: reopen the file
_STOP = object()  # or end, once what came before is written


class AccessLog:
    def __init__(self, target: str, stdout_fd: int = 1):
        self.target = target
        self.stdout_fd = stdout_fd
        self.lines: list[bytes] = []
        self._second = -1  # the time stamp is formatted once a second, not per line
        self._stamp = b""
        # bytes handed over and bytes written: each counted by one thread only
        self._handed = self._written = 0
        self._behind = False  # dropping lines because the writer is MAX_BEHIND behind
        self._failing = 0  # lines dropped since writing last failed (writer thread)
        self.fd = self._open(-1)
        self._batches: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_batches, name="access-log",
                                        daemon=True)
        self._writer.start()

    # ------------------------------------------------------------ the event loop's side

    def record(self, ex, client_ip: bytes, status: int, sent: int, now: float,
               latency: float | None) -> None:
        route = ex.route
        upstream_ms = 0.0 if latency is None else latency * 1000
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        self.lines.append(b"%s %s %s %s %d %d %.2f %.2f %s %s %s\n" % (
            self._stamp, client_ip,
            ex.method or b"-", ex.url.partition(b"?")[0] or b"-", status, sent,
            (now - ex.t0) * 1000, upstream_ms,
            route.service.encode() if route else b"-", route.name.encode() if route else b"-",
            ex.consumer.username.encode() if ex.consumer is not None else b"-"))

    def flush(self) -> None:
        """Hand the lines recorded since the last flush to the writer."""
        if not self.lines:
            return
        data = b"".join(self.lines)
        self.lines.clear()
        behind = self._handed - self._written
        if behind > MAX_BEHIND:
            if not self._behind:
                self._behind = True
                log.error("access log: %s is not taking lines as fast as they come (%d bytes "
                          "waiting); lines are dropped until it does", self.target, behind)
            return
        if self._behind:
            self._behind = False
            log.warning("access log: %s takes lines again", self.target)
        self._handed += len(data)
        self._batches.put(data)

    def reopen(self) -> None:
        """SIGUSR1: the writer reopens the file (after a rotation), after what came before."""
        self.flush()
        self._batches.put(_REOPEN)

    def close(self) -> None:
        """Write what is left, then end the writer (waiting a moment for it at most)."""
        self.flush()
        self._batches.put(_STOP)
        self._writer.join(2.0)

    # ------------------------------------------------------------ the writer thread

    def _open(self, old: int) -> int:
        """The file's descriptor, opened anew (`old` closed), or `old` if it cannot be."""
        if self.target == "stdout":
            return self.stdout_fd
        try:
            fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            log.error("access log: cannot open %s (%s)%s", self.target, exc.strerror or exc,
                      "; it stays as it was" if old >= 0 else "; lines are dropped until a "
                      "SIGUSR1 opens it")
            return old
        if old >= 0:
            os.close(old)
        return fd

    def _write_batches(self) -> None:
        while True:
            item = self._batches.get()
            if item is _STOP:
                return
            if item is _REOPEN:
                self.fd = self._open(self.fd)
                continue
            self._write(item)
            self._written += len(item)

    def _write(self, data: bytes) -> None:
        """One batch; a write that fails (a full disk, a closed pipe) drops it, with one log
        line when that starts and one when writing works again."""
        try:
            if self.fd < 0:
                raise OSError("not open")
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:
            if not self._failing:
                log.error("access log: cannot write to %s (%s); its lines are dropped until "
                          "it can", self.target, exc.strerror or exc)
            self._failing += data.count(b"\n")
            return
        if self._failing:
            log.warning("access log: writing to %s again; %d lines were dropped",
                        self.target, self._failing)
            self._failing = 0
