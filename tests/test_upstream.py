"""Upstream side: pass_host, balancing, retries, keep-alive pool rules, TLS."""

from __future__ import annotations

import collections
import datetime
import hashlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import free_port, service
from faulty_plugin import BUILD_MESSAGE
from test_admin import KEY, admin
from fastgw.config import ConfigError
from fastgw.config.schema import validate
from upstream import UpstreamServer


def seen(body: bytes) -> dict:
    return json.loads(body)


def host_seen(body: bytes) -> str:
    return dict(seen(body)["headers"])["host"]


@pytest.mark.parametrize("upstream_conf,expected", [
    ({"pass_host": "pass"}, "client.test"),
    ({"pass_host": "node"}, "127.0.0.1:{port}"),
    ({"pass_host": "rewrite", "upstream_host": "internal.test"}, "internal.test"),
])
def test_pass_host_modes(upstream, gateway_factory, upstream_conf, expected):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}],
                                               upstream=upstream_conf)]})
    _, _, body = gw.request("GET", "/h", host="client.test")
    assert host_seen(body) == expected.format(port=upstream.port)


def test_weighted_round_robin_spreads_by_weight(gateway_factory):
    ups = [UpstreamServer().start() for _ in range(2)]
    try:
        gw = gateway_factory({"services": [{"name": "s", "routes": [
            {"name": "a", "paths": ["/*"]}], "upstream": {"nodes": [
                {"host": "127.0.0.1", "port": ups[0].port, "weight": 3},
                {"host": "127.0.0.1", "port": ups[1].port, "weight": 1}]}}]})
        conn = gw.connect()
        for _ in range(40):
            conn.request("GET", "/rr", headers={"Host": "a"})
            assert conn.getresponse().read()
        assert (len(ups[0].requests), len(ups[1].requests)) == (30, 10)
    finally:
        for u in ups:
            u.stop()


def test_connect_failure_is_retried_on_the_next_node(upstream, gateway_factory):
    nodes = [{"host": "127.0.0.1", "port": free_port()},
             {"host": "127.0.0.1", "port": upstream.port}]
    gw = gateway_factory({"services": [{"name": "s", "upstream": {"nodes": nodes},
                                        "routes": [{"name": "a", "paths": ["/*"]}]}]})
    statuses = collections.Counter(gw.request("GET", "/retry")[0] for _ in range(6))
    assert statuses == {200: 6}


def test_a_retry_goes_to_a_node_not_tried_yet_whatever_the_weights(upstream, gateway_factory):
    """Smooth weighted round robin would pick the heavy dead node again for the retry;
    as nginx and APISIX do, a retry leaves out the nodes already tried."""
    nodes = [{"host": "127.0.0.1", "port": free_port(), "weight": 5},
             {"host": "127.0.0.1", "port": upstream.port, "weight": 1}]
    gw = gateway_factory({"services": [{"name": "s", "upstream": {"nodes": nodes},
                                        "routes": [{"name": "a", "paths": ["/*"]}]}]})
    conn = gw.connect()
    statuses = collections.Counter()
    for _ in range(30):
        conn.request("GET", "/retry", headers={"Host": "a"})
        response = conn.getresponse()
        response.read()
        statuses[response.status] += 1
    assert statuses == {200: 30}


def test_no_retry_when_retries_is_zero(upstream, gateway_factory):
    nodes = [{"host": "127.0.0.1", "port": free_port()},
             {"host": "127.0.0.1", "port": upstream.port}]
    gw = gateway_factory({"services": [{"name": "s", "upstream": {"nodes": nodes, "retries": 0},
                                        "routes": [{"name": "a", "paths": ["/*"]}]}]})
    statuses = collections.Counter(gw.request("GET", "/retry")[0] for _ in range(6))
    assert statuses == {200: 3, 502: 3}


def test_request_sent_is_never_retried(gateway_factory):
    """A POST whose upstream broke off after receiving it is answered 502, not replayed."""
    ups = [UpstreamServer().start() for _ in range(2)]
    try:
        nodes = [{"host": "127.0.0.1", "port": u.port} for u in ups]
        gw = gateway_factory({"services": [{"name": "s", "upstream": {"nodes": nodes},
                                            "routes": [{"name": "a", "paths": ["/*"]}]}]})
        status, _, body = gw.request("POST", "/drop", body=b"once")
        assert status == 502 and json.loads(body) == {"error_msg": "502 Bad Gateway"}
        assert len(ups[0].requests) + len(ups[1].requests) == 1  # the other node never saw it
    finally:
        for u in ups:
            u.stop()


def test_pool_requests_limit_rotates_connections(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}],
                                               upstream={"keepalive_pool": {"requests": 3}})]})
    conn = gw.connect()
    conns = []
    for _ in range(9):
        conn.request("GET", "/p", headers={"Host": "a"})
        conns.append(seen(conn.getresponse().read())["conn"])
    assert len(set(conns)) == 3 and conns[0] == conns[2] != conns[3]


def test_pool_size_zero_disables_upstream_keep_alive(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}],
                                               upstream={"keepalive_pool": {"size": 0}})]})
    conn = gw.connect()
    conns = set()
    for _ in range(4):
        conn.request("GET", "/p", headers={"Host": "a"})
        body = conn.getresponse().read()
        conns.add(seen(body)["conn"])
        assert dict(seen(body)["headers"])["connection"] == "close"
    assert len(conns) == 4


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, str(cert_file)


def test_https_upstream_verified_against_a_ca_file(tmp_path, gateway_factory):
    ctx, ca_file = _self_signed(tmp_path)
    up = UpstreamServer(ssl_context=ctx).start()
    try:
        gw = gateway_factory({"services": [
            service(up.url, [{"name": "a", "paths": ["/*"]}], name="trusted", hosts=["t.test"],
                    upstream={"tls": {"ca_file": ca_file}}),
            service(up.url, [{"name": "a", "paths": ["/*"]}], name="untrusted",
                    hosts=["u.test"]),
            service(up.url, [{"name": "a", "paths": ["/*"]}], name="unverified",
                    hosts=["n.test"], upstream={"tls": {"verify": False}}),
        ]})
        status, _, body = gw.request("GET", "/tls", host="t.test")
        assert status == 200 and seen(body)["target"] == "/tls"
        assert gw.request("GET", "/tls", host="u.test")[0] == 502  # self-signed, verify on
        assert gw.request("GET", "/tls", host="n.test")[0] == 200
    finally:
        up.stop()


class RecordCounter:
    """A TCP relay in front of a TLS server, for one connection, that keeps the content type
    of each TLS record sent to the server."""

    def __init__(self, server_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)  # no thread left waiting if the gateway never connects
        self.port = self.listener.getsockname()[1]
        self.server_port = server_port
        self.records: list[int] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.listener:
            client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.server_port))
        threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()
        self._pipe(client, server, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                pending += data if count else b""
                while len(pending) >= 5 and len(pending) >= 5 + (
                        size := int.from_bytes(pending[3:5], "big")):
                    with self.changed:
                        self.records.append(pending[0])
                        self.changed.notify_all()
                    pending = pending[5 + size:]
        except OSError:
            pass
        finally:
            source.close()
            sink.close()

    def wait_for(self, kind: int, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.records.count(kind) >= count, timeout=5)


def test_a_chunk_relayed_to_an_https_upstream_goes_in_one_tls_record(tmp_path,
                                                                      gateway_factory):
    """Re-chunked towards the upstream, a chunk's size line, data and CRLF are written at
    once: uvloop's TLS transport would make a record of each."""
    ctx, _ = _self_signed(tmp_path)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # where only application data is type 23
    up = UpstreamServer(ssl_context=ctx).start()
    relay = RecordCounter(int(up.url.rsplit(":", 1)[1]))
    try:
        gw = gateway_factory({"services": [service(
            f"https://127.0.0.1:{relay.port}", [{"name": "a", "paths": ["/*"]}],
            upstream={"tls": {"verify": False}})]})
        with gw.raw() as c:
            c.send(b"POST /body HTTP/1.1\r\nHost: api.test\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            relay.wait_for(23, 1)  # the head
            c.send(b"5\r\nhello\r\n")
            relay.wait_for(23, 2)  # the chunk
            c.send(b"0\r\n\r\n")
            status, _, body = c.response()
        assert status == 200 and seen(body)["size"] == 5
        assert seen(body)["sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert relay.records.count(23) == 3  # the head, the chunk, the last chunk
    finally:
        up.stop()


# ---------------------------------------------------------------- pools: limits and lifecycle

@pytest.fixture
def own_upstream():
    """An upstream for one test, whose connections and held requests it can watch."""
    server = UpstreamServer().start()
    yield server
    server.stop()


def _capped(capped_up, other_up, **upstream) -> dict:
    """Host capped.test to `capped_up` with `upstream` settings, other.test to `other_up`."""
    return {"services": [
        service(capped_up.url, [{"name": "a", "paths": ["/*"]}], name="capped",
                hosts=["capped.test"], upstream=upstream),
        service(other_up.url, [{"name": "a", "paths": ["/*"]}], name="other",
                hosts=["other.test"])]}


def _send(gw, path: str, host: str = "capped.test"):
    return gw.raw().send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def _barrier(gw) -> None:
    """A request answered on a connection of its own, through another node: the one worker
    has by then read every request sent before it (loopback delivers at send, and each
    turn of the worker's loop reads every socket that is ready)."""
    assert gw.request("GET", "/barrier", host="other.test")[0] == 200


def _queue(gw, path: str):
    """A request for capped.test, read by the gateway (and queued) when this returns."""
    client = _send(gw, path)
    _barrier(gw)
    return client


def _full_node(gateway_factory, capped_up, other_up, hold="/hold?id=1", **upstream):
    """A gateway whose capped.test node allows one connection, busy with a held request:
    (gateway, the client of the held request)."""
    gw = gateway_factory(_capped(capped_up, other_up, max_connections=1, **upstream))
    first = _send(gw, hold)
    assert capped_up.wait_until(lambda: len(capped_up.requests) == 1)
    return gw, first


def _targets(up) -> list[str]:
    return [r["target"] for r in up.requests]


def test_full_node_hands_a_released_connection_to_the_first_waiter(
        upstream, own_upstream, gateway_factory):
    gw, first = _full_node(gateway_factory, own_upstream, upstream)
    second = _queue(gw, "/second")
    third = _queue(gw, "/third")
    own_upstream.release("1")
    conns = [seen(client.response()[2])["conn"] for client in (first, second, third)]
    assert _targets(own_upstream) == ["/hold?id=1", "/second", "/third"]  # in arrival order
    assert own_upstream.connections == 1 and len(set(conns)) == 1


def test_full_node_lets_the_first_waiter_open_a_connection_when_one_closes(
        upstream, own_upstream, gateway_factory):
    gw, first = _full_node(gateway_factory, own_upstream, upstream,
                           hold="/hold?id=1&close=1")  # the upstream closes after answering
    second = _queue(gw, "/second")
    own_upstream.release("1")
    assert first.response()[0] == 200
    status, _, body = second.response()
    assert status == 200 and seen(body)["target"] == "/second"
    assert own_upstream.connections == 2 and own_upstream.max_open == 1


def test_a_waiter_is_never_handed_a_connection_a_pool_of_size_zero_closes(
        upstream, own_upstream, gateway_factory):
    """A pool that keeps no connection sends "connection: close": the connection a request
    ends on is closing, so a request waiting for the node gets a new one, not that one."""
    gw, first = _full_node(gateway_factory, own_upstream, upstream, keepalive_pool={"size": 0})
    waiting = [_queue(gw, f"/waiting?n={n}") for n in range(3)]
    own_upstream.release("1")
    assert first.response()[0] == 200
    for client in waiting:
        status, _, body = client.response()
        assert status == 200, body
    assert own_upstream.max_open == 1 and own_upstream.connections == 4


def test_waiter_whose_client_left_is_removed(upstream, own_upstream, gateway_factory):
    gw, first = _full_node(gateway_factory, own_upstream, upstream)
    gone = _queue(gw, "/gone")
    gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()  # a reset: the client is gone
    _barrier(gw)
    third = _queue(gw, "/third")
    own_upstream.release("1")
    assert first.response()[0] == 200
    status, _, body = third.response()
    assert status == 200 and seen(body)["target"] == "/third"
    assert _targets(own_upstream) == ["/hold?id=1", "/third"]  # /gone never went upstream
    assert own_upstream.connections == 1


def test_waiter_past_the_connect_timeout_gets_503(upstream, own_upstream, gateway_factory):
    gw, first = _full_node(gateway_factory, own_upstream, upstream,
                           timeout={"connect": 0.3, "send": 10, "read": 10})
    started = time.monotonic()
    status, headers, body = gw.request("GET", "/late", host="capped.test")
    waited = time.monotonic() - started
    assert 0.3 <= waited < 1.5, waited  # it waited in line for the connect time-out
    assert status == 503 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error_msg": "503 Service Unavailable"}
    own_upstream.release("1")
    assert first.response()[0] == 200
    assert _targets(own_upstream) == ["/hold?id=1"] and own_upstream.connections == 1


def test_connection_released_into_a_pruned_pool_is_closed(upstream, own_upstream,
                                                          gateway_factory):
    gw = gateway_factory({"services": [service(own_upstream.url, [
        {"name": "a", "paths": ["/*"]}])]})
    first = _send(gw, "/hold?id=1", host="api.test")
    assert own_upstream.wait_until(lambda: len(own_upstream.requests) == 1)
    gw.write_config({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]})
    gw.signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded")  # no configuration names own_upstream now
    own_upstream.release("1")
    assert first.response()[0] == 200  # the exchange in flight finishes on its connection
    assert own_upstream.wait_until(lambda: own_upstream.closed == 1)  # and then it is closed


def test_a_configuration_that_fails_to_compile_changes_nothing(upstream, gateway_factory):
    def config(size: int, broken: bool) -> dict:
        routes = [{"name": "a", "paths": ["/*"]}]
        if broken:  # its plugin raises while a worker compiles the configuration
            routes.append({"name": "b", "paths": ["/b"],
                           "plugins": {"explode": {"at_build": True}}})
        return {"services": [service(upstream.url, routes,
                                     upstream={"keepalive_pool": {"size": size}})]}

    def serves_the_first() -> None:
        for _ in range(6):  # on either worker
            status, _, body = gw.request("GET", "/b", host="a")  # the old routes
            # the pool kept its settings: size 0 would send "connection: close" upstream
            assert status == 200 and "connection" not in dict(seen(body)["headers"])

    gw = gateway_factory(config(320, False), plugins=("faulty_plugin",), env={
        "FASTGW_WORKERS": "2", "FASTGW_ADMIN_KEY": KEY,
        "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.wait_for_log("admin API on")
    serves_the_first()
    start = len(gw.log)
    gw.write_config(config(0, True))
    gw.signal(signal.SIGHUP)
    gw.wait_for_log("revision 2 is not in force: 2 of 2 workers could not compile it",
                    start=start)
    assert any(BUILD_MESSAGE in line for line in gw.log[start:]), "".join(gw.log[start:])
    assert not any("configuration reloaded" in line for line in gw.log[start:])
    serves_the_first()
    # what the admin API reads and edits is what is in force, not what could not be
    assert [r["name"] for r in admin(gw, "GET", "/admin/services/svc")[1]["routes"]] == ["a"]
    status, body = admin(gw, "PUT", "/admin/services/svc", config(0, True)["services"][0])
    assert status == 500 and body["error_msg"].endswith("the configuration in force stays")
    assert [r["name"] for r in admin(gw, "GET", "/admin/services/svc")[1]["routes"]] == ["a"]
    serves_the_first()
    # workers started now get what is in force, not what could not be compiled (which
    # they would exit on, again and again): with both replaced, only they can answer
    for victim in gw.worker_pids():
        start = len(gw.log)
        os.kill(victim, signal.SIGKILL)
        gw.wait_for_log("starting a new one", start=start)
    serves_the_first()
    start = len(gw.log)
    gw.write_config(config(0, False))
    gw.signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded", start=start)
    status, _, body = gw.request("GET", "/p", host="a")  # the workers still take changes
    assert status == 200 and dict(seen(body)["headers"])["connection"] == "close"


def test_a_first_configuration_that_fails_to_compile_stops_the_start(upstream,
                                                                     gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "b", "paths": ["/b"], "plugins": {"explode": {"at_build": True}}}])]},
        plugins=("faulty_plugin",), start=False)
    result = subprocess.run([sys.executable, "-m", "fastgw"], env=gw.env, text=True,
                            capture_output=True, timeout=30, cwd=gw.config_path.parent)
    assert result.returncode == 2, result.stderr
    assert BUILD_MESSAGE in result.stderr  # the worker's traceback
    master_lines = [line for line in result.stderr.splitlines() if "[worker" not in line
                    and not line.startswith((" ", "Traceback", "RuntimeError"))]
    assert master_lines[-1].startswith("fastgw: the configuration could not be compiled")
    assert not any("ERROR" in line or "serving on" in line for line in master_lines), \
        result.stderr


def test_reload_raising_the_limit_lets_those_waiting_in(upstream, own_upstream,
                                                        gateway_factory):
    gw, first = _full_node(gateway_factory, own_upstream, upstream,
                           timeout={"connect": 5, "send": 10, "read": 10})
    second = _queue(gw, "/second")
    gw.write_config(_capped(own_upstream, upstream, max_connections=5,
                            timeout={"connect": 5, "send": 10, "read": 10}))
    started = time.monotonic()
    gw.signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded")
    status, _, body = second.response()  # while the first still holds its connection
    assert status == 200 and seen(body)["target"] == "/second"
    assert time.monotonic() - started < 3  # well before the 5 s connect time-out
    assert own_upstream.max_open == 2
    own_upstream.release("1")
    assert first.response()[0] == 200


def _read_timeout(gw, up):
    assert gw.request("GET", "/slow?delay=3", host="capped.test")[0] == 504


def _dropped_unanswered(gw, up):
    assert gw.request("GET", "/drop", host="capped.test")[0] == 502


def _broken_mid_response(gw, up):
    with gw.raw() as c:
        c.send(b"GET /broken?n=1000 HTTP/1.1\r\nHost: capped.test\r\n\r\n")
        assert c.head()[0].startswith(b"HTTP/1.1 200")
        assert len(c.read_until_closed()) < 2000


def _read_until_close(gw, up):
    status, _, body = gw.request("GET", "/bytes?n=10&close=1", host="capped.test")
    assert status == 200 and len(body) == 10


def _client_gone_while_upstream(gw, up):
    key = str(len(up.requests))
    client = _send(gw, f"/hold?id={key}")
    assert up.wait_until(lambda: any(r["target"] == f"/hold?id={key}" for r in up.requests))
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset
    up.release(key)


def _client_gone_mid_response(gw, up):
    client = _send(gw, "/bytes?n=20000000")
    assert client.head()[0].startswith(b"HTTP/1.1 200")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("failure", [_read_timeout, _dropped_unanswered, _broken_mid_response,
                                     _read_until_close, _client_gone_while_upstream,
                                     _client_gone_mid_response])
def test_a_node_at_max_connections_gets_its_connection_back_however_an_exchange_ends(
        upstream, own_upstream, gateway_factory, failure):
    """Each way an exchange can end without handing its connection back to the idle
    stack still frees its place: a request after it is answered at once, never left
    waiting in line for a connection nobody holds (then 503)."""
    gw = gateway_factory(_capped(own_upstream, upstream, max_connections=1, retries=0,
                                 timeout={"connect": 2, "send": 2, "read": 0.5}))
    for _ in range(2):
        failure(gw, own_upstream)
        started = time.monotonic()
        status, _, body = gw.request("GET", "/after", host="capped.test")
        assert status == 200 and seen(body)["target"] == "/after"
        assert time.monotonic() - started < 1
    assert own_upstream.max_open == 1


def test_a_node_at_max_connections_that_refuses_connections_is_answered_502_each_time(
        upstream, gateway_factory):
    nobody = types.SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    gw = gateway_factory(_capped(nobody, upstream, max_connections=1, retries=0,
                                 timeout={"connect": 2, "send": 2, "read": 2}))
    for _ in range(3):  # a failed connect gives its place back too
        started = time.monotonic()
        assert gw.request("GET", "/x", host="capped.test")[0] == 502
        assert time.monotonic() - started < 1


def test_one_node_however_its_name_is_spelled_has_one_pool():
    conf = {"services": [
        service("http://a.example", [{"name": "a", "paths": ["/a"]}], name="one",
                upstream={"max_connections": 1}),
        service("http://b", [{"name": "a", "paths": ["/b"]}], name="two",
                upstream={"url": None, "nodes": [{"host": "A.Example", "port": 80}],
                          "max_connections": 2})]}
    with pytest.raises(ConfigError) as info:
        validate(conf)
    assert [path for path, _ in info.value.errors] == ["services[1].upstream.max_connections"]


# SPEC 3: "retries: ... only before any byte was sent upstream"; SPEC 5: "upstream did not
# answer in time | 504". A GET that timed out on a pooled connection had reached its node
# (which is working on it): it is not sent to another node as well (it was, with retries: 1,
# though the same GET on a fresh connection was not).
def test_a_request_that_timed_out_on_a_pooled_connection_is_not_sent_again(gateway_factory):
    ups = [UpstreamServer().start() for _ in range(2)]
    try:
        gw = gateway_factory({"services": [{
            "name": "svc", "routes": [{"name": "all", "paths": ["/*"]}],
            "upstream": {"nodes": [{"host": "127.0.0.1", "port": u.port} for u in ups],
                         "retries": 1, "timeout": {"connect": 2, "send": 2, "read": 1}}}]})
        with gw.raw(10) as c:
            for _ in ups:  # one pooled connection to each node
                c.send(b"GET /warm-up HTTP/1.1\r\nHost: a\r\n\r\n")
                assert c.response()[0] == 200
            assert [u.connections for u in ups] == [1, 1]
            c.send(b"GET /slow?delay=3 HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = c.response()
        slow = [r for u in ups for r in u.requests if r["target"].startswith("/slow")]
        assert status == 504, (status, body)
        assert len(slow) == 1, [(r["target"], r["conn"]) for r in slow]
    finally:
        for u in ups:
            u.stop()
