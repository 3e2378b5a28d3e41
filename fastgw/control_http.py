"""A small HTTP/1.1 server for the master's own endpoints (admin API, metrics).

Requests are answered strictly in the order they came, one at a time per connection, by an
async handler: `handler(method, target, headers, body) -> (status, content_type, body
bytes)`, or with a fourth item: more header lines, as bytes ending in CRLF (the console's
security headers). Pipelined requests wait in `queue`; reading pauses while PIPELINE_DEPTH
of them (or MAX_BODY bytes of their bodies) wait, and while the client does not read its
answers. One with "Connection: close" is the last one read; a half-close ends reading, and
what was read whole is still answered.

`admit(method, target, headers)`, if given, sees each request as soon as its head is
parsed and may answer it at once (the admin API's key check): its body, if any, is then
read and dropped, never held, and the connection closes after the answer if the body had
not all come. A request admitted with "Expect: 100-continue" gets its `100 Continue` when
no answer is owed before it.

Limits, as on the proxy port: a head must be whole within FASTGW_HEADER_TIMEOUT of its
first byte and a body may go that long between reads (408); an idle connection, and one
whose client reads nothing of its answers, is closed after FASTGW_KEEPALIVE_TIMEOUT; a head
over FASTGW_MAX_HEADER_BYTES is 431, a body over `max_body` 413, one not framed by its
Content-Length 411; HTTP/1.0 and 1.1 only; no Upgrade or CONNECT (501). A connection ends
with a lingering close (_close).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import httptools

from .responses import SERVER, status_line

log = logging.getLogger("fastgw")

MAX_BODY = 16 << 20
PIPELINE_DEPTH = 16  # requests read ahead of the one being answered
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER = 2.0  # seconds a closing connection still reads (and drops) input after the answers

_JSON = b"application/json"
BAD_REQUEST = (400, _JSON, b'{"error_msg": "bad request"}')
TIMED_OUT = (408, _JSON, b'{"error_msg": "request timed out"}')
LENGTH_REQUIRED = (411, _JSON, b'{"error_msg": "a body needs a Content-Length here"}')
TOO_LARGE = (413, _JSON, b'{"error_msg": "request body too large"}')
HEAD_TOO_LARGE = (431, _JSON, b'{"error_msg": "request header fields too large"}')
NOT_IMPLEMENTED = (501, _JSON, b'{"error_msg": "not implemented"}')
VERSION_NOT_SUPPORTED = (505, _JSON, b'{"error_msg": "HTTP version not supported"}')
ERROR = (500, _JSON, b'{"error_msg": "error"}')


class _Request:
    """One request read from the connection, waiting for its answer."""

    __slots__ = ("method", "target", "headers", "body", "size", "keep_alive", "answer",
                 "complete", "continue_owed")

    def __init__(self, method: str, target: str, headers: dict, keep_alive: bool):
        self.method, self.target, self.headers = method, target, headers
        self.body: list[bytes] = []
        self.size = 0  # bytes held in `body`
        self.keep_alive = keep_alive
        self.answer: tuple | None = None  # an answer decided before the handler (admit, fault)
        self.complete = False  # the whole request has been read
        self.continue_owed = False  # "Expect: 100-continue", not answered yet

    @property
    def ready(self) -> bool:
        """Whether it can be answered now: read whole, or answered before its handler."""
        return self.complete or self.answer is not None


class _Stop(Exception):
    """Raised in a parser callback to stop the parser (after the last request, or for
    `fault`)."""


class ControlProtocol(asyncio.Protocol):
    # reasons to stop reading from the client, as bits
    PIPELINE, WRITE = 1, 2

    def __init__(self, handler, settings, admit=None, max_body: int = MAX_BODY):
        self.handler = handler
        self.admit = admit
        self.max_body = max_body
        self.header_timeout = settings.header_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.max_head = settings.max_header_bytes
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.queue: deque[_Request] = deque()
        self.queued_bytes = 0  # of the bodies held in `queue`
        self.current: _Request | None = None  # the request being read, once its head is
        self.answering: asyncio.Task | None = None
        self.reading = True  # False once nothing more is read (a close, a fault, the end)
        self.ended = False  # the last request was read whole ("Connection: close")
        self.shut = False  # the sending side is shut, the connection closing (_close)
        self.read_pauses = 0
        self.drained: asyncio.Future | None = None  # while the client reads too slowly
        self.in_head = False
        self.head_started = 0.0  # the loop's clock at a head's first byte
        self.head_size = 0  # of the head being parsed, as parsed
        self.head_read = 0  # bytes of the reads that ended in that head
        self.body_size = 0
        self.fault: tuple | None = None  # why a parser callback stopped the parser
        self.timer: asyncio.TimerHandle | None = None
        self.url, self.headers = b"", {}

    def connection_made(self, transport):
        self.transport = transport
        self._arm()

    def connection_lost(self, exc):
        self.transport = None
        self.reading = False
        self._disarm()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data):
        if not self.reading:
            return
        began_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops right after a request that switches protocols (Upgrade,
            # CONNECT): on_message_complete has refused it
            self.reading = False
        except httptools.HttpParserError:  # (which wraps _Stop)
            if not self.ended:
                self._refuse(self.fault or BAD_REQUEST)
        else:
            # httptools holds a field line until it ends: a read that began and ended in
            # the head was all head (a head begun in a read holds less than that read)
            if began_in_head and self.in_head:
                self.head_read += len(data)
                if self.head_read > self.max_head:
                    self._refuse(HEAD_TOO_LARGE)
        if len(self.queue) > PIPELINE_DEPTH or self.queued_bytes > MAX_BODY:
            self._pause(self.PIPELINE)
        self._kick()
        self._arm()

    def eof_received(self):
        """The client sent all it will: what it sent whole is answered, then the
        connection closes."""
        if self.current is not None:  # a body that can never be whole
            self._refuse(BAD_REQUEST)
        self.reading = False  # (a head cut short is dropped)
        if self.queue:
            self.queue[-1].keep_alive = False  # the last answer says so
        self._kick()
        self._arm()
        return bool(self.queue) or self.answering is not None  # kept open for the answers

    def pause_writing(self):
        self._pause(self.WRITE)

    def resume_writing(self):
        self._resume(self.WRITE)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # Parser callbacks

    def on_message_begin(self):
        self.url, self.headers = b"", {}
        self.in_head = True
        self.head_started = self.loop.time()
        self.head_size = self.head_read = self.body_size = 0

    def on_url(self, url):
        self.url += url
        self._count_head(len(url))

    def on_header(self, name, value):  # (no trailers: a chunked body is refused)
        self._count_head(len(name) + len(value) + 4)
        self.headers[name.lower()] = value

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.max_head:
            self.fault = HEAD_TOO_LARGE
            raise _Stop

    def on_headers_complete(self):
        self.in_head = False
        parser = self.parser
        headers = self.headers
        request = self.current = _Request(parser.get_method().decode(),
                                          self.url.decode("latin-1"), headers,
                                          parser.should_keep_alive())
        self.queue.append(request)
        version = parser.get_http_version()
        length = headers.get(b"content-length")  # (llhttp has checked it: digits)
        if version != "1.1" and version != "1.0":  # "GET /\r\n" is 0.9 to llhttp
            self.fault = BAD_REQUEST if version == "0.9" else VERSION_NOT_SUPPORTED
        elif b"transfer-encoding" in headers:  # a body by its Content-Length only: no
            self.fault = LENGTH_REQUIRED  # chunks, no trailers
        if self.fault is not None:  # answered so, and nothing more is read (_refuse)
            raise _Stop
        if self.admit is not None:  # (the connection stays open if its body comes)
            request.answer = self.admit(request.method, request.target, headers)
        # a body dropped is never too large: a request answered at its head (a POST to the
        # metrics, which take no body) gets that answer, not 413
        if request.answer is None and length is not None and int(length) > self.max_body:
            self.fault = TOO_LARGE
            raise _Stop
        if (request.answer is None and version == "1.1"
                and headers.get(b"expect", b"").lower() == b"100-continue"):
            request.continue_owed = True
            self._send_continue()

    def on_body(self, chunk):
        self.body_size += len(chunk)
        if self.body_size > self.max_body:
            self.fault = TOO_LARGE
            raise _Stop
        request = self.current
        if request.answer is None:  # else answered already: the body is dropped
            request.body.append(chunk)
            request.size += len(chunk)
            self.queued_bytes += len(chunk)

    def on_message_complete(self):
        request, self.current = self.current, None
        request.complete = True
        request.continue_owed = False
        if self.parser.should_upgrade():  # none is served here
            request.answer = request.answer or NOT_IMPLEMENTED
            request.keep_alive = False
        if not request.keep_alive:  # the last request read from this connection
            self.reading = False
            self.ended = True
            raise _Stop

    # Answering, in order

    def _refuse(self, answer: tuple) -> None:
        """Answer the request being read (or one that could not be) with `answer` (unless
        it has one already), after those before it, and read nothing more."""
        self.reading = False
        request, self.current = self.current, None
        if request is None:  # bytes that are no request, or a head cut short
            request = _Request("", "", {}, False)
            self.queue.append(request)
        request.answer = request.answer or answer
        request.keep_alive = False

    def _kick(self) -> None:
        """Start answering when the oldest request can be answered and none is."""
        queue = self.queue
        if self.answering is not None:
            return
        if queue and queue[0].ready:
            self.answering = self.loop.create_task(self._answer_in_turn())
        elif not queue and not self.reading:
            self._close()

    async def _answer_in_turn(self) -> None:
        queue = self.queue
        while queue and queue[0].ready:
            request = queue[0]
            answer = request.answer or await self._handle(request)
            if self.transport is None:  # the client went away meanwhile
                break
            if not request.complete:  # answered before its body came: that body is not read
                request.keep_alive = False
            queue.popleft()
            self.queued_bytes -= request.size
            self._send(answer, request.keep_alive, request.method == "HEAD")
            if not request.keep_alive:
                self.reading = False
                queue.clear()
                break
            if self.read_pauses & self.WRITE and not await self._drain():
                break
        self.answering = None
        if self.transport is None or self.transport.is_closing():
            return
        if not self.reading:
            if not queue:
                self._close()
            return
        if len(queue) <= PIPELINE_DEPTH and self.queued_bytes <= MAX_BODY:
            self._resume(self.PIPELINE)
        self._send_continue()
        self._arm()

    async def _handle(self, request: _Request) -> tuple:
        try:
            return await self.handler(request.method, request.target, request.headers,
                                      b"".join(request.body))
        except Exception:  # a bug must not take the endpoint down with it
            log.exception("error answering %s %s", request.method,
                          request.target.split("?")[0])
            return ERROR

    async def _drain(self) -> bool:
        """Wait for the client to read the answers written; False (and the connection
        aborted) when it reads nothing of them for the keep-alive time-out."""
        drained = self.drained = self.loop.create_future()
        try:
            while not drained.done():
                left = self.transport.get_write_buffer_size()
                await asyncio.wait((drained,), timeout=self.keepalive_timeout)
                if (not drained.done() and self.transport is not None
                        and self.transport.get_write_buffer_size() >= left):
                    self.transport.abort()
                    return False
        finally:
            self.drained = None
        return self.transport is not None

    def _send(self, answer: tuple, keep_alive: bool, head_only: bool = False) -> None:
        status, content_type, body, *extra = answer
        self.transport.write(b"".join((
            status_line(status), SERVER, b"content-type: ", content_type, b"\r\n", *extra,
            b"content-length: %d\r\n" % len(body),
            b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n",
            b"" if head_only else body)))
        if not keep_alive:
            self._close()

    def _send_continue(self) -> None:
        """The 100 Continue of the request being read, once it is the one to answer."""
        queue = self.queue
        if (queue and queue[0].continue_owed and self.answering is None
                and self.transport is not None):
            queue[0].continue_owed = False
            self.transport.write(CONTINUE)

    def _close(self) -> None:
        """End the connection without losing the answers written: the sending side is
        shut (after them) and what the client still sends is read and dropped until it
        closes, LINGER after it had them all at most. Closing at once, with input unread,
        would reset the connection, and the client could lose the answers (a lingering
        close, as nginx and Apache make)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.reading = False
        self._disarm()
        if self.shut or not transport.can_write_eof():  # (shut: the client closed too)
            transport.close()
            return
        self.shut = True
        transport.write_eof()
        if self.read_pauses:  # read what comes, to drop it
            self.read_pauses = 0
            transport.resume_reading()
        self._linger(transport, None)

    def _linger(self, transport, left_before: int | None) -> None:
        """Checked again LINGER after the answers are all out (then closed), or every
        keep-alive time-out while they are not (aborted if none was read meanwhile);
        `left_before`: the bytes unsent at the last check (None: the first)."""
        if transport.is_closing():
            return
        left = transport.get_write_buffer_size()
        if left_before is not None and left == left_before == 0:
            transport.close()  # the client had it all a while ago
        elif left_before is not None and left and left >= left_before:
            transport.abort()  # it read nothing for the keep-alive time-out
        else:
            self.loop.call_later(self.keepalive_timeout if left else LINGER, self._linger,
                                 transport, left)

    # Flow control and time-outs

    def _pause(self, reason: int) -> None:
        if not self.read_pauses and self.transport is not None:
            self.transport.pause_reading()
        self.read_pauses |= reason

    def _resume(self, reason: int) -> None:
        if self.read_pauses & reason:
            self.read_pauses &= ~reason
            if not self.read_pauses and self.transport is not None:
                self.transport.resume_reading()

    def _arm(self) -> None:
        """The time-out of the connection's state: none while an answer is made or
        written (_drain has its own), else a head's, a body's, or an idle connection's."""
        self._disarm()
        if self.answering is not None or self.transport is None or not self.reading:
            return
        if self.current is not None:
            seconds = self.header_timeout  # between reads of a body
        elif self.in_head:
            seconds = self.head_started + self.header_timeout - self.loop.time()
        elif self.queue:
            return  # answered next (_kick)
        else:
            seconds = self.keepalive_timeout
        self.timer = self.loop.call_later(max(seconds, 0), self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None or self.answering is not None:
            return
        if self.current is not None or self.in_head:  # a head or a body, stalled
            self._refuse(TIMED_OUT)
            self._kick()
        else:  # idle
            self.reading = False
            self._close()
