"""The access log: one line per request, written in batches.

The request path only appends a formatted line to a list; the gateway's fold
(every 0.1 s, every 0.01 s under load: server.Gateway.fold) writes the batch with one
`os.write`, so a slow disk costs at most one write per fold, never one per request.
SIGUSR1 reopens the file, for log rotation. Tokens never appear: the path is logged
without its query.

    2026-11-29T03:14:00Z 127.0.0.1 GET /v1/json 200 430 1.82 1.41 jwt-auth-app json oiloil
    time client method path status bytes total-ms upstream-ms service route consumer
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("fastgw")


class AccessLog:
    def __init__(self, target: str, stdout_fd: int = 1):
        self.target = target
        self.stdout_fd = stdout_fd
        self.lines: list[bytes] = []
        self.fd = -1
        self.lost = 0  # lines dropped since writing last failed (flush)
        self._second = -1  # the time stamp is formatted once a second, not per line
        self._stamp = b""
        self.reopen()

    def reopen(self) -> None:
        self.flush()
        if self.target == "stdout":
            self.fd = self.stdout_fd
            return
        old = self.fd
        self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if old >= 0:
            os.close(old)

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
        """Write the lines recorded since the last flush. A write that fails (a full disk, a
        closed pipe) drops them, with one log line when it starts failing and one when it
        writes again: serving goes on."""
        if self.lines and self.fd >= 0:
            data = b"".join(self.lines)
            self.lines.clear()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError as exc:
                if not self.lost:
                    log.error("access log: cannot write to %s (%s); its lines are dropped "
                              "until it can", self.target, exc.strerror or exc)
                self.lost += data.count(b"\n")
                return
            if self.lost:
                log.warning("access log: writing to %s again; %d lines were dropped",
                            self.target, self.lost)
                self.lost = 0
