"""A small HTTP/1.1 server for the master's own endpoints (admin API, metrics).

Whole requests, one at a time per connection, answers from an async handler:
`handler(method, target, headers, body) -> (status, content_type, body bytes)`, or with a
fourth item: more header lines, as bytes ending in CRLF (the console's security headers).
"""

from __future__ import annotations

import asyncio
import logging

import httptools

from .responses import SERVER, status_line

log = logging.getLogger("fastgw")

MAX_BODY = 16 << 20


class ControlProtocol(asyncio.Protocol):
    def __init__(self, handler):
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.too_large = False
        self.answering: asyncio.Task | None = None  # one request at a time per connection

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            status = 413 if self.too_large else 400
            self._send(status, b"application/json", b'{"error_msg": "bad request"}', False)

    # Parser callbacks
    def on_message_begin(self):
        self.url, self.headers, self.body, self.size = b"", {}, [], 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.lower()] = value

    def on_body(self, chunk):
        self.size += len(chunk)
        if self.size > MAX_BODY:
            self.too_large = True
            raise ValueError("body too large")
        self.body.append(chunk)

    def on_message_complete(self):
        self.transport.pause_reading()  # one request at a time: answers stay in order
        self.answering = asyncio.get_running_loop().create_task(self._answer(
            self.parser.get_method().decode(), self.url.decode("latin-1"), self.headers,
            b"".join(self.body), self.parser.should_keep_alive()))

    async def _answer(self, method, target, headers, body, keep_alive):
        try:
            status, content_type, payload, *extra = await self.handler(method, target, headers,
                                                                       body)
        except Exception:  # a bug must not take the endpoint down with it
            log.exception("error answering %s %s", method, target.split("?")[0])
            status, content_type, payload = 500, b"application/json", b'{"error_msg": "error"}'
            extra = ()
        self._send(status, content_type, payload, keep_alive, *extra)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _send(self, status, content_type, body, keep_alive, extra=b""):
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(b"".join((
            status_line(status), SERVER, b"content-type: ", content_type, b"\r\n", extra,
            b"content-length: %d\r\n" % len(body),
            b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body)))
        if not keep_alive:
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None
