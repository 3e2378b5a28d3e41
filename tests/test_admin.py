"""The admin API (SPEC section 6) on a real master with two workers."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import jwt as pyjwt
import pytest
import yaml

from conftest import RawClient, free_port, service
from test_workers import connections_on_both_workers

KEY = "admin-key-for-tests"
SECRET = "admin-test-secret-" + "0123456789abcdef" * 3


@pytest.fixture
def admin_gw(upstream, gateway_factory):
    gw = gateway_factory({
        "services": [service(upstream.url, [{"name": "r", "paths": ["/*"],
                                             "plugins": {"jwt-auth": {}}}], name="api")],
        "consumers": [{"username": "jack", "credentials": [
            {"id": "jack-jwt", "key": "jack-key", "secret": SECRET}]}],
    }, env={"FASTGW_WORKERS": "2", "FASTGW_ADMIN_KEY": KEY,
            "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.wait_for_log("admin API on")
    return gw


def admin(gw, method, path, body=None, key=KEY, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=10)
    headers = {**({"X-API-KEY": key} if key is not None else {}), **(headers or {})}
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"null")
    conn.close()
    return out


def test_every_request_needs_the_key(admin_gw):
    assert admin(admin_gw, "GET", "/admin/status", key=None)[0] == 401
    assert admin(admin_gw, "GET", "/admin/status", key="wrong")[0] == 401
    status, body = admin(admin_gw, "GET", "/admin/status")
    assert status == 200 and body["revision"] == 1 and len(body["workers"]) == 2
    assert body["version"] and body["config_source"].startswith("file ")


def test_secrets_are_masked_in_every_get(admin_gw):
    for path in ("/admin/config", "/admin/consumers", "/admin/consumers/jack"):
        status, body = admin(admin_gw, "GET", path)
        assert status == 200 and SECRET not in json.dumps(body)
    status, body = admin(admin_gw, "GET", "/admin/consumers/jack")
    assert body["credentials"][0]["secret"] == "***"


def test_services_and_routes_crud(admin_gw, upstream):
    status, body = admin(admin_gw, "PUT", "/admin/services/public", {
        "upstream": {"url": upstream.url}, "path_prefix": "/pub",
        "routes": [{"name": "all", "paths": ["/*"]}]})
    assert status == 200 and body["name"] == "public" and body["strip_path_prefix"] is True
    assert admin_gw.request("GET", "/pub/hello")[0] == 200  # in force on return
    status, body = admin(admin_gw, "PUT", "/admin/services/public/routes/extra",
                         {"paths": ["/extra"], "methods": ["POST"]})
    assert status == 200 and body["methods"] == ["POST"]
    status, body = admin(admin_gw, "GET", "/admin/services/public/routes/extra")
    assert status == 200 and body["paths"] == ["/extra"]
    assert admin(admin_gw, "DELETE", "/admin/services/public/routes/extra")[0] == 200
    assert admin(admin_gw, "GET", "/admin/services/public/routes/extra")[0] == 404
    assert [s["name"] for s in admin(admin_gw, "GET", "/admin/services")[1]] == ["api", "public"]
    assert admin(admin_gw, "DELETE", "/admin/services/public")[0] == 200
    assert admin_gw.request("GET", "/pub/hello")[0] == 401  # now the jwt service's /*
    assert admin(admin_gw, "GET", "/admin/services/public")[0] == 404


def test_changes_made_at_once_are_all_kept(admin_gw):
    """Each change reads the configuration, edits it and commits it: twenty at once, each
    answered 200, are twenty routes, in the admin API and in the file."""
    names = [f"r{i}" for i in range(20)]

    def put(name):
        return admin(admin_gw, "PUT", f"/admin/services/api/routes/{name}",
                     {"paths": [f"/{name}"]})
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(put, names))
    assert [status for status, _ in answers] == [200] * len(names)
    routes = {r["name"] for r in admin(admin_gw, "GET", "/admin/services/api")[1]["routes"]}
    assert routes == {"r", *names}
    stored = yaml.safe_load(admin_gw.config_path.read_text())
    assert {r["name"] for r in stored["services"][0]["routes"]} == routes


def test_a_service_configuring_a_shared_node_pool_differently_is_refused(admin_gw, upstream):
    status, body = admin(admin_gw, "PUT", "/admin/services/second", {
        "upstream": {"url": upstream.url, "keepalive_pool": {"size": 8}},
        "routes": [{"name": "r", "paths": ["/second"]}]})
    assert status == 400 and body["path"] == "services[1].upstream.keepalive_pool"
    assert "service 'second' and service 'api'" in body["error_msg"]
    status, _ = admin(admin_gw, "PUT", "/admin/services/second", {
        "upstream": {"url": upstream.url}, "routes": [{"name": "r", "paths": ["/second"]}]})
    assert status == 200  # the same (default) settings


def test_a_key_twice_in_a_body_is_refused(admin_gw):
    """As in a configuration file: the last would win, unseen (here: no services)."""
    status, body = admin(admin_gw, "PUT", "/admin/config",
                         b'{"services": [], "consumers": [], "services": []}')
    assert (status, body["error_msg"]) == (400, "body: duplicate key 'services'")
    assert len(admin(admin_gw, "GET", "/admin/services")[1]) == 1


def test_a_body_nested_too_deeply_is_refused_not_a_traceback(admin_gw):
    """orjson parses 1,010 levels; the duplicate-key check's json.loads recursed out."""
    start = len(admin_gw.log)
    status, body = admin(admin_gw, "PUT", "/admin/config", b"[" * 1010 + b"]" * 1010)
    assert (status, body["error_msg"]) == (400, "body: is nested too deeply")
    assert admin(admin_gw, "GET", "/admin/status")[0] == 200  # its log line came first
    assert "Traceback" not in "".join(admin_gw.log[start:])


@pytest.mark.parametrize("body", [
    {"services": [], "consumers": 5},  # iterated for "***" secrets before validation
    {"consumers": [{"username": ["jack"], "credentials": [{"key": "k", "secret": "***"}]}]},
    {"consumers": [{"username": {"a": 1}, "credentials": [{"key": "k", "secret": "***"}]}]},
])
def test_a_body_of_the_wrong_shape_beside_a_masked_secret_is_400_naming_the_field(admin_gw,
                                                                                  body):
    start = len(admin_gw.log)
    status, answer = admin(admin_gw, "PUT", "/admin/config", body)
    assert status == 400 and answer["path"] in ("consumers", "consumers[0].username")
    assert admin(admin_gw, "GET", "/admin/status")[0] == 200
    assert "Traceback" not in "".join(admin_gw.log[start:])


@pytest.mark.parametrize("route", [{"paths": ["/a", "/a"]},
                                   {"paths": ["/a"], "methods": ["GET", "GET"]}])
def test_a_value_twice_in_one_list_is_a_bad_body_not_a_conflict(admin_gw, route):
    status, body = admin(admin_gw, "PUT", "/admin/services/api/routes/twice", route)
    assert status == 400 and "duplicate value" in body["error_msg"]


def test_a_ca_file_no_file_can_be_named_by_is_400_naming_it(admin_gw, upstream):
    """A NUL in a path: ssl raises ValueError, not OSError."""
    status, body = admin(admin_gw, "PUT", "/admin/services/s2", {
        "upstream": {"url": upstream.url, "tls": {"ca_file": "/etc/ssl/certs\u0000x"}},
        "routes": []})
    assert (status, body["path"]) == (400, "services[1].upstream.tls.ca_file")
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jack/credentials/idp", {
        "key": "idp-key", "jwks_uri": "https://idp.test/keys", "jwks_ca_file": "a\u0000b"})
    assert status == 400 and body["path"].endswith(".jwks_ca_file")


@pytest.mark.parametrize("ows", [b" ", b"\t", b"  \t "])
def test_the_key_followed_by_whitespace_is_the_key(admin_gw, ows):
    """RFC 9112 5: the whitespace around a field value is no part of it (llhttp leaves
    what follows the value on it)."""
    conn = RawClient(admin_gw.admin_port, 10)
    conn.send(b"GET /admin/status HTTP/1.1\r\nHost: a\r\nX-API-KEY: " + KEY.encode() + ows
              + b"\r\nConnection: close\r\n\r\n")
    assert conn.response()[0] == 200
    wrong = RawClient(admin_gw.admin_port, 10)
    wrong.send(b"GET /admin/status HTTP/1.1\r\nHost: a\r\nX-API-KEY: " + KEY.encode()
               + b"x" + ows + b"\r\nConnection: close\r\n\r\n")
    assert wrong.response()[0] == 401


def test_a_secret_stored_is_the_one_read_back_from_the_file(admin_gw):
    """The file rewritten holds what the admin API took: PyYAML wrote a NEL (U+0085) as it
    is and read it back as a line break, folded to a space, so after a SIGHUP or a restart
    the credential had another secret and refused every token signed with its own."""
    import signal
    secret = "nel-secret-" + "0123456789abcdef" * 2 + "\u0085" + "end"
    assert admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": [
        {"id": "jill-jwt", "key": "jill-key", "secret": secret}]})[0] == 200
    token = pyjwt.encode({"key": "jill-key"}, secret)
    assert admin_gw.request("GET", "/x", headers={"Authorization": token})[0] == 200
    start = len(admin_gw.log)
    admin_gw.signal(signal.SIGHUP)  # the file, read again: what a restart would serve
    admin_gw.wait_for_log("configuration reloaded", start=start)
    assert admin_gw.request("GET", "/x", headers={"Authorization": token})[0] == 200


def test_a_change_the_file_cannot_take_is_503_and_changes_nothing(admin_gw):
    """The file cannot be replaced (here a folder stands in its place): no traceback and a
    500, but a 503 saying so, as a revocation gets; the configuration in force stays."""
    path = admin_gw.config_path
    path.unlink()
    path.mkdir()
    (path / "in-the-way").write_text("")
    start = len(admin_gw.log)
    status, body = admin(admin_gw, "PUT", "/admin/services/api/routes/new", {"paths": ["/new"]})
    assert status == 503 and body["error_msg"].startswith(f"cannot write {path}: ")
    assert [r["name"] for r in admin(admin_gw, "GET", "/admin/services/api")[1]["routes"]] == [
        "r"]
    assert "Traceback" not in "".join(admin_gw.log[start:])


def test_invalid_body_names_the_field(admin_gw):
    status, body = admin(admin_gw, "PUT", "/admin/services/bad", {
        "upstream": {"url": "http://a"}, "routes": [{"name": "r", "paths": ["nope"]}]})
    assert status == 400
    assert body["path"] == "services[1].routes[0].paths[0]"
    assert 'must start with "/"' in body["error_msg"]
    assert admin(admin_gw, "PUT", "/admin/services/x", b"{not json")[0] == 400
    assert admin(admin_gw, "PUT", "/admin/services/x", ["a list"])[0] == 400
    status, body = admin(admin_gw, "PUT", "/admin/services/x", {"name": "y"})
    assert status == 400 and body["path"] == "name"


def test_unknown_objects_are_404(admin_gw):
    for path in ("/admin/services/nope", "/admin/consumers/nope", "/admin/nothing",
                 "/admin/services/api/routes/nope"):
        assert admin(admin_gw, "GET", path)[0] == 404
    for path, missing in (("/admin/services/nope", "service"),
                          ("/admin/services/nope/routes/r", "service"),
                          ("/admin/services/api/routes/nope", "route"),
                          ("/admin/consumers/nope", "consumer"),
                          ("/admin/consumers/nope/credentials/c", "consumer"),
                          ("/admin/consumers/jack/credentials/nope", "credential")):
        status, body = admin(admin_gw, "DELETE", path)
        assert status == 404 and body["error_msg"] == f"no {missing} 'nope'", path
    assert admin(admin_gw, "PUT", "/admin/consumers/nope/credentials/c", {"key": "k"})[0] == 404


def test_a_credential_is_deleted_alone(admin_gw):
    assert admin(admin_gw, "PUT", "/admin/consumers/jack/credentials/second",
                 {"key": "second-key", "secret": "s" * 40})[0] == 200
    status, body = admin(admin_gw, "DELETE", "/admin/consumers/jack/credentials/second")
    assert status == 200 and body == {"deleted": "second"}
    creds = admin(admin_gw, "GET", "/admin/consumers/jack")[1]["credentials"]
    assert [c["id"] for c in creds] == ["jack-jwt"]
    token = pyjwt.encode({"key": "second-key"}, "s" * 40)
    assert admin_gw.request("GET", "/x", headers={"Authorization": token})[0] == 401


def test_names_in_the_path_are_percent_decoded(admin_gw):
    # a credential id may hold characters a URL must encode (a browser always does)
    cred_id = "<b>a/b#1%</b>"
    path = "/admin/consumers/jack/credentials/%3Cb%3Ea%2Fb%231%25%3C%2Fb%3E"
    status, body = admin(admin_gw, "PUT", path, {"key": "odd-key", "secret": "s" * 40})
    assert status == 200 and body["id"] == cred_id
    creds = admin(admin_gw, "GET", "/admin/consumers/%6Aack")[1]["credentials"]
    assert [c["id"] for c in creds] == ["jack-jwt", cred_id]
    assert admin(admin_gw, "POST", path + "/token", {"ttl": 60})[0] == 200
    assert admin(admin_gw, "DELETE", path) == (200, {"deleted": cred_id})


def test_duplicate_key_is_a_conflict(admin_gw):
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jill", {
        "credentials": [{"id": "jill-jwt", "key": "jack-key", "secret": "x" * 32}]})
    assert status == 409 and "duplicate key 'jack-key'" in body["error_msg"]


def test_generated_secret_is_returned_once_and_works(admin_gw):
    assert admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": []})[0] == 200
    status, cred = admin(admin_gw, "PUT", "/admin/consumers/jill/credentials/jill-jwt",
                         {"key": "jill-key"})
    assert status == 200 and len(cred["secret"]) == 43  # 32 random bytes, base64url
    token = pyjwt.encode({"key": "jill-key"}, cred["secret"])
    status, _, body = admin_gw.request("GET", "/x", headers={"Authorization": token})
    assert status == 200 and dict(json.loads(body)["headers"])["x-consumer-username"] == "jill"
    status, body = admin(admin_gw, "GET", "/admin/consumers/jill")
    assert body["credentials"][0]["secret"] == "***"


def test_token_endpoint(admin_gw):
    status, body = admin(admin_gw, "POST", "/admin/consumers/jack/credentials/jack-jwt/token",
                         {"ttl": 60, "claims": {"user": "jack", "age": 18}})
    assert status == 200
    claims = pyjwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["age"] == 18 and claims["exp"] - claims["iat"] == 60
    assert admin_gw.request("GET", "/x", headers={"Authorization": body["token"]})[0] == 200
    assert admin(admin_gw, "POST", "/admin/consumers/jack/credentials/nope/token", {})[0] == 404
    for bad in ({"ttl": "soon"}, {"ttl": True}, {"ttl": 0}, {"ttl": 10 ** 20}, {"expires": True},
                {"expires": "tomorrow"}, {"expires": 1e300}, {"expires": -5}, {"claims": []},
                {"ttl": 60, "expires": time.time() + 60}):  # two lifetimes: which one?
        status, body = admin(admin_gw, "POST",
                             "/admin/consumers/jack/credentials/jack-jwt/token", bad)
        assert status == 400 and body["path"] == next(iter(bad)), bad
    for claims, says in (({"sub": 42}, "must be a string"), ({"jti": ["a"]}, "must be a string"),
                         ({"iat": "yesterday"}, "must be a number"),  # refused if issued
                         ({"exp": 1893456000}, "set by fastgw: give the expiry as expires"),
                         ({"key": "someone-else"}, "set by fastgw: the key")):  # replaced
        status, body = admin(admin_gw, "POST",
                             "/admin/consumers/jack/credentials/jack-jwt/token", {"claims": claims})
        assert status == 400 and body["path"] == f"claims.{next(iter(claims))}", claims
        assert body["error_msg"].startswith(f"{body['path']}: {says}"), body
        assert "--claim" not in body["error_msg"]
    for raw in (b"[]", b"0", b"\"ttl\""):  # a body, but no object (an empty one is {})
        status, body = admin(admin_gw, "POST",
                             "/admin/consumers/jack/credentials/jack-jwt/token", raw)
        assert status == 400 and body["error_msg"] == "body must be a JSON object", raw


def test_token_endpoint_refuses_an_expiry_in_the_past(admin_gw):
    """A token that would be expired as it is made is not issued: 400 at expires (it was
    issued, and refused wherever it was sent)."""
    path = "/admin/consumers/jack/credentials/jack-jwt/token"
    for expires in (time.time() - 3600, 0, int(time.time())):
        status, body = admin(admin_gw, "POST", path, {"expires": expires})
        assert status == 400 and body["path"] == "expires", (expires, body)
        assert "in the past" in body["error_msg"]
    status, body = admin(admin_gw, "POST", path, {"expires": int(time.time()) + 60})
    assert status == 200
    assert admin_gw.request("GET", "/x", headers={"Authorization": body["token"]})[0] == 200

def test_deleted_consumer_token_refused_on_every_worker_within_a_second(admin_gw):
    token = pyjwt.encode({"key": "jack-key"}, SECRET).encode()
    request = b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: " + token + b"\r\n\r\n"
    # kept open, each connection stays with its worker; every worker verifies and caches
    conns, owners = connections_on_both_workers(admin_gw, request)
    try:
        assert set(owners) == set(admin_gw.worker_pids())
        for s in conns:  # now from the cache
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert admin(admin_gw, "DELETE", "/admin/consumers/jack")[0] == 200
        for s in conns:
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 401")
        assert time.monotonic() - started < 1.0
    finally:
        for s in conns:
            s.close()


def test_a_stopped_worker_does_not_hold_up_an_answer_and_is_named_until_it_catches_up(
        admin_gw, upstream):
    """A worker stopped (SIGSTOP) reads no change until it is continued: the answer comes
    once the other worker has it in force, a second later at most (it came after 5 s), and
    GET /admin/status names the stopped one until it has caught up."""
    running, stopped = admin_gw.worker_pids()
    os.kill(stopped, signal.SIGSTOP)
    try:
        began = time.monotonic()
        status, _ = admin(admin_gw, "PUT", "/admin/services/public", {
            "upstream": {"url": upstream.url}, "path_prefix": "/pub",
            "routes": [{"name": "all", "paths": ["/*"]}]})
        took = time.monotonic() - began
        assert status == 200 and took < 3, took
        assert admin_gw.request("GET", "/pub/hello")[0] == 200  # (the running one accepts)
        assert admin(admin_gw, "GET", "/admin/status")[1]["workers_behind"] == [stopped]
        line = admin_gw.wait_for_log("not every worker acknowledged revision")
        assert f"(pid {stopped})" in line and f"(pid {running})" not in line
    finally:
        os.kill(stopped, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while admin(admin_gw, "GET", "/admin/status")[1]["workers_behind"]:
        assert time.monotonic() < deadline, "the continued worker never caught up"
        time.sleep(0.05)


def test_changes_persist_across_restart(admin_gw, upstream, gateway_factory):
    admin(admin_gw, "PUT", "/admin/consumers/kept", {"credentials": [
        {"id": "kept-jwt", "key": "kept-key", "secret": "k" * 40}]})
    saved = yaml.safe_load(admin_gw.config_path.read_text())
    assert "kept" in [c["username"] for c in saved["consumers"]]
    admin_gw.stop()
    again = gateway_factory(saved, env={"FASTGW_WORKERS": "1"})
    token = pyjwt.encode({"key": "kept-key"}, "k" * 40)
    assert again.request("GET", "/x", headers={"Authorization": token})[0] == 200


def test_a_change_to_a_configuration_reached_by_a_symlink_is_written_where_it_leads(
        upstream, gateway_factory, tmp_path):
    """As a deployment links it (ConfigMap, /etc/alternatives): the link stays, the file it
    leads to gets the change (the link was replaced by a file of its own)."""
    gw = gateway_factory({"services": [], "consumers": []}, start=False, env={
        "FASTGW_WORKERS": "1", "FASTGW_ADMIN_KEY": KEY,
        "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    real = tmp_path / "real"
    real.mkdir()
    gw.config_path.rename(real / "fastgw.yaml")
    gw.config_path.symlink_to(real / "fastgw.yaml")
    gw.start()
    gw.wait_for_log("admin API on")
    assert admin(gw, "PUT", "/admin/consumers/linked", {"credentials": [
        {"id": "linked-jwt", "key": "linked-key", "secret": "l" * 40}]})[0] == 200
    assert gw.config_path.is_symlink()
    saved = yaml.safe_load((real / "fastgw.yaml").read_text())
    assert [c["username"] for c in saved["consumers"]] == ["linked"]


def test_a_put_with_if_none_match_star_creates_and_never_replaces(admin_gw):
    """RFC 9110 13.1.2, what the console's Create and Add send: an object that exists is
    412 at its name and stays as it was (a plain PUT replaces it: "Add Route" with a
    protected route's name made it an open one)."""
    only = {"If-None-Match": "*"}
    before = admin(admin_gw, "GET", "/admin/config")[1]
    for path, body, field in (
            ("/admin/services/api", {"upstream": {"url": "http://127.0.0.1:9"}}, "name"),
            ("/admin/services/api/routes/r", {"paths": ["/open"]}, "name"),
            ("/admin/consumers/jack", {"credentials": []}, "username"),
            ("/admin/consumers/jack/credentials/jack-jwt", {"key": "jack-key"}, "id")):
        status, body = admin(admin_gw, "PUT", path, body, headers=only)
        assert (status, body["path"]) == (412, field) and "exists already" in body["error_msg"]
    assert admin(admin_gw, "GET", "/admin/config")[1] == before
    assert admin(admin_gw, "PUT", "/admin/services/api/routes/new", {"paths": ["/new"]},
                 headers=only)[0] == 200
    assert admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": []},
                 headers=only)[0] == 200
    status, cred = admin(admin_gw, "PUT", "/admin/consumers/jill/credentials/jill-jwt",
                         {"key": "jill-key"}, headers=only)
    assert status == 200 and len(cred["secret"]) >= 32


def test_put_config_keeps_masked_secrets(admin_gw):
    status, conf = admin(admin_gw, "GET", "/admin/config")
    conf["services"][0]["routes"][0]["paths"] = ["/only"]
    status, body = admin(admin_gw, "PUT", "/admin/config", conf)
    assert status == 200 and body["consumers"][0]["credentials"][0]["secret"] == "***"
    token = pyjwt.encode({"key": "jack-key"}, SECRET)
    assert admin_gw.request("GET", "/only", headers={"Authorization": token})[0] == 200
    assert admin_gw.request("GET", "/x", headers={"Authorization": token})[0] == 404
    assert admin(admin_gw, "GET", "/admin/status")[1]["revision"] == 2


@pytest.mark.parametrize("key", [[1], {"a": 1}, 5])
def test_a_masked_secret_beside_a_key_that_is_no_string_is_400(admin_gw, key):
    """The key names the credential (its default id): one that is a list was looked up
    as an id, and answered 500."""
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jack",
                         {"credentials": [{"key": key, "secret": "***"}]})
    assert status == 400 and body["error_msg"] == "secret: '***' is not a value", body


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/admin/config", "GET, PUT"),
    ("PATCH", "/admin/services/api", "GET, PUT, DELETE"),
    ("GET", "/admin/consumers/jack/credentials/jack-jwt", "PUT, DELETE"),
    ("PUT", "/admin/revocations", "GET, POST"),
])
def test_a_method_a_path_does_not_take_is_405_with_allow(admin_gw, method, path, allow):
    """RFC 9110 15.5.6: a 405 names the methods the path takes (POST /admin/config was a
    404, as if the path did not exist); a path the API does not have stays 404."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_gw.admin_port, timeout=10)
    try:
        conn.request(method, path, body=b"{}", headers={"X-API-KEY": KEY})
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("allow")) == (405, allow)
        assert json.loads(resp.read()) == {"error_msg": "method not allowed"}
    finally:
        conn.close()
    assert admin(admin_gw, "POST", "/admin/nothing", {})[0] == 404
