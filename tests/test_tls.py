"""HTTPS listeners: termination, protocol versions, failed handshakes, certificate rotation."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certs import CertificateAuthority, encrypted, other_key, serial_of, weak_key
from conftest import Gateway, free_port, service
from fastgw import tls
from fastgw.settings import SettingError, Settings
from upstream import pattern_sha256

ROUTES = [{"name": "all", "paths": ["/*"]}]


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority()


def tls_env(folder, pair, **extra) -> dict:
    """Settings for a gateway with one HTTPS listener serving `pair` (written to `folder`)."""
    cert, key = pair.write(folder)
    return {"FASTGW_TLS_LISTEN": f"127.0.0.1:{free_port()}", "FASTGW_TLS_CERT": str(cert),
            "FASTGW_TLS_KEY": str(key), "FASTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            **extra}


def tls_gateway(make, upstream, folder, ca, **extra) -> Gateway:
    """A started gateway with plain and HTTPS listeners; `make` is gateway_factory."""
    pair = ca.issue()
    env = tls_env(folder, pair, **extra)
    gw = make({"services": [service(upstream.url, ROUTES)]}, env=env)
    return _describe(gw, env, pair, ca.write(folder))


def _describe(gw: Gateway, env: dict, pair, ca_path) -> Gateway:
    gw.tls_port = int(env["FASTGW_TLS_LISTEN"].rsplit(":", 1)[1])
    gw.metrics_port = int(env["FASTGW_METRICS_LISTEN"].rsplit(":", 1)[1])
    gw.cert_path, gw.key_path = env["FASTGW_TLS_CERT"], env["FASTGW_TLS_KEY"]
    gw.pair, gw.ca_path = pair, ca_path
    return gw


@pytest.fixture(scope="module")
def tls_gw(upstream, ca, tmp_path_factory):
    """One gateway for the tests that only read (access log on, to see what reached it)."""
    folder = tmp_path_factory.mktemp("tls")
    pair = ca.issue()
    env = tls_env(folder, pair, FASTGW_ACCESS_LOG="stdout")
    gw = Gateway(folder, {"services": [service(upstream.url, ROUTES)]}, env).start()
    yield _describe(gw, env, pair, ca.write(folder))
    gw.stop()


# ---------------------------------------------------------------- clients

def client_context(gw, version: ssl.TLSVersion | None = None,
                   alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(gw.ca_path))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(list(alpn))
    return context


def legacy_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks only an old protocol version (OpenSSL allows it at level 0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    return context


def https(gw, context: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", gw.tls_port, timeout=10,
                                       context=context or client_context(gw))
    conn.connect()
    return conn


def call(conn, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, headers, body) of one request on `conn`."""
    conn.request(method, path, body=body, headers={"Host": "api.test", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def served_serial(gw, server_hostname: str | None = None) -> int:
    """The serial of the certificate a new handshake gets (SNI when a name is given)."""
    context = client_context(gw)
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname or "127.0.0.1") as sock:
            return serial_of(sock.getpeercert(binary_form=True))


def handshake_failures(gw) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", gw.metrics_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fastgw_tls_handshake_failures_total":
                return sample.value
    raise AssertionError("no fastgw_tls_handshake_failures_total in /metrics")


def wait_for_failures(gw, expected: float, timeout: float = 5) -> None:
    """The counter moves in the worker once the failed connection is gone: poll it."""
    deadline = time.monotonic() + timeout
    while (seen := handshake_failures(gw)) != expected:
        assert time.monotonic() < deadline, f"{seen} handshake failures, expected {expected}"
        time.sleep(0.05)


def forwarded_proto(body: bytes) -> list[str]:
    return [v for n, v in json.loads(body)["headers"] if n == "x-forwarded-proto"]


# ---------------------------------------------------------------- proxying

def test_https_request_is_proxied_with_x_forwarded_proto_https(tls_gw):
    conn = https(tls_gw)
    status, headers, body = call(conn, "GET", "/echo", headers={"X-Forwarded-Proto": "http"})
    assert status == 200 and headers["server"] == "fastgw"
    assert forwarded_proto(body) == ["https"]  # the client's own value is replaced
    assert json.loads(body)["target"] == "/echo"
    status, _, plain = tls_gw.request("GET", "/echo")
    assert status == 200 and forwarded_proto(plain) == ["http"]


def _whole(answer: bytes) -> bool:
    """Whether `answer` holds a response head and the whole body its Content-Length gives."""
    head, end, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(end) and length is not None and len(body) >= int(length.group(1))


def test_an_answer_read_in_one_piece_goes_out_in_one_tls_record(tls_gw):
    """Its head and body are written at once: uvloop's TLS transport would make a record of
    each part (three for a small answer)."""
    context = client_context(tls_gw, ssl.TLSVersion.TLSv1_2)  # 1.3 sends tickets as records
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", tls_gw.tls_port), timeout=10) as raw:
        while True:
            try:
                tls_client.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        tls_client.write(b"GET /json HTTP/1.1\r\nHost: api.test\r\n\r\n")
        raw.sendall(outgoing.read())
        received, answer = b"", b""
        while not _whole(answer):
            data = raw.recv(65536)
            assert data, "the connection closed before the whole answer"
            received += data
            incoming.write(data)
            try:
                while True:  # a read gives one record's plaintext
                    answer += tls_client.read(65536)
            except ssl.SSLWantReadError:
                pass
    assert answer.startswith(b"HTTP/1.1 200 ")
    records = []  # (content type, length) of each record, from the 5-byte record headers
    while received:
        records.append((received[0], int.from_bytes(received[3:5], "big")))
        received = received[5 + records[-1][1]:]
    assert [kind for kind, _ in records] == [23]  # application data, once


def test_bodies_stream_both_ways_over_tls_on_one_connection(tls_gw):
    conn = https(tls_gw)
    upload = bytes(range(256)) * 12288  # 3 MiB
    status, _, body = call(conn, "POST", "/upload", body=upload)
    seen = json.loads(body)
    assert status == 200 and seen["size"] == len(upload)
    assert seen["sha256"] == hashlib.sha256(upload).hexdigest()
    for query in ("n=3000000", "n=3000000&chunked=1"):
        status, _, body = call(conn, "GET", f"/bytes?{query}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == pattern_sha256(3000000)


@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(tls_gw, version, name):
    conn = https(tls_gw, client_context(tls_gw, version))
    assert conn.sock.version() == name
    assert call(conn, "GET", "/json")[0] == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused_and_counted(tls_gw, version):
    before = handshake_failures(tls_gw)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        https(tls_gw, legacy_context(version))
    wait_for_failures(tls_gw, before + 1)


def test_tls_1_2_takes_forward_secret_aead_suites_only(tls_gw):
    """Mozilla's intermediate profile: a client offering only CBC suites is refused (they
    were taken: Python's default list has them); a GCM or ChaCha20 one is served."""
    for cipher in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
                   "ECDHE-ECDSA-AES128-SHA"):
        context = client_context(tls_gw, ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(cipher)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            https(tls_gw, context)
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        context = client_context(tls_gw, ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(cipher)
        conn = https(tls_gw, context)
        assert conn.sock.cipher()[0] == cipher and call(conn, "GET", "/json")[0] == 200


def test_alpn_selects_http_1_1(tls_gw):
    conn = https(tls_gw, client_context(tls_gw, alpn=("h2", "http/1.1")))
    assert conn.sock.selected_alpn_protocol() == "http/1.1"
    assert call(conn, "GET", "/json")[0] == 200


def test_curl_speaks_https_with_and_without_sni(tls_gw):
    port = tls_gw.tls_port
    for url, extra in ((f"https://127.0.0.1:{port}/echo", []),  # an address: no SNI sent
                       (f"https://localhost:{port}/echo", ["--resolve",
                                                           f"localhost:{port}:127.0.0.1"])):
        out = subprocess.run(["curl", "-sS", "--cacert", str(tls_gw.ca_path), *extra,
                              "-H", "Host: api.test", "-w", "\n%{http_code} %{http_version}",
                              url], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        body, _, summary = out.stdout.rpartition("\n")
        assert summary == "200 1.1" and forwarded_proto(body.encode()) == ["https"]


# ---------------------------------------------------------------- failed handshakes

def _client_hello() -> bytes:
    """The first flight of a real TLS 1.3 client."""
    context = ssl.create_default_context()
    hello = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return hello.read()


def _answer(port: int, data: bytes) -> bytes:
    """Send raw bytes to the HTTPS port and read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def test_failed_handshakes_are_counted_and_never_reach_the_request_path(tls_gw, upstream):
    before = handshake_failures(tls_gw)
    attempts = {
        "plain HTTP": b"GET /plain-to-the-tls-port HTTP/1.1\r\nHost: api.test\r\n\r\n",
        "garbage": b"\x16\x03\x01\x00\x05hello" + os.urandom(64),
        "closed mid-handshake": _client_hello()[:40],
        "closed right after the hello": _client_hello(),
        "closed at once": b"",
    }
    for name, data in attempts.items():
        assert not _answer(tls_gw.tls_port, data).startswith(b"HTTP/"), name
    wait_for_failures(tls_gw, before + len(attempts))
    # The plain listener is untouched, and only its request reached the log and the upstream.
    status, _, _ = tls_gw.request("GET", "/after-the-failures")
    assert status == 200
    tls_gw.wait_for_log("/after-the-failures")  # the access log line of the good request
    assert not any("/plain-to-the-tls-port" in line for line in tls_gw.log)
    assert not any(r["target"] == "/plain-to-the-tls-port" for r in upstream.requests)


def test_a_handshake_that_never_comes_is_cut_after_the_header_timeout(upstream, gateway_factory,
                                                                      tmp_path, ca):
    gw = tls_gateway(gateway_factory, upstream, tmp_path, ca, FASTGW_HEADER_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10) as sock:
        began = time.monotonic()
        assert sock.recv(100) == b""  # closed by the gateway, nothing sent
        assert 0.5 <= time.monotonic() - began < 5
    wait_for_failures(gw, 1)


# ---------------------------------------------------------------- start-up errors

def _run_serve(env: dict, tmp_path) -> subprocess.CompletedProcess:
    config = tmp_path / "fastgw.yaml"
    config.write_text("services: []\n")
    return subprocess.run([sys.executable, "-m", "fastgw", "serve"], capture_output=True,
                          text=True, timeout=30, cwd=tmp_path,
                          env={**os.environ, "FASTGW_CONFIG": str(config),
                               "FASTGW_LISTEN": f"127.0.0.1:{free_port()}",
                               "FASTGW_METRICS_LISTEN": "off", **env})


def _break(case: str, cert, key, tmp_path) -> tuple[str, str]:
    """Paths for FASTGW_TLS_CERT and FASTGW_TLS_KEY, broken the way `case` says."""
    if case == "missing certificate":
        return str(tmp_path / "absent.crt"), str(key)
    if case == "missing key":
        return str(cert), str(tmp_path / "absent.key")
    if case == "unreadable certificate":  # a directory: even root cannot read it as a file
        (tmp_path / "a-folder").mkdir()
        return str(tmp_path / "a-folder"), str(key)
    if case == "key of another certificate":
        key.write_bytes(other_key())
    elif case == "garbage certificate":
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    elif case == "garbage key":
        key.write_bytes(os.urandom(512))
    elif case == "encrypted key":
        key.write_bytes(encrypted(key.read_bytes()))
    return str(cert), str(key)


@pytest.mark.parametrize("case,setting,says", [
    ("missing certificate", "FASTGW_TLS_CERT", "cannot read"),
    ("missing key", "FASTGW_TLS_KEY", "cannot read"),
    ("unreadable certificate", "FASTGW_TLS_CERT", "Is a directory"),
    ("key of another certificate", "FASTGW_TLS_KEY", "does not match the certificate"),
    ("garbage certificate", "FASTGW_TLS_CERT", "holds no PEM certificate"),
    ("garbage key", "FASTGW_TLS_KEY", "holds no PEM private key"),
    ("encrypted key", "FASTGW_TLS_KEY", "is encrypted"),
])
def test_a_bad_pair_at_start_is_one_line_and_exit_2(tmp_path, ca, case, setting, says):
    pair = ca.issue()
    cert, key = pair.write(tmp_path)
    cert_path, key_path = _break(case, cert, key, tmp_path)
    secret = pair.key.decode().splitlines()[1]  # a line of the real key's body
    result = _run_serve({"FASTGW_TLS_LISTEN": f"127.0.0.1:{free_port()}",
                         "FASTGW_TLS_CERT": cert_path, "FASTGW_TLS_KEY": key_path}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"fastgw: {setting}: ") and says in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert secret not in result.stderr + result.stdout


def test_a_pair_openssl_will_not_serve_is_refused_with_its_reason(tmp_path, ca):
    cert, key = ca.issue(key=weak_key()).write(tmp_path)
    with pytest.raises(tls.PairError) as error:
        tls.read_pair(str(cert), str(key))
    assert str(error.value) == f"FASTGW_TLS_CERT: {cert} cannot be served: ee key too small"


def test_a_pair_never_shows_its_key(tmp_path, ca):
    pair = ca.issue()
    cert, _ = pair.write(tmp_path)
    cert.write_bytes(pair.cert + pair.key)  # a certificate file holding the key too
    read = tls.read_pair(str(cert), str(tmp_path / "server.key"))
    assert pair.key.decode().splitlines()[1] not in repr(read)
    assert read.summary.startswith("CN=localhost, valid until ")


def test_two_pairs_alike_but_for_their_keys_are_told_apart_in_the_log(tmp_path, ca):
    """The reload's log line names the certificate by its SHA-256 fingerprint too."""
    summaries = set()
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        cert, key = ca.issue().write(folder)
        summaries.add(tls.read_pair(str(cert), str(key)).summary)
    assert len(summaries) == 2 and all(" SHA-256 " in s for s in summaries)


def test_a_key_path_that_is_a_fifo_is_refused_at_once_never_waited_on(tmp_path, ca):
    """A FIFO nobody writes to (a secrets agent not running): opening it waited for ever,
    and the master with it, on a SIGHUP or at start."""
    cert, _ = ca.issue().write(tmp_path)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)
    with pytest.raises(tls.PairError) as error:
        tls.read_pair(str(cert), str(fifo))
    assert str(error.value) == f"FASTGW_TLS_KEY: {fifo} is not a regular file"


@pytest.mark.parametrize("given,named,missing", [
    ({"FASTGW_TLS_LISTEN": ":9443"}, "FASTGW_TLS_LISTEN", "FASTGW_TLS_CERT and FASTGW_TLS_KEY"),
    ({"FASTGW_TLS_LISTEN": ":9443", "FASTGW_TLS_CERT": "c.pem"}, "FASTGW_TLS_LISTEN",
     "FASTGW_TLS_KEY"),
    ({"FASTGW_TLS_CERT": "c.pem", "FASTGW_TLS_KEY": "k.pem"}, "FASTGW_TLS_CERT",
     "FASTGW_TLS_LISTEN"),
    ({"FASTGW_TLS_KEY": "k.pem"}, "FASTGW_TLS_KEY", "FASTGW_TLS_LISTEN and FASTGW_TLS_CERT"),
])
def test_tls_settings_are_given_all_three_or_none(given, named, missing):
    with pytest.raises(SettingError) as error:
        Settings.load(given)
    assert str(error.value) == f"{named}: needs {missing} as well"


def test_tls_listener_without_its_pair_is_a_setting_error_exit_2(tmp_path):
    result = _run_serve({"FASTGW_TLS_LISTEN": "127.0.0.1:0"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("fastgw: FASTGW_TLS_LISTEN: needs FASTGW_TLS_CERT")
    assert result.stderr.strip().count("\n") == 0


# ---------------------------------------------------------------- rotation on SIGHUP

def _replace(pair, gw) -> None:
    """Write a pair over the gateway's files, each one renamed into place."""
    for data, path in ((pair.key, gw.key_path), (pair.cert, gw.cert_path)):
        with open(path + ".new", "wb") as f:
            f.write(data)
        os.replace(path + ".new", path)


def _reload(gw, expect: str) -> list[str]:
    """SIGHUP, then wait until the whole reload is done; the lines it logged."""
    start = len(gw.log)
    gw.signal(signal.SIGHUP)
    gw.wait_for_log(expect, start=start)
    gw.wait_for_log("configuration reloaded", start=start)
    return gw.log[start:]


def test_sighup_serves_a_new_pair_to_new_handshakes_and_keeps_established_connections(
        upstream, gateway_factory, tmp_path, ca):
    gw = tls_gateway(gateway_factory, upstream, tmp_path, ca, FASTGW_WORKERS="2")
    established = https(gw)
    assert call(established, "GET", "/json")[0] == 200
    sock = established.sock
    assert serial_of(sock.getpeercert(binary_form=True)) == gw.pair.serial

    new = ca.issue()
    _replace(new, gw)
    _reload(gw, "TLS certificate reloaded")
    for _ in range(8):  # both workers serve it, with and without SNI
        assert served_serial(gw) == new.serial
        assert served_serial(gw, "localhost") == new.serial
    conn = https(gw)
    assert call(conn, "GET", "/json")[0] == 200

    assert call(established, "GET", "/json")[0] == 200  # the same connection, still served
    assert established.sock is sock
    assert serial_of(sock.getpeercert(binary_form=True)) == gw.pair.serial


def test_sighup_with_a_bad_pair_keeps_the_pair_in_force_even_for_a_new_worker(
        upstream, gateway_factory, tmp_path, ca):
    gw = tls_gateway(gateway_factory, upstream, tmp_path, ca)
    good = gw.pair
    bad_key = other_key()
    with open(gw.key_path, "wb") as f:
        f.write(bad_key)
    lines = _reload(gw, "TLS reload refused")
    refusals = [line for line in lines if "TLS" in line]
    assert len(refusals) == 1 and "FASTGW_TLS_KEY" in refusals[0]
    assert "does not match the certificate" in refusals[0]
    assert bad_key.decode().splitlines()[1] not in "".join(gw.log)
    assert served_serial(gw) == good.serial

    # A worker started now gets the pair in force from the master, not the broken files.
    [worker] = gw.worker_pids()
    start = len(gw.log)
    os.kill(worker, signal.SIGKILL)
    gw.wait_for_log("starting a new one", start=start)
    conn = https(gw)  # waits in the listen queue until the new worker takes it
    assert call(conn, "GET", "/json")[0] == 200
    assert serial_of(conn.sock.getpeercert(binary_form=True)) == good.serial

    fixed = ca.issue()
    _replace(fixed, gw)
    _reload(gw, "TLS certificate reloaded")
    assert served_serial(gw) == fixed.serial


def test_the_tls_listener_is_named_at_start(tls_gw):
    line = tls_gw.wait_for_log("serving on")
    assert f"https://127.0.0.1:{tls_gw.tls_port}" in line
    assert "TLS certificate CN=localhost" in "".join(tls_gw.log)


def test_an_idle_https_connection_is_closed_at_once_on_sigterm_with_close_notify(
        upstream, gateway_factory, tmp_path, ca):
    """Its client never answers the gateway's close_notify, as an idle pooled one does not:
    the drain does not wait for it, as for an idle plain connection (it waited 5 s, the
    TLS shutdown's time-out); the connection ends with close_notify, not a bare close."""
    gw = tls_gateway(gateway_factory, upstream, tmp_path, ca)
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
    with client_context(gw).wrap_socket(raw, server_hostname="127.0.0.1",
                                        suppress_ragged_eofs=False) as sock:
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: api.test\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200 and resp.read()  # (all of it: the connection stays open)
        began = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - began < 2.5  # FASTGW_SHUTDOWN_TIMEOUT would allow 30 s
        assert sock.recv(1) == b""  # close_notify: a close without it raises SSLEOFError


def test_an_https_answer_in_flight_on_sigterm_is_sent_whole_then_close_notify(
        upstream, gateway_factory, tmp_path, ca):
    """The drain closes a TLS connection without waiting for the client only once its
    answer has left: a client that reads nothing until the drain has begun gets every byte,
    then close_notify."""
    n = 4_000_000
    gw = tls_gateway(gateway_factory, upstream, tmp_path, ca)
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
    with client_context(gw).wrap_socket(raw, server_hostname="127.0.0.1",
                                        suppress_ragged_eofs=False) as sock:
        target = f"/bytes?n={n}&in-flight={time.monotonic_ns()}"
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode())
        deadline = time.monotonic() + 5
        while not any(r["target"] == target for r in upstream.requests):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gw.signal(signal.SIGTERM)
        gw.wait_for_log("draining in-flight requests")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        assert resp.status == 200  # (its head went before the stop: no "connection: close")
        assert len(body) == n and hashlib.sha256(body).hexdigest() == pattern_sha256(n)
        assert sock.recv(1) == b""  # close_notify: a close without it raises SSLEOFError
    assert gw.proc.wait(10) == 0
