"""Status lines and the gateway's own responses, built as bytes once at import or load time."""

from __future__ import annotations

from http import HTTPStatus

import orjson

SERVER = b"server: fastgw\r\n"

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    if line is None:
        line = STATUS_LINES[code] = b"HTTP/1.1 %d \r\n" % code
    return line


class Response:
    """A complete response the gateway answers by itself, in both connection flavours."""

    __slots__ = ("status", "keep_alive", "close", "head_keep_alive", "head_close", "reason")

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (),
                 content_type: str = "application/json", reason: str | None = None):
        head = [status_line(status), SERVER, b"content-type: ", content_type.encode(), b"\r\n"]
        for name, value in headers:
            head += (name.encode(), b": ", value.encode(), b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        head = b"".join(head)
        self.status = status
        self.reason = reason  # why authentication failed, for the metrics
        # the same answer to a HEAD request: its head only (RFC 9110 9.3.2)
        self.head_keep_alive = head + b"connection: keep-alive\r\n\r\n"
        self.head_close = head + b"connection: close\r\n\r\n"
        self.keep_alive = self.head_keep_alive + body
        self.close = self.head_close + body


class Fault(Exception):
    """A request or response that breaks a rule; `response` is the answer (h11's
    RemoteProtocolError with its status hint). Raised where the rule is checked,
    answered in one place, `relay.Exchange.fail`."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def error(status: int, message: str | None = None) -> Response:
    """`{"error_msg": "..."}` with the status, e.g. error(404, "404 Route Not Found")."""
    if message is None:
        message = f"{status} {HTTPStatus(status).phrase}"
    return Response(status, orjson.dumps({"error_msg": message}))


BAD_REQUEST = error(400)
NOT_FOUND = error(404, "404 Route Not Found")
REQUEST_TIMEOUT = error(408)
PAYLOAD_TOO_LARGE = error(413)
HEADERS_TOO_LARGE = error(431)
INTERNAL_ERROR = error(500)
BAD_GATEWAY = error(502)
SERVICE_UNAVAILABLE = error(503)  # the node stayed at max_connections
GATEWAY_TIMEOUT = error(504)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
