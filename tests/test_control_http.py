"""The master's own HTTP endpoints (admin API, metrics) as HTTP servers: order, time-outs,
limits, and requests they do not serve, on a real master."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from conftest import RawClient, free_port, service

KEY = "control-key-for-tests"


@pytest.fixture
def control_gw(upstream, gateway_factory):
    gw = gateway_factory(
        {"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}], name="api")]},
        env={"FASTGW_ADMIN_KEY": KEY, "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
             "FASTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
             "FASTGW_HEADER_TIMEOUT": "1", "FASTGW_KEEPALIVE_TIMEOUT": "1.5",
             "FASTGW_MAX_HEADER_BYTES": "4096"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.metrics_port = int(gw.env["FASTGW_METRICS_LISTEN"].rsplit(":", 1)[1])
    gw.wait_for_log("metrics on")
    return gw


def put_service(name: str, upstream_url: str, close: bool = False) -> bytes:
    body = json.dumps({"upstream": {"url": upstream_url},
                       "routes": [{"name": "all", "paths": [f"/{name}"]}]}).encode()
    return (b"PUT /admin/services/%s HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (name.encode(), KEY.encode(), len(body),
                                                 b"Connection: close\r\n" if close else b"",
                                                 body))


def get(path: bytes, close: bool = False, key: str | None = KEY) -> bytes:
    return (b"GET %s HTTP/1.1\r\nHost: a\r\n%s%s\r\n"
            % (path, b"X-API-KEY: %s\r\n" % key.encode() if key else b"",
               b"Connection: close\r\n" if close else b""))


def service_names(gw) -> list[str]:
    with RawClient(gw.admin_port, 10) as client:
        status, _, body = client.send(get(b"/admin/services")).response()
    assert status == 200
    return [s["name"] for s in json.loads(body)]


def test_pipelined_requests_are_answered_once_each_in_order(control_gw, upstream):
    """A pipeline of changes and reads: every one answered, in the order sent, each seeing
    the ones before it; one with Connection: close is the last one read."""
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(put_service("one", upstream.url) + get(b"/admin/services/one")
                    + get(b"/admin/nothing") + put_service("two", upstream.url)
                    + get(b"/admin/status", close=True)
                    + put_service("never", upstream.url))
        answers = [client.response() for _ in range(5)]
        assert client.closed()
    assert [status for status, _, _ in answers] == [200, 200, 404, 200, 200]
    assert json.loads(answers[0][2])["name"] == "one"
    assert json.loads(answers[1][2])["routes"][0]["paths"] == ["/one"]
    assert json.loads(answers[3][2])["name"] == "two"
    assert answers[4][1]["connection"] == "close"
    assert service_names(control_gw) == ["api", "one", "two"]  # nothing after the close


def test_a_change_pipelined_before_a_close_is_answered(control_gw, upstream):
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(put_service("three", upstream.url) + get(b"/admin/services", close=True))
        first, second = client.response(), client.response()
    assert first[0] == 200 and json.loads(first[2])["name"] == "three"
    assert second[0] == 200 and "three" in [s["name"] for s in json.loads(second[2])]


def test_a_request_without_the_key_is_answered_before_its_body(control_gw):
    """The key is checked on the head: a 16 MiB body is never waited for, nor held."""
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"PUT /admin/services/big HTTP/1.1\r\nHost: a\r\nX-API-KEY: wrong\r\n"
                    b"Content-Length: 16777216\r\n\r\n" + b"{" * 1000)
        status, headers, body = client.response()
        assert status == 401 and json.loads(body) == {"error_msg": "missing or wrong X-API-KEY"}
        assert headers["connection"] == "close" and client.closed()


def test_a_request_without_the_key_whose_body_came_keeps_the_connection(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"POST /admin/revocations HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                    b"\r\n{}" + get(b"/admin/status"))
        first, second = client.response(), client.response()
    assert first[0] == 401 and first[1]["connection"] == "keep-alive"
    assert second[0] == 200


def test_100_continue_is_sent_once_the_key_is_checked(control_gw, upstream):
    body = json.dumps({"upstream": {"url": upstream.url},
                       "routes": [{"name": "all", "paths": ["/four"]}]}).encode()
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"PUT /admin/services/four HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\n"
                    b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (KEY.encode(),
                                                                         len(body)))
        assert client.fp.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert client.fp.readline() == b"\r\n"
        status, _, answer = client.send(body).response()
    assert status == 200 and json.loads(answer)["name"] == "four"
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"PUT /admin/services/four HTTP/1.1\r\nHost: a\r\n"
                    b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, _ = client.response()  # a final answer, not 100
    assert status == 401 and headers["connection"] == "close"


@pytest.mark.parametrize("port", ["admin_port", "metrics_port"])
def test_a_stalled_head_or_body_is_answered_408_and_an_idle_connection_closed(control_gw,
                                                                              port):
    partials = [b"GET /admin/status HTTP/1.1\r\nHost: a\r\n"]
    if port == "admin_port":  # (the metrics take no body: 413 at once)
        partials.append(b"PUT /admin/services/x HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\n"
                        b"Content-Length: 10\r\n\r\n{\"a\"" % KEY.encode())
    port = getattr(control_gw, port)
    for partial in partials:
        with RawClient(port, 10) as client:
            started = time.monotonic()
            status, headers, _ = client.send(partial).response()
            assert status == 408 and headers["connection"] == "close" and client.closed()
            assert 0.9 < time.monotonic() - started < 5
    with RawClient(port, 10) as client:  # a slow head is timed from its first byte
        started = time.monotonic()
        client.send(b"GET /healthz HTTP/1.1\r\n")
        with pytest.raises(OSError):  # answered 408 and closed while it was still sending
            for _ in range(40):
                client.send(b"X: y\r\n")
                time.sleep(0.1)
        assert time.monotonic() - started < 3
    with RawClient(port, 10) as client:
        started = time.monotonic()
        assert client.closed()  # idle: closed with no answer
        assert 1.4 < time.monotonic() - started < 5


def test_a_head_too_large_is_431(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"GET /admin/status HTTP/1.1\r\nHost: a\r\n"
                    + b"X-Filler: %s\r\n" % (b"a" * 100) * 60)
        status, headers, _ = client.response()
    assert status == 431 and headers["connection"] == "close"


@pytest.mark.parametrize("head", [
    b"GET /admin/status HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\nConnection: upgrade\r\n"
    b"Upgrade: websocket\r\n\r\n" % KEY.encode(),
    b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nX-API-KEY: %s\r\n\r\n"
    % KEY.encode(),
    b"GET /admin/status HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\n"
    b"Connection: upgrade, close\r\nUpgrade: websocket\r\n\r\n" % KEY.encode(),
    b"CONNECT 127.0.0.1:22 HTTP/1.0\r\nX-API-KEY: %s\r\n\r\n" % KEY.encode(),
])
def test_a_request_to_switch_protocols_is_501_not_a_traceback(control_gw, head):
    with RawClient(control_gw.admin_port, 10) as client:
        status, headers, _ = client.send(head + b"GET /admin/status HTTP/1.1\r\n\r\n").response()
        assert status == 501 and headers["connection"] == "close" and client.closed()
    with RawClient(control_gw.admin_port, 10) as client:  # still serving
        assert client.send(get(b"/admin/status")).response()[0] == 200
    assert not [line for line in control_gw.log if "Traceback" in line]


def test_metrics_take_no_body_and_answer_pipelines_in_order(control_gw):
    with RawClient(control_gw.metrics_port, 10) as client:
        client.send(get(b"/healthz", key=None) + get(b"/metrics", key=None)
                    + get(b"/nothing", key=None) + get(b"/healthz", key=None))
        answers = [client.response() for _ in range(4)]
        assert [status for status, _, _ in answers] == [200, 200, 404, 200]
        assert b"fastgw_" in answers[1][2]
        status, headers, _ = client.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n"
                                         b"Content-Length: 100000000\r\n\r\nxx").response()
        assert status == 413 and headers["connection"] == "close"


def test_garbage_is_400(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:
        status, headers, _ = client.send(b"\x00\x01 nothing\r\n\r\n").response()
        assert status == 400 and client.closed()
    sock = socket.create_connection(("127.0.0.1", control_gw.admin_port), timeout=10)
    sock.close()  # a connection that sends nothing and goes
    with RawClient(control_gw.admin_port, 10) as client:
        assert client.send(get(b"/admin/status")).response()[0] == 200


def test_a_pipeline_deeper_than_what_is_read_ahead_is_answered_whole(control_gw):
    """Reading pauses while PIPELINE_DEPTH requests wait, and goes on as they are answered."""
    with RawClient(control_gw.metrics_port, 10) as client:
        client.send(get(b"/healthz", key=None) * 100 + get(b"/metrics", close=True, key=None))
        statuses = [client.response()[0] for _ in range(101)]
        assert statuses == [200] * 101 and client.closed()


def test_a_half_closed_client_gets_the_answers_to_what_it_sent(control_gw, upstream):
    """A change applied is answered, though the client shut its sending side after it."""
    for port, request in ((control_gw.admin_port, put_service("half", upstream.url)),
                          (control_gw.metrics_port, get(b"/metrics", key=None))):
        with RawClient(port, 10) as client:
            client.send(request).sock.shutdown(socket.SHUT_WR)
            status, headers, _ = client.response()
            assert status == 200 and headers["connection"] == "close" and client.closed()
    assert "half" in service_names(control_gw)


def test_100_continue_comes_when_the_answers_before_it_are_out(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(get(b"/admin/status") + b"POST /admin/revocations HTTP/1.1\r\nHost: a\r\n"
                    b"X-API-KEY: %s\r\nExpect: 100-continue\r\nContent-Length: 14\r\n\r\n"
                    % KEY.encode())
        assert client.response()[0] == 200
        assert client.fp.readline() == b"HTTP/1.1 100 Continue\r\n" and client.fp.readline() == b"\r\n"
        status, _, body = client.send(b'{"jti": "j1"} ').response()
    assert status == 201 and json.loads(body)["jti"] == "j1"


@pytest.mark.parametrize("port, request_", [
    ("metrics_port", b"GET /metrics HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\n"),
    ("admin_port", b"PUT /admin/config HTTP/1.1\r\nHost: a\r\nX-API-KEY: %s\r\n"
                   b"Expect: 100-continue\r\nContent-Length: 100000000\r\n\r\n" % KEY.encode()),
])
def test_a_body_too_large_by_its_length_is_413_without_100_continue(control_gw, port,
                                                                    request_):
    with RawClient(getattr(control_gw, port), 10) as client:
        status, headers, _ = client.send(request_).response()
        assert status == 413 and headers["connection"] == "close"


def test_versions_other_than_1_0_and_1_1_are_refused(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:  # no version: HTTP/0.9 to llhttp
        status, _, _ = client.send(b"GET /admin/status\r\nX-API-KEY: %s\r\n\r\n"
                                   % KEY.encode()).response()
        assert status == 400


def test_a_chunked_body_is_411(control_gw):
    """A body comes with its Content-Length here: no chunks, and no trailers (which changed
    the head that was admitted, and whose unfinished line grew without bound)."""
    with RawClient(control_gw.metrics_port, 10) as client:
        client.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\nX-T: " + b"a" * 65536)
        status, headers, _ = client.response()
        assert status == 411 and headers["connection"] == "close" and client.closed()


def test_a_field_line_that_never_ends_is_431_not_held(control_gw):
    """httptools holds an unfinished line: the bytes of a head are counted as they come."""
    with RawClient(control_gw.metrics_port, 10) as client:
        client.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(32):  # 1 MiB: more than one read (256 KiB at most) holds
            client.send(b"a" * 32768)
        status, headers, _ = client.response()
        assert status == 431 and headers["connection"] == "close"


def test_a_client_that_does_not_read_its_answers_is_not_answered_into_memory(control_gw):
    """Reading stops while answers wait to be written, and the connection is cut after the
    keep-alive time-out (1.5 s here): 5,000 answers of 13 KB were held, 65 MB."""
    master = control_gw.proc.pid

    def peak_mb() -> float:
        with open(f"/proc/{master}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

    before = peak_mb()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", control_gw.admin_port))
    sock.settimeout(10)
    with sock:
        sock.sendall(b"GET /ui/dom.js HTTP/1.1\r\nHost: a\r\n\r\n" * 5000)  # no key needed
        poll = select.poll()
        poll.register(sock, select.POLLERR | select.POLLHUP)  # not POLLIN: nothing is read
        started = time.monotonic()
        assert poll.poll(10_000), "the connection was not cut off"
        assert 1.4 < time.monotonic() - started < 9
    assert peak_mb() - before < 30


def test_a_large_read_before_a_head_does_not_count_towards_it(control_gw):
    """Its bytes were counted as the next head's: 431 for a valid request."""
    with RawClient(control_gw.metrics_port, 10) as client:
        client.send(get(b"/healthz", key=None) * 3000 + b"GET /healthz HTTP/1.1\r\n")
        assert [client.response()[0] for _ in range(3000)] == [200] * 3000
        assert client.send(b"Host: a\r\n\r\n").response()[0] == 200


def test_answers_written_before_a_close_reach_a_client_still_sending(control_gw, upstream):
    """The connection shuts its sending side and drops what still comes (a lingering
    close): a close with input unread resets it, which can lose the answers written."""
    with RawClient(control_gw.admin_port, 10) as client:
        ui = b"GET /ui/dom.js HTTP/1.1\r\nHost: a\r\n\r\n"  # 13 KB answers
        client.send(ui * 20 + put_service("lingered", upstream.url, close=True)
                    + ui * 30000)  # (1.2 MB: more than the socket buffers hold)
        answers = [client.response() for _ in range(21)]
        assert client.closed()
    assert [status for status, _, _ in answers] == [200] * 21
    assert json.loads(answers[20][2])["name"] == "lingered"


def test_head_is_answered_without_a_body(control_gw):
    with RawClient(control_gw.admin_port, 10) as client:
        client.send(b"HEAD /ui/ HTTP/1.1\r\nHost: a\r\n\r\n" + get(b"/admin/status"))
        status, headers = client.head()
        assert status.startswith(b"HTTP/1.1 200") and int(headers["content-length"]) > 0
        assert client.response()[0] == 200  # the next answer, not the HEAD's body


@pytest.mark.parametrize("head, expected", [
    (b"POST /ui/x HTTP/1.1\r\nHost: a\r\nContent-Length: 16777216\r\n\r\n", 405),
    (b"GET /ui/ HTTP/1.1\r\nHost: a\r\nContent-Length: 16777216\r\n\r\n", 413),
])
def test_the_console_takes_no_body_without_the_key(control_gw, head, expected):
    """Its pages need no key: a body sent there was held whole, then answered 405 (which
    names the methods the console takes: it named none)."""
    with RawClient(control_gw.admin_port, 10) as client:
        status, headers, _ = client.send(head).response()  # at once: no body sent
        assert status == expected and headers["connection"] == "close"
        assert headers.get("allow") == ("GET, HEAD" if expected == 405 else None)


@pytest.mark.parametrize("path", [b"/metrics", b"/healthz"])
@pytest.mark.parametrize("method, body", [(b"POST", b"x=1"), (b"DELETE", b""),
                                          (b"PUT", b"a" * 100000)])
def test_a_method_the_metrics_do_not_take_is_405_with_allow(control_gw, path, method, body):
    """RFC 9110 15.5.6 (POST /metrics with a body was 413, without one 404, as if the path
    did not exist): answered at its head, its body dropped unread."""
    with RawClient(control_gw.metrics_port, 10) as client:
        status, headers, answer = client.send(
            b"%s %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
            % (method, path, len(body), body)).response()
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert json.loads(answer) == {"error_msg": "method not allowed"}
    with RawClient(control_gw.metrics_port, 10) as client:  # a path it does not have: 404
        assert client.send(b"POST /nothing HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
                           b"x=1").response()[0] == 404
