"""SPEC section 5's faults table: each row, answered as written."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import free_port, service


def error_msg(body: bytes) -> str:
    return json.loads(body)["error_msg"]


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="content-length-with-te"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
                 id="bad-content-length"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                 id="negative-content-length"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
                 b"\r\nhello!", id="duplicate-content-length"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", id="space-in-name"),
    pytest.param(b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", id="control-char-in-url"),
    pytest.param(b"NOT-HTTP\r\n\r\n", id="garbage"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http11-without-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                 id="te-not-chunked-last"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\nhello\r\n0\r\n\r\n", id="bad-chunk-size"),
])
def test_malformed_request_gets_400_and_close(simple_gateway, request_bytes):
    with simple_gateway.raw() as c:
        c.send(request_bytes)
        status, headers, body = c.response()
        assert status == 400
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json"
        assert error_msg(body) == "400 Bad Request"
        assert c.closed()


def test_request_after_a_good_one_fails_in_order(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\n")
        assert c.response()[0] == 200
        assert c.response()[0] == 400
        assert c.closed()


def test_oversized_head_gets_431(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 40000 + b"\r\n\r\n")
        status, _, body = c.response()
        assert status == 431 and error_msg(body) == "431 Request Header Fields Too Large"


def test_oversized_url_gets_431(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 431


def test_endless_header_line_is_cut_off_with_431(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        try:
            for _ in range(200):
                c.send(b"y" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.response()[0] == 431


def test_body_over_limit_by_content_length_gets_413(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_MAX_BODY_BYTES": "1000"})
    with gw.raw() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
        status, headers, body = c.response()
        assert status == 413 and error_msg(body) == "413 Request Entity Too Large"
        assert headers["connection"] == "close"
    status, _, _ = gw.request("POST", "/upload", body=b"x" * 1000)
    assert status == 200


def test_chunked_body_over_limit_gets_413(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_MAX_BODY_BYTES": "1000"})
    with gw.raw() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"258\r\n" + b"x" * 600 + b"\r\n")
        c.send(b"258\r\n" + b"x" * 600 + b"\r\n0\r\n\r\n")
        status, _, _ = c.response()
        assert status == 413
        assert c.closed()


def test_slow_head_gets_408_and_close(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_HEADER_TIMEOUT": "0.5"})
    with gw.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finished
        started = time.monotonic()
        status, headers, body = c.response()
        assert status == 408 and error_msg(body) == "408 Request Timeout"
        assert 0.4 < time.monotonic() - started < 3
        assert c.closed()


def test_idle_keep_alive_connection_is_closed_after_timeout(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_KEEPALIVE_TIMEOUT": "0.5"})
    with gw.raw() as c:
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 200
        started = time.monotonic()
        assert c.closed()  # silently, no 408 for an idle connection
        assert 0.4 < time.monotonic() - started < 3


def test_refused_upstream_gets_502(gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway_factory({"services": [service(dead, [{"name": "a", "paths": ["/*"]}])]})
    status, headers, body = gw.request("GET", "/x")
    assert status == 502 and error_msg(body) == "502 Bad Gateway"
    assert headers["server"] == "fastgw"


def test_slow_upstream_gets_504(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}],
                                               upstream={"timeout": {"read": 0.5}})]})
    started = time.monotonic()
    status, _, body = gw.request("GET", "/slow?delay=3")
    assert status == 504 and error_msg(body) == "504 Gateway Timeout"
    assert time.monotonic() - started < 2.5
    status, _, _ = gw.request("GET", "/slow?delay=0.1")  # within the read time-out
    assert status == 200


def test_upstream_not_accepting_connections_times_out_with_504(gateway_factory):
    # A loopback listener whose accept queue is full: further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        gw = gateway_factory({"services": [service(f"http://127.0.0.1:{port}", [
            {"name": "a", "paths": ["/*"]}], upstream={"timeout": {"connect": 0.5}})]})
        started = time.monotonic()
        status, _, body = gw.request("GET", "/x")
        assert status == 504 and error_msg(body) == "504 Gateway Timeout"
        assert time.monotonic() - started < 3
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_upstream_breaking_off_mid_response_closes_client(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /broken?n=100000 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers = c.head()
        assert status.startswith(b"HTTP/1.1 200")
        assert int(headers["content-length"]) == 200000
        body = c.read_until_closed()
        assert len(body) < 200000  # cut short, never padded or passed off as whole


def test_upstream_breaking_off_a_read_until_close_answer_resets_the_client(simple_gateway):
    """An HTTP/1.0 client gets no framing, so a clean close would look like a whole body."""
    with simple_gateway.raw() as c:
        c.send(b"GET /broken?n=50000 HTTP/1.0\r\n\r\n")
        status, headers = c.head()
        assert status.startswith(b"HTTP/1.1 200")
        assert "content-length" in headers  # the upstream's promise is passed on
        assert len(c.read_until_closed()) < 100000


def test_a_read_until_close_answer_cut_by_a_reset_is_never_passed_off_as_whole(
        simple_gateway):
    """Only a clean close ends such a body: after a reset, the client got the last chunk
    (a whole message) on a connection kept open."""
    with simple_gateway.raw(timeout=5) as c:
        c.send(b"GET /reset?n=5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers = c.head()
        assert status.startswith(b"HTTP/1.1 200") and headers["transfer-encoding"] == "chunked"
        body = c.read_until_closed()  # cut off
    assert 5000 <= len(body) and not body.endswith(b"0\r\n\r\n")


def test_error_responses_are_json_with_server_header(simple_gateway, gateway_factory, upstream):
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "a", "paths": ["/only"]}], hosts=["api.test"])]})
    status, headers, body = gw.request("GET", "/elsewhere")
    assert status == 404
    assert json.loads(body) == {"error_msg": "404 Route Not Found"}
    assert headers["server"] == "fastgw" and headers["content-type"] == "application/json"


def test_client_leaving_mid_response_does_not_disturb_gateway(simple_gateway):
    s = socket.create_connection(("127.0.0.1", simple_gateway.port))
    s.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    status, _, _ = simple_gateway.request("GET", "/json")
    assert status == 200
