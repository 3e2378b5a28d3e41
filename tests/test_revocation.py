"""Revocation (SPEC section 9): entries by jti or by sub, through the admin API, the CLI, the
file, and etcd; every worker and every node refuses a revoked token within a second."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from hypothesis import event, given, settings, strategies as st

from conftest import ROOT, free_port, service
from fastgw.revocation_store import COMPACT_SLACK
from test_admin import KEY, admin
from test_cluster import base_config, etcd, push, start_node  # noqa: F401 (fixtures)
from test_metrics import scrape, value
from test_workers import connections_on_both_workers

SECRET = "revocation-test-secret-" + "0123456789abcdef" * 3
CONFIG = {
    "services": [service("http://127.0.0.1:9", [{"name": "r", "paths": ["/*"],
                                                 "plugins": {"jwt-auth": {}}}], name="api")],
    "consumers": [{"username": "jack", "credentials": [
        {"id": "jack-jwt", "key": "jack-key", "secret": SECRET}]}],
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret: str = SECRET, **claims) -> str:
    """An HS256 token for jack with any claims (PyJWT refuses to sign some on purpose)."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(json.dumps({"key": "jack-key", "exp": int(time.time()) + 600,
                            **claims}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


@pytest.fixture
def config(upstream) -> dict:
    return {**CONFIG, "services": [service(upstream.url, [
        {"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": {}}}], name="api")]}


def admin_env(**extra) -> dict:
    return {"FASTGW_ADMIN_KEY": KEY, "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
            "FASTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}", **extra}


def with_ports(gw):
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.metrics_port = int(gw.env["FASTGW_METRICS_LISTEN"].rsplit(":", 1)[1])
    gw.wait_for_log("admin API on")
    return gw


@pytest.fixture
def gw(config, gateway_factory):
    """Two workers, an admin API, the revocations file in the gateway's folder."""
    return with_ports(gateway_factory(config, env=admin_env(FASTGW_WORKERS="2")))


def answer(gw, tok: str | None):
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return gw.request("GET", "/json", headers=headers)


def status_of(gw, tok: str | None) -> int:
    return answer(gw, tok)[0]


def wait_status(gw, tok: str, expected: int, within: float) -> float:
    """Seconds until `gw` answers `expected` for the token (fails after `within`)."""
    start = time.monotonic()
    while (got := status_of(gw, tok)) != expected:
        assert time.monotonic() - start < within, f"still {got}, wanted {expected}"
        time.sleep(0.02)
    return time.monotonic() - start


def revoke(gw, **body) -> dict:
    status, entry = admin(gw, "POST", "/admin/revocations", body)
    assert status == 201, entry
    return entry


def assert_revoked(status: int, headers: dict, body: bytes) -> None:
    assert (status, json.loads(body)) == (401, {"message": "JWT token revoked"})
    assert headers["www-authenticate"] == 'Bearer realm="fastgw", error="invalid_token"'


# ---------------------------------------------------------------- one gateway, two workers

def _request(tok: str) -> bytes:
    return f"GET /json HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a keep-alive connection (Content-Length framed): status, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def test_a_cached_token_revoked_by_jti_is_refused_by_both_workers_within_a_second(gw):
    tok = token(jti="stolen-laptop")
    # connections held open on each worker, the token cached by both
    conns, owners = connections_on_both_workers(gw, _request(tok))
    try:
        started = time.monotonic()
        entry = revoke(gw, jti="stolen-laptop")
        for s in conns:  # the same connections, the same workers: cache hits refused
            s.sendall(_request(tok))
            status, body = _read_response(s)
            assert (status, json.loads(body)) == (401, {"message": "JWT token revoked"})
        assert time.monotonic() - started < 1.0
    finally:
        for s in conns:
            s.close()
    assert_revoked(*answer(gw, tok))
    assert status_of(gw, token(jti="another")) == 200 and status_of(gw, token()) == 200
    assert entry["jti"] == "stolen-laptop" and entry["id"] and "sub" not in entry
    assert abs(entry["expires"] - (time.time() + 30 * 86400)) < 60  # default: 30 days
    samples = scrape(gw)
    assert value(samples, "fastgw_revoked_total") >= 2
    assert value(samples, "fastgw_auth_failures_total", reason="revoked") >= 2
    assert value(samples, "fastgw_revocations") == 1


def test_sub_issued_before_refuses_older_tokens_and_those_without_iat(gw):
    now = int(time.time())
    older, newer = token(sub="ann", iat=now - 100), token(sub="ann", iat=now + 5)
    no_iat, other = token(sub="ann"), token(sub="bob", iat=now - 100)
    for tok in (older, newer, no_iat, other):
        assert status_of(gw, tok) == 200  # cached
    revoke(gw, sub="ann", issued_before=now)
    assert_revoked(*answer(gw, older))
    assert_revoked(*answer(gw, no_iat))
    assert status_of(gw, newer) == 200 and status_of(gw, other) == 200
    assert status_of(gw, token(sub="ann", iat=now)) == 200  # not before: at
    assert status_of(gw, token(sub="ann", iat=now - 1, jti="x")) == 401  # fresh, verified


def test_an_entry_scoped_to_one_iss_refuses_only_that_issuer(gw):
    tokens = {iss: token(jti="shared-id", iss=iss) for iss in ("idp-a", "idp-b")}
    unscoped_iss = token(jti="shared-id")
    revoke(gw, jti="shared-id", iss="idp-a")
    assert status_of(gw, tokens["idp-a"]) == 401
    assert status_of(gw, tokens["idp-b"]) == 200 and status_of(gw, unscoped_iss) == 200
    revoke(gw, sub="ann", issued_before=time.time(), iss="idp-b")
    assert status_of(gw, token(sub="ann", iss="idp-b")) == 401
    assert status_of(gw, token(sub="ann", iss="idp-a")) == 200
    revoke(gw, jti="shared-id")  # no iss: every issuer
    assert status_of(gw, tokens["idp-b"]) == 401 and status_of(gw, unscoped_iss) == 401


def test_entries_are_listed_and_lifted(gw):
    tok = token(jti="j1")
    first = revoke(gw, jti="j1", expires=int(time.time()) + 3600)
    second = revoke(gw, sub="ann", issued_before=1_700_000_000, iss="idp")
    status, listed = admin(gw, "GET", "/admin/revocations")
    assert status == 200 and listed == [first, second]
    assert second == {"id": second["id"], "sub": "ann", "issued_before": 1_700_000_000,
                      "iss": "idp", "expires": second["expires"], "created": second["created"]}
    assert admin(gw, "GET", f"/admin/revocations/{first['id']}") == (200, first)
    assert status_of(gw, tok) == 401
    assert admin(gw, "DELETE", f"/admin/revocations/{first['id']}") == (
        200, {"deleted": first["id"]})
    assert status_of(gw, tok) == 200  # in force on return, in every worker
    assert admin(gw, "GET", "/admin/revocations")[1] == [second]
    for method in ("GET", "DELETE"):
        status, body = admin(gw, method, f"/admin/revocations/{first['id']}")
        assert status == 404 and first["id"] in body["error_msg"]
    assert admin(gw, "PUT", "/admin/revocations", {"jti": "x"})[0] == 405
    assert admin(gw, "GET", "/admin/revocations", key="wrong")[0] == 401
    assert value(scrape(gw), "fastgw_revocations") == 1


def test_every_spelling_of_a_revoked_token_is_refused(config, gateway_factory):
    """Entries match claims, not text: the ECDSA twin (r, n - s) of a revoked token, a second
    spelling of the same claims that verifies too, is refused as well."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from jwt_kit import pem_pair
    from test_jwt_auth import P256_ORDER, _ecdsa_twin
    private, public = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    config["consumers"].append({"username": "es", "credentials": [
        {"key": "es-key", "algorithm": "ES256", "public_key": public}]})
    gw = with_ports(gateway_factory(config, env=admin_env()))
    tok = pyjwt.encode({"key": "es-key", "jti": "twin"}, private, algorithm="ES256")
    twin = _ecdsa_twin(tok, P256_ORDER)
    assert twin != tok and status_of(gw, tok) == 200 and status_of(gw, twin) == 200
    revoke(gw, jti="twin")
    assert status_of(gw, tok) == 401 and status_of(gw, twin) == 401


NOW = time.time()


@pytest.mark.parametrize("body, path", [
    ({}, "jti"),
    ({"jti": "a", "sub": "b", "issued_before": NOW}, "sub"),
    ({"jti": "a", "issued_before": NOW}, "issued_before"),
    ({"sub": "b"}, "issued_before"),
    ({"sub": "b", "issued_before": "yesterday"}, "issued_before"),
    ({"sub": "b", "issued_before": True}, "issued_before"),
    ({"sub": "b", "issued_before": 1e300}, "issued_before"),  # (no date: the CLI's traceback)
    ({"jti": ""}, "jti"),
    ({"jti": 12}, "jti"),
    ({"jti": ["a"]}, "jti"),
    ({"sub": None, "jti": None}, "jti"),
    ({"jti": "a", "iss": 5}, "iss"),
    ({"jti": "a", "expires": NOW - 10}, "expires"),
    ({"jti": "a", "expires": "tomorrow"}, "expires"),
    ({"jti": "a", "expires": NOW + 20 * 366 * 86400}, "expires"),
    ({"jti": "a", "token": "eyJ..."}, "token"),
    ({"jti": "a", "id": "mine"}, "id"),
    ({"jti": "x" * 5000}, "jti"),
])
def test_bad_bodies_get_400_naming_the_field(gw, body, path):
    status, answer_ = admin(gw, "POST", "/admin/revocations", body)
    assert status == 400 and answer_["path"] == path and answer_["error_msg"].startswith(path)


def test_bodies_that_are_no_object_get_400(gw):
    for raw in (b"[1]", b"\"jti\"", b"", b"{not json"):
        status, body = admin(gw, "POST", "/admin/revocations", raw)
        assert status == 400 and "JSON" in body["error_msg"], (raw, body)
    assert admin(gw, "GET", "/admin/revocations")[1] == []


def test_entries_survive_a_restart_in_file_mode(gw, config, gateway_factory):
    tok = token(jti="kept")
    entry = revoke(gw, jti="kept")
    path = gw.config_path.parent / "fastgw-revocations.json"
    assert json.loads(path.read_text()) == {"revocations": [entry]}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".fastgw-")]
    gw.stop()
    again = gateway_factory(config, env=admin_env(
        FASTGW_WORKERS="2", FASTGW_REVOCATIONS=str(path)))
    with_ports(again)
    assert admin(again, "GET", "/admin/revocations")[1] == [entry]
    assert_revoked(*answer(again, tok))
    assert "1 revocation entries from" in again.wait_for_log("revocation entries from")


def test_a_change_is_appended_to_the_file_and_read_back_at_start(gw, config,
                                                                 gateway_factory):
    path = gw.config_path.parent / "fastgw-revocations.json"
    first = revoke(gw, jti="one")  # the first change after the file was read: written whole
    assert json.loads(path.read_text()) == {"revocations": [first]}
    inode, head = path.stat().st_ino, path.read_bytes()
    second = revoke(gw, jti="two")
    assert admin(gw, "DELETE", f"/admin/revocations/{first['id']}")[0] == 200
    data = path.read_bytes()
    assert path.stat().st_ino == inode and data.startswith(head)  # appended to, not replaced
    assert [json.loads(line) for line in data[len(head):].splitlines()] == [
        {"add": second}, {"remove": first["id"]}]
    gw.stop()
    again = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    assert admin(again, "GET", "/admin/revocations")[1] == [second]
    assert status_of(again, token(jti="one")) == 200
    assert status_of(again, token(jti="two")) == 401
    third = revoke(again, jti="three")
    assert json.loads(path.read_text()) == {"revocations": [second, third]}


def test_a_file_replaced_behind_fastgws_back_is_rewritten_not_appended_to(gw, config,
                                                                          gateway_factory):
    path = gw.config_path.parent / "fastgw-revocations.json"
    first = revoke(gw, jti="one")
    second = revoke(gw, jti="two")  # appended
    path.write_text(json.dumps({"revocations": []}, indent=2))  # by hand, and no SIGHUP
    third = revoke(gw, jti="three")
    assert json.loads(path.read_text()) == {"revocations": [first, second, third]}
    path.unlink()
    fourth = revoke(gw, jti="four")  # a file removed: written again, not a 503
    assert json.loads(path.read_text()) == {"revocations": [first, second, third, fourth]}
    gw.stop()
    again = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    assert len(admin(again, "GET", "/admin/revocations")[1]) == 4


def test_a_change_that_cannot_be_appended_whole_leaves_the_file_as_it_was(gw, config,
                                                                            gateway_factory):
    path = gw.config_path.parent / "fastgw-revocations.json"
    first = revoke(gw, jti="one")  # written whole
    second = revoke(gw, jti="two")  # appended
    data = path.read_bytes()
    # the master may write only 10 bytes more: the next line goes in part (a short write)
    master = gw.proc.pid
    soft, hard = resource.prlimit(master, resource.RLIMIT_FSIZE)
    resource.prlimit(master, resource.RLIMIT_FSIZE, (len(data) + 10, hard))
    try:
        status, body = admin(gw, "POST", "/admin/revocations", {"jti": "three"})
    finally:
        resource.prlimit(master, resource.RLIMIT_FSIZE, (soft, hard))
    assert status == 503 and body["error_msg"].startswith("cannot write "), body
    assert path.read_bytes() == data  # the part written is cut off again
    assert status_of(gw, token(jti="three")) == 200
    fourth = revoke(gw, jti="four")  # after a failed append: written whole
    assert json.loads(path.read_text()) == {"revocations": [first, second, fourth]}
    gw.stop()
    again = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    assert [e["id"] for e in admin(again, "GET", "/admin/revocations")[1]] == [
        first["id"], second["id"], fourth["id"]]


def test_the_file_is_rewritten_once_its_changes_outnumber_its_entries(gw):
    path = gw.config_path.parent / "fastgw-revocations.json"
    for n in range(COMPACT_SLACK + 16):
        entry = revoke(gw, jti=f"j{n}")
        assert admin(gw, "DELETE", f"/admin/revocations/{entry['id']}")[0] == 200
    lines = path.read_bytes().splitlines()
    assert len(lines) <= 2 + COMPACT_SLACK, len(lines)  # 160 changes, at most one entry
    assert json.loads(lines[0]).keys() == {"revocations"}
    assert admin(gw, "GET", "/admin/revocations")[1] == []


def test_a_last_line_cut_short_is_left_out_and_the_next_change_rewrites_the_file(
        config, gateway_factory, tmp_path):
    now = time.time()
    kept = {"id": "kept", "jti": "a", "expires": now + 500, "created": now}
    added = {"id": "added", "jti": "b", "expires": now + 500, "created": now}
    path = tmp_path / "revocations.json"
    path.write_bytes(json.dumps({"revocations": [kept]}).encode() + b"\n" +
                     json.dumps({"add": added}).encode() + b"\n" +
                     b'{"add": {"id": "torn", "jti": "c", "expi')  # fastgw stopped here
    gw = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    gw.wait_for_log("its last line, cut short, is left out")
    assert sorted(e["id"] for e in admin(gw, "GET", "/admin/revocations")[1]) == [
        "added", "kept"]
    assert status_of(gw, token(jti="b")) == 401 and status_of(gw, token(jti="c")) == 200
    entry = revoke(gw, jti="d")  # nothing is appended after a line cut short
    assert [e["id"] for e in json.loads(path.read_text())["revocations"]] == [
        "kept", "added", entry["id"]]


def test_an_entry_is_forgotten_once_it_expires(gw):
    tok = token(jti="brief")
    entry = revoke(gw, jti="brief", expires=time.time() + 1.5)
    assert status_of(gw, tok) == 401
    wait_status(gw, tok, 200, within=3)
    assert admin(gw, "GET", "/admin/revocations")[1] == []  # only live entries are listed
    path = gw.config_path.parent / "fastgw-revocations.json"
    deadline = time.monotonic() + 3  # the master's prune, once a second, forgets it
    while (json.loads(path.read_bytes().splitlines()[-1]) != {"remove": entry["id"]}
           or value(scrape(gw), "fastgw_revocations")):  # ... with a line of its own
        assert time.monotonic() < deadline, "the expired entry is still kept"
        time.sleep(0.05)


def test_an_entry_ending_at_the_tokens_exp_outlasts_the_grace_period(config,
                                                                      gateway_factory):
    """A token is accepted `lifetime_grace_period` past its exp, so an entry whose
    `expires` is that exp (as SPEC 9 has it) refuses it for that long too; a token already
    in its grace can still be revoked; the entry is forgotten once the grace is over."""
    grace = 4
    conf = {**config, "consumers": [{"username": "jack", "credentials": [
        {"id": "jack-jwt", "key": "jack-key", "secret": SECRET,
         "lifetime_grace_period": grace}]}]}
    gw = with_ports(gateway_factory(conf, env=admin_env(FASTGW_WORKERS="2")))
    exp = int(time.time()) + 1
    tok = token(jti="stolen", exp=exp)
    assert status_of(gw, tok) == 200  # cached by both workers, maybe: hits are checked too
    assert status_of(gw, tok) == 200
    revoke(gw, jti="stolen", expires=exp)
    late = token(jti="late", exp=exp - 2)  # in its grace already
    assert status_of(gw, late) == 200
    revoke(gw, jti="late", expires=exp - 2)
    said = set()
    while time.time() < exp + 1.5:  # past exp and a prune of the master's, in the grace
        said.add(tuple(json.loads(answer(gw, t)[2])["message"] for t in (tok, late)))
        time.sleep(0.05)
    assert said == {("JWT token revoked", "JWT token revoked")}
    assert_revoked(*answer(gw, tok))
    assert {e["jti"] for e in admin(gw, "GET", "/admin/revocations")[1]} == {"stolen", "late"}
    deadline = time.monotonic() + grace + 3
    while admin(gw, "GET", "/admin/revocations")[1]:  # forgotten once the grace is over
        assert time.monotonic() < deadline, "kept past the grace period"
        time.sleep(0.1)
    status, _, body = answer(gw, tok)  # and the token is refused as expired
    assert (status, json.loads(body)) == (401, {"message": "failed to verify jwt"})


def test_an_unusable_revocations_file_stops_the_start_in_one_line(config, gateway_factory,
                                                                    tmp_path):
    for content, expected in ((b"{not json", "cannot read"),
                              (b'{"revocations": [{"id": "a", "jti": 5}]}',
                               "revocations[0].jti: must be a non-empty string"),
                              (b'{"revocations": []}\n{"nope": 1}\n{"remove": "a"}\n',
                               "line 2 is not a change")):
        bad = tmp_path / "bad.json"
        bad.write_bytes(content)
        gw = gateway_factory(config, env={"FASTGW_REVOCATIONS": str(bad)}, start=False)
        result = subprocess.run([sys.executable, "-m", "fastgw"], env=gw.env, text=True,
                                capture_output=True, timeout=30, cwd=gw.config_path.parent)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and "FASTGW_REVOCATIONS" in result.stderr
        assert expected in result.stderr, result.stderr


def test_an_expired_entry_in_the_file_is_dropped_at_start(config, gateway_factory, tmp_path):
    path = tmp_path / "revocations.json"
    now = time.time()
    path.write_text(json.dumps({"revocations": [
        {"id": "old", "jti": "a", "expires": now - 5, "created": now - 50},
        {"id": "live", "jti": "b", "expires": now + 500, "created": now - 50}]}))
    gw = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    assert [e["id"] for e in admin(gw, "GET", "/admin/revocations")[1]] == ["live"]
    assert status_of(gw, token(jti="a")) == 200 and status_of(gw, token(jti="b")) == 401


def test_sighup_reads_the_file_again_and_a_bad_one_keeps_the_entries(config, gateway_factory,
                                                                     tmp_path):
    path = tmp_path / "revocations.json"
    now = time.time()

    def entry(entry_id: str, jti: str) -> dict:
        return {"id": entry_id, "jti": jti, "expires": now + 500, "created": now}

    path.write_text(json.dumps({"revocations": [entry("first", "a")]}))
    gw = with_ports(gateway_factory(config, env=admin_env(FASTGW_WORKERS="2",
                                                          FASTGW_REVOCATIONS=str(path))))
    assert status_of(gw, token(jti="a")) == 401 and status_of(gw, token(jti="b")) == 200
    path.write_text(json.dumps({"revocations": [entry("second", "b")]}))  # as a deployment
    start = len(gw.log)
    gw.signal(signal.SIGHUP)
    line = gw.wait_for_log("revocation entries re-read from", start=start)
    assert "1 revocation entries re-read from" in line and "(1 new or changed, 1 gone)" in line
    # in force in both workers before the line: every connection is answered alike
    assert {status_of(gw, token(jti="a")) for _ in range(8)} == {200}
    assert {status_of(gw, token(jti="b")) for _ in range(8)} == {401}
    assert [e["id"] for e in admin(gw, "GET", "/admin/revocations")[1]] == ["second"]
    # a file that cannot be used keeps the entries in force; so do a file gone and one
    # without its list, which are never read as "no entries"
    moved = tmp_path / "moved.json"
    for bad, expected in (('{"revocations": [{"id": "x", "jti": 5}]}',
                           "revocations[0].jti: must be a non-empty string"),
                          ("{}", "must be an object with a list `revocations`"),
                          ('{"revocations": [{"id": ["x"], "jti": "c"}]}',
                           "revocations[0].id: must be a non-empty string"),
                          (None, f"there is no {path}")):
        if bad is None:
            path.rename(moved)
        else:
            path.write_text(bad)
        start = len(gw.log)
        gw.signal(signal.SIGHUP)
        line = gw.wait_for_log("revocation entries not re-read from", start=start)
        assert expected in line, line
        assert status_of(gw, token(jti="b")) == 401
        assert [e["id"] for e in admin(gw, "GET", "/admin/revocations")[1]] == ["second"]
    # an entry written by hand without `expires` gets its 30 days once, not at every SIGHUP
    moved.write_text(json.dumps({"revocations": [{"id": "hand", "jti": "c"}]}))
    moved.rename(path)
    for _ in range(2):
        start = len(gw.log)
        gw.signal(signal.SIGHUP)
        line = gw.wait_for_log("revocation entries re-read from", start=start)
        [listed] = admin(gw, "GET", "/admin/revocations")[1]
        if _ == 0:
            assert "(1 new or changed, 1 gone)" in line and listed["id"] == "hand"
            expires = listed["expires"]
        else:
            assert "(0 new or changed, 0 gone)" in line and listed["expires"] == expires
    assert status_of(gw, token(jti="c")) == 401


def test_sighup_before_there_was_ever_a_file_is_no_entries_not_an_error(config,
                                                                         gateway_factory,
                                                                         tmp_path):
    path = tmp_path / "never.json"
    gw = with_ports(gateway_factory(config, env=admin_env(FASTGW_REVOCATIONS=str(path))))
    start = len(gw.log)
    gw.signal(signal.SIGHUP)
    line = gw.wait_for_log("revocation entries re-read from", start=start)
    assert "0 revocation entries re-read" in line
    assert not [line for line in gw.log[start:] if "not re-read" in line]
    now = time.time()  # a file a deployment puts there later is read at the next SIGHUP
    path.write_text(json.dumps({"revocations": [{"id": "d", "jti": "a", "expires": now + 500,
                                                 "created": now}]}))
    start = len(gw.log)
    gw.signal(signal.SIGHUP)
    assert "1 revocation entries re-read" in gw.wait_for_log("re-read from", start=start)
    assert status_of(gw, token(jti="a")) == 401
    path.unlink()  # and once there was one, its going is an error again
    start = len(gw.log)
    gw.signal(signal.SIGHUP)
    assert f"there is no {path}" in gw.wait_for_log("not re-read from", start=start)
    assert status_of(gw, token(jti="a")) == 401


# ---------------------------------------------------------------- the CLI

def fastgw(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env)


def test_the_cli_revokes_and_lists(gw):
    env = {"PATH": "/usr/bin:/bin", "FASTGW_ADMIN_KEY": KEY,
           "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{gw.admin_port}"}
    tok = token(jti="cli-jti", iss="idp")
    done = fastgw("revoke", "--jti", "cli-jti", "--iss", "idp", "--expires",
                  "2030-01-01T00:00:00", env=env)
    assert done.returncode == 0, done.stderr
    assert "jti=cli-jti iss=idp  expires=2030-01-01T00:00:00Z" in done.stdout
    assert status_of(gw, tok) == 401
    done = fastgw("revoke", "--sub", "ann", "--issued-before", str(int(time.time())), env=env)
    assert done.returncode == 0, done.stderr
    assert status_of(gw, token(sub="ann", iat=int(time.time()) - 60)) == 401
    listed = fastgw("revocations", env=env)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2
    ids = [e["id"] for e in admin(gw, "GET", "/admin/revocations")[1]]
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ids
    assert "sub=ann issued_before=" in listed.stdout

    refused = fastgw("revoke", "--sub", "ann", env=env)  # no --issued-before
    assert refused.returncode == 1 and "issued_before: is required" in refused.stderr
    refused = fastgw("revoke", "--jti", "x", "--expires", "soon", env=env)
    assert refused.returncode == 2 and "--expires 'soon'" in refused.stderr
    refused = fastgw("revoke", "--jti", "x", "--expires", "2001-01-01", env=env)
    assert refused.returncode == 1 and "expires: is in the past" in refused.stderr
    for flag, when in (("--issued-before", "1e300"), ("--expires", "inf"),
                       ("--issued-before", "nan")):  # never sent (inf was sent as null)
        refused = fastgw("revoke", "--sub", "ann", flag, when, env=env)
        assert refused.returncode == 2 and f"{flag} '{when}': not a time" in refused.stderr
        assert "Traceback" not in refused.stderr
    keyless = fastgw("revocations", env={"PATH": "/usr/bin:/bin"})
    assert keyless.returncode == 2 and "FASTGW_ADMIN_KEY" in keyless.stderr
    wrong = fastgw("revocations", "--admin-key", "wrong", env=env)
    assert wrong.returncode == 2 and "X-API-KEY" in wrong.stderr
    down = fastgw("revocations", "--admin-listen", f"127.0.0.1:{free_port()}", env=env)
    assert down.returncode == 2 and "cannot reach the admin API" in down.stderr
    for result in (refused, keyless, wrong, down):
        assert "Traceback" not in result.stderr
    assert len(admin(gw, "GET", "/admin/revocations")[1]) == 2


# ---------------------------------------------------------------- the decision, in-process

def _plugin():
    from types import SimpleNamespace

    from fastgw.config.schema import validate
    from fastgw.plugins import jwt_auth
    conf = validate(CONFIG)
    cache = jwt_auth.VerifiedTokenCache(1000)
    return jwt_auth.build(conf["services"][0]["routes"][0]["plugins"]["jwt-auth"],
                          SimpleNamespace(credentials={"jwt-auth": jwt_auth.index_credentials(
                              conf["consumers"], None)}, state={"jwt-auth": cache}))


T0 = 1_800_000_000
_values = st.sampled_from(["a", "b"])
_claim_values = st.one_of(_values, _values, _values, st.none(), st.integers(0, 2),
                          st.lists(_values, max_size=1))
_entries = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(["jti", "sub"]), "value": _values,
    "iss": st.one_of(st.none(), _values),
    "issued_before": st.integers(T0 - 3, T0 + 3),
    "expires_in": st.sampled_from([-5, 100, 100])}), min_size=1, max_size=8)
ABSENT = "<absent>"  # a claim the token does not carry
_tokens = st.lists(st.fixed_dictionaries({
    "jti": _claim_values | st.just(ABSENT), "sub": _claim_values | st.just(ABSENT),
    "iss": _claim_values | st.just(ABSENT),
    "iat": st.integers(T0 - 4, T0 + 4) | st.just(ABSENT)}).map(
        lambda claims: {k: v for k, v in claims.items() if v != ABSENT}), min_size=1,
    max_size=8)


def reference(entries: list[dict], claims: dict, now: float) -> bool | None:
    """Revoked, said as plainly as SPEC section 9 does; None: the token is refused before
    (a jti or sub that is not a string, RFC 7519)."""
    if any(type(claims.get(name, "")) is not str for name in ("jti", "sub")):
        return None
    for e in entries:
        if now >= e["expires"]:
            continue
        if "iss" in e and claims.get("iss") != e["iss"]:
            continue
        if "jti" in e and claims.get("jti") == e["jti"]:
            return True
        if "sub" in e and claims.get("sub") == e["sub"] and (
                "iat" not in claims or claims["iat"] < e["issued_before"]):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(_entries, _tokens)
def test_the_gateways_decision_is_the_reference_functions(raw_entries, token_claims):
    from fastgw import revocation
    from fastgw.plugins.jwt_auth import REVOKED, VERIFY_FAILED
    from jwt_kit import PluginSide
    now = time.time()
    entries = []
    for n, raw in enumerate(raw_entries):
        entry = {"id": f"e{n}", raw["kind"]: raw["value"], "expires": now + raw["expires_in"]}
        if raw["kind"] == "sub":
            entry["issued_before"] = raw["issued_before"]
        if raw["iss"] is not None:
            entry["iss"] = raw["iss"]
        entries.append(entry)
    plugin = _plugin()
    revocation.apply({"reset": True, "add": entries})
    try:
        assert revocation.count() == len(entries)
        for claims in token_claims:
            expected = reference(entries, claims, time.time())
            event({True: "revoked", False: "let through", None: "refused"}[expected])
            tok = token(**claims).encode()
            for _ in ("verified", "cache hit"):
                ex = PluginSide([(b"authorization", tok)])
                got = plugin.access(ex)
                assert got is {True: REVOKED, False: None, None: VERIFY_FAILED}[expected], (
                    entries, claims)
        half = [e["id"] for e in entries[::2]]  # lifting: the index forgets them exactly
        revocation.apply({"remove": half})
        left = [e for e in entries if e["id"] not in half]
        for claims in token_claims:
            ex = PluginSide([(b"authorization", token(**claims).encode())])
            expected = reference(left, claims, time.time())
            assert plugin.access(ex) is {True: REVOKED, False: None, None: VERIFY_FAILED}[
                expected]
    finally:
        revocation.apply({"reset": True})


# ---------------------------------------------------------------- cluster mode

PREFIX = "/fastgw"


def etcd_call(etcd, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://{etcd.endpoint}/v3/{path}",
                                     data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def lease_of(etcd, key: str) -> dict | None:
    """The lease of a key: its grantedTTL and TTL left, seconds; None without a key."""
    found = etcd_call(etcd, "kv/range", {"key": base64.b64encode(key.encode()).decode()})
    kvs = found.get("kvs") or []
    if not kvs:
        return None
    lease = kvs[0].get("lease")
    assert lease, "the key has no lease"
    alive = etcd_call(etcd, "lease/timetolive", {"ID": lease})
    return {"granted": int(alive["grantedTTL"]), "left": int(alive["TTL"])}


@pytest.fixture
def nodes(tmp_path, etcd, base_config, start_node):  # noqa: F811 (fixtures from test_cluster)
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    return start_node(etcd.endpoint, "a"), start_node(etcd.endpoint, "b")


def cluster_token(**claims) -> str:
    from test_cluster import SECRET as CLUSTER_SECRET
    return token(CLUSTER_SECRET, **claims)


def test_revoked_on_one_node_refused_on_the_other_within_a_second_with_an_etcd_lease(
        nodes, etcd):
    a, b = nodes
    tok = cluster_token(jti="j-cluster")
    assert status_of(a, tok) == 200 and status_of(b, tok) == 200  # cached on both
    expires = int(time.time()) + 3600
    entry = revoke(a, jti="j-cluster", expires=expires)
    assert status_of(a, tok) == 401  # in force on a when its API answers
    assert wait_status(b, tok, 401, within=1.0) < 1.0
    key = f"{PREFIX}/revocations/{entry['id']}"
    stored = etcd.get(key)
    assert stored == entry
    lease = lease_of(etcd, key)
    # a day past expires (EtcdStore.write: each node forgets it by its own clock)
    assert abs(lease["granted"] - (expires + 86400 - time.time())) <= 3
    assert lease["left"] > 86400 + 3590
    assert admin(b, "GET", "/admin/revocations")[1] == [entry]

    assert admin(b, "DELETE", f"/admin/revocations/{entry['id']}")[0] == 200
    assert status_of(b, tok) == 200
    wait_status(a, tok, 200, within=1.0)
    assert etcd.get(key) is None
    assert admin(a, "GET", "/admin/revocations")[1] == []
    assert value(scrape(a), "fastgw_revocations") == 0


def test_every_node_forgets_an_expired_entry_by_itself_and_its_lease_ends_a_day_later(
        nodes, etcd):
    """Each node drops an entry at `expires` (plus the grace in force) by its own clock;
    etcd's lease only clears the key, a day after: a lease that ended at `expires` on the
    writer's clock lifted the revocation on every node, whatever their clocks and grace."""
    a, b = nodes
    tok = cluster_token(sub="ann")
    entry = revoke(a, sub="ann", issued_before=time.time(), expires=time.time() + 2)
    wait_status(b, tok, 401, within=1.0)
    key = f"{PREFIX}/revocations/{entry['id']}"
    assert 86400 <= lease_of(etcd, key)["granted"] <= 86400 + 3
    for node in nodes:
        wait_status(node, tok, 200, within=4)
    for node in nodes:
        assert admin(node, "GET", "/admin/revocations")[1] == []
    assert etcd.get(key) is not None


def test_a_grace_raised_after_a_revocation_keeps_it_on_every_node(nodes, etcd):
    """The entry ends at the token's exp; the credential's lifetime_grace_period is raised
    after: the token is accepted past exp now, and so must stay refused, on both nodes
    (the lease, granted for the grace of the time, ended and lifted it everywhere)."""
    a, b = nodes
    exp = int(time.time()) + 3
    tok = cluster_token(jti="graced", exp=exp)
    revoke(a, jti="graced", expires=exp)
    wait_status(b, tok, 401, within=1.0)
    conf = admin(a, "GET", "/admin/config")[1]
    conf["consumers"][0]["credentials"][0]["lifetime_grace_period"] = 120
    assert admin(a, "PUT", "/admin/config", conf)[0] == 200
    deadline = time.monotonic() + 8  # past exp, and past what its old lease granted
    while time.monotonic() < deadline:
        for node in nodes:
            assert_revoked(*answer(node, tok))
        time.sleep(0.2)


def test_without_etcd_nodes_keep_their_entries_and_a_restart_reads_the_snapshot(
        nodes, etcd, start_node):  # noqa: F811
    a, b = nodes
    tok = cluster_token(jti="kept")
    entry = revoke(a, jti="kept")
    wait_status(b, tok, 401, within=1.0)
    etcd.kill()
    for node in nodes:
        node.wait_for_log("etcd lost")
        assert status_of(node, tok) == 401 and status_of(node, cluster_token()) == 200
    status, body = admin(a, "POST", "/admin/revocations", {"jti": "new"})
    assert status == 503 and "etcd" in body["error_msg"]
    assert admin(a, "GET", "/admin/revocations")[1] == [entry]
    b.stop()
    again = start_node(etcd.endpoint, "b")  # b's snapshot file, etcd still down
    again.wait_for_log("serving the snapshot of revision")
    assert status_of(again, tok) == 401
    assert admin(again, "GET", "/admin/revocations")[1] == [entry]


def test_a_node_started_from_its_snapshot_keeps_an_entry_through_the_grace_period(
        tmp_path, base_config, start_node):  # noqa: F811
    """etcd down at start: the snapshot's entries are read with the grace of the snapshot's
    own configuration, so one past its `expires` but inside the grace still refuses."""
    conf = json.loads(json.dumps(base_config))
    conf["consumers"][0]["credentials"][0]["lifetime_grace_period"] = 60
    now = time.time()
    stolen = {"id": "in-grace", "jti": "stolen", "expires": int(now) - 5, "created": now - 50}
    (tmp_path / "a.json").write_bytes(json.dumps({
        "prefix": PREFIX, "revision": 7, "config": conf, "revocations": [stolen]}).encode())
    node = start_node(f"127.0.0.1:{free_port()}", "a")  # nothing listens: etcd is down
    node.wait_for_log("serving the snapshot of revision 7")
    tok = cluster_token(jti="stolen", exp=int(now) - 5)  # expired, in its 60 s grace
    assert_revoked(*answer(node, tok))
    assert status_of(node, cluster_token(jti="other", exp=int(now) - 5)) == 200
    assert admin(node, "GET", "/admin/revocations")[1] == [stolen]


def test_after_a_compaction_a_cut_off_node_reads_the_entries_again(
        tmp_path, etcd, base_config, start_node):  # noqa: F811
    from etcd import TcpRelay
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    relay = TcpRelay(etcd.port).start()
    a, b = start_node(relay.endpoint, "a"), start_node(etcd.endpoint, "b")
    lifted, kept = cluster_token(jti="lifted"), cluster_token(jti="new")
    old = revoke(b, jti="lifted")
    wait_status(a, lifted, 401, within=1.0)
    relay.cut()
    a.wait_for_log("etcd lost")
    assert admin(b, "DELETE", f"/admin/revocations/{old['id']}")[0] == 200
    new = revoke(b, jti="new")
    assert status_of(a, lifted) == 401 and status_of(a, kept) == 200  # a has not heard
    etcd.compact()
    relay.restore()
    a.wait_for_log("etcd compacted its history", timeout=10)
    wait_status(a, kept, 401, within=2)
    wait_status(a, lifted, 200, within=2)
    assert admin(a, "GET", "/admin/revocations")[1] == [new]


def test_a_bad_value_in_the_revocations_folder_is_skipped_and_pull_leaves_the_folder_out(
        nodes, etcd):
    a, _ = nodes
    entry = revoke(a, jti="good")
    etcd.put(f"{PREFIX}/revocations/junk", b"{not json")
    etcd.put(f"{PREFIX}/revocations/typed", {"id": "typed", "jti": 5, "expires": 4e9})
    for key in ("junk", "typed"):
        assert "skipped" in a.wait_for_log(f"etcd key {PREFIX}/revocations/{key} skipped")
    assert admin(a, "GET", "/admin/revocations")[1] == [entry]
    pulled = subprocess.run([sys.executable, "-m", "fastgw", "config", "pull", "--etcd",
                             etcd.endpoint], capture_output=True, text=True, timeout=30,
                            cwd=ROOT)
    assert pulled.returncode == 0 and pulled.stderr == "" and "revocations" not in pulled.stdout
