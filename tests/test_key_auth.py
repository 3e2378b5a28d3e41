"""The key-auth plugin through a real gateway (SPEC section 11), and with jwt-auth on one route."""

from __future__ import annotations

import json
import signal
import time
from types import SimpleNamespace

import jwt as pyjwt
import pytest
import yaml

from conftest import free_port, service
from fastgw.config import ConfigError
from fastgw.config.schema import validate
from jwt_kit import PluginSide
from test_access_log import wait_for_lines
from test_admin import KEY, admin
from test_cluster import PREFIX, etcd, push, start_node  # noqa: F401 (etcd, start_node: fixtures)
from test_jwt_auth import SECRET, assert_400_and_closed, fastgw, raw_get, seen_headers
from test_jwt_auth import token as jwt_token

API_KEY = "jack-api-key-0123456789abcdef0123"  # a secret: must appear nowhere it should not
OTHER_KEY = "jill-api-key-fedcba9876543210fedc"


def key_consumer(username="jack", key=API_KEY, **cred):
    return {"username": username, "credentials": [{"type": "key-auth", "key": key, **cred}]}


def config(upstream, plugin=None, consumers=None, plugins=None):
    plugins = plugins if plugins is not None else {"key-auth": plugin or {}}
    return {"services": [service(upstream.url, [{"name": "r", "paths": ["/*"],
                                                 "plugins": plugins}])],
            "consumers": consumers if consumers is not None else [key_consumer()]}


@pytest.fixture
def key_gateway(upstream, gateway_factory):
    return gateway_factory(config(upstream))


def get(gw, path="/anything", **headers):
    return gw.request("GET", path, headers=headers)


def assert_401(result, message: str):
    status, headers, body = result
    assert status == 401
    assert json.loads(body) == {"message": message}
    assert headers["content-type"] == "application/json"


# ---------------------------------------------------------------- the rules of SPEC 11

def test_missing_key_is_401_and_nothing_goes_upstream(key_gateway, upstream):
    before = len(upstream.requests)
    assert_401(get(key_gateway), "Missing API key in request")
    assert_401(get(key_gateway, "/anything?other=1"), "Missing API key in request")
    assert_401(get(key_gateway, "/anything?apikey="), "Missing API key in request")
    assert len(upstream.requests) == before


@pytest.mark.parametrize("bad", ["wrong", API_KEY[:-1], API_KEY + "x", API_KEY.upper(), "x" * 300])
def test_unknown_key_is_401(key_gateway, upstream, bad):
    before = len(upstream.requests)
    assert_401(get(key_gateway, apikey=bad), "Invalid API key in request")
    assert_401(get(key_gateway, f"/anything?apikey={bad}"), "Invalid API key in request")
    assert len(upstream.requests) == before


def test_every_401_carries_a_key_challenge(key_gateway):
    """RFC 9110 11.6.1: a 401 carries WWW-Authenticate (it had none); the scheme Kong's
    key-auth sends, with jwt-auth's realm."""
    for result in (get(key_gateway), get(key_gateway, apikey="wrong")):
        assert result[0] == 401
        assert result[1]["www-authenticate"] == 'Key realm="fastgw"'


def test_key_in_header_reaches_upstream_with_consumer_headers_of_its_own(key_gateway):
    status, _, body = get(key_gateway, apikey=API_KEY, **{
        "X-Consumer-Username": "admin", "X_Credential_Identifier": "forged"})
    assert status == 200
    seen = json.loads(body)["headers"]
    assert [v for n, v in seen if n.replace("_", "-") == "x-consumer-username"] == ["jack"]
    assert [v for n, v in seen if n.replace("_", "-") == "x-credential-identifier"] == [
        "jack-key-auth"]  # the credential's id, never its key
    assert dict(seen)["apikey"] == API_KEY  # kept without hide_credentials


def test_key_in_query_and_percent_encoded(key_gateway):
    status, _, body = get(key_gateway, f"/anything?a=1&apikey={API_KEY}")
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "jack"
    assert json.loads(body)["target"] == f"/anything?a=1&apikey={API_KEY}"
    encoded = "".join(f"%{ord(c):02X}" for c in API_KEY)
    status, _, body = get(key_gateway, f"/anything?%61pikey={encoded}")
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "jack"


@pytest.mark.parametrize("value", ["{k}  ", "  {k}", "{k}\t", " \t{k} \t"])
def test_whitespace_around_the_key_is_not_part_of_it(key_gateway, value):
    status, _, body, client = raw_get(key_gateway, "apikey: " + value.format(k=API_KEY))
    client.close()
    assert status == 200, body


def test_the_header_wins_over_the_query(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, consumers=[key_consumer(), key_consumer(
        "jill", OTHER_KEY)]))
    status, _, body = get(gw, f"/anything?apikey={OTHER_KEY}", apikey=API_KEY)
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "jack"
    # a wrong header is not rescued by a good query parameter
    assert_401(get(gw, f"/anything?apikey={API_KEY}", apikey="wrong"),
               "Invalid API key in request")
    # the query is not read at all when the header has the key (its repeats neither)
    status, _, body = get(gw, "/anything?apikey=a&apikey=b", apikey=API_KEY)
    assert status == 200 and json.loads(body)["target"] == "/anything?apikey=a&apikey=b"


def test_custom_header_and_query_names(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"header": "X-API-Key", "query": "token"}))
    assert get(gw, **{"X-API-Key": API_KEY})[0] == 200
    assert get(gw, f"/anything?token={API_KEY}")[0] == 200
    assert_401(get(gw, apikey=API_KEY), "Missing API key in request")  # defaults not read
    assert_401(get(gw, f"/anything?apikey={API_KEY}"), "Missing API key in request")


def test_a_key_header_fastgw_also_reads_itself_is_read_as_any_other(upstream, gateway_factory):
    """The fields fastgw reads itself are not in a plain request's fields dict: a key in
    one of them is looked for in the request's fields one by one, with or without a body."""
    gw = gateway_factory(config(upstream, {"header": "Connection"}))
    for method, body in (("GET", None), ("POST", b"hello")):
        assert_401(gw.request(method, "/anything", headers={"Connection": "keep-alive"},
                              body=body), "Invalid API key in request")
        assert_401(gw.request(method, "/anything", body=body), "Missing API key in request")


def test_hide_credentials_leaves_no_copy_where_the_key_was_read(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"header": "X-API-Key", "hide_credentials": True}))
    cases = [  # (header lines, path) -> the target the upstream must see
        ([f"X-API-Key: {API_KEY}"], "/anything?a=1", "/anything?a=1"),
        ([f"x_api_key: {API_KEY}"], "/anything", "/anything"),  # hidden under its spelling
        ([], f"/anything?a=1&apikey={API_KEY}&b=2", "/anything?a=1&b=2"),
        ([], f"/anything?%61pikey={API_KEY}", "/anything"),
    ]
    for lines, path, target in cases:
        status, _, body, client = raw_get(gw, *lines, path=path)
        client.close()
        assert status == 200, (lines, path, body)
        seen = json.loads(body)
        assert seen["target"] == target
        assert seen_headers(body)["x-consumer-username"] == "jack"
        assert API_KEY not in body.decode()


def test_anonymous_consumer_only_when_no_key(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"anonymous_consumer": "guest"},
                                consumers=[key_consumer(), {"username": "guest"}]))
    status, _, body = get(gw, **{"X-Consumer-Username": "admin"})
    headers = seen_headers(body)
    assert status == 200 and headers["x-consumer-username"] == "guest"
    assert "x-credential-identifier" not in headers
    assert_401(get(gw, apikey="wrong"), "Invalid API key in request")
    status, _, body = get(gw, apikey=API_KEY)
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "jack"


# ---------------------------------------------------------------- a key given twice

def test_header_twice_under_any_spelling_is_refused(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"header": "X-API-Key"}))
    before = len(upstream.requests)
    for lines in ([f"X-API-Key: {API_KEY}", f"x-api-key: {API_KEY}"],
                  [f"X-API-Key: {API_KEY}", "X_Api_Key: forged"],
                  ["x_api-KEY: forged", f"X-API-Key: {API_KEY}"],
                  ["X-API-Key:", f"X-API-Key: {API_KEY}"],  # an empty one counts
                  [f"X-API-Key: {API_KEY}", "X-API-Key:"],
                  ["X-API-Key:", "X-API-Key:"]):
        assert_400_and_closed(raw_get(gw, *lines), upstream, before)


def test_default_header_twice_is_refused(key_gateway, upstream):
    before = len(upstream.requests)
    assert_400_and_closed(raw_get(key_gateway, f"apikey: {API_KEY}", "APIKEY: forged"),
                          upstream, before)
    assert_400_and_closed(raw_get(key_gateway, "apikey:", "apikey:", path=f"/a?apikey={API_KEY}"),
                          upstream, before)


@pytest.mark.parametrize("query", [
    "apikey={k}&apikey=forged", "apikey={k}&a=1&apikey={k}", "apikey={k}&%61pikey=forged",
    "%61%70%69%6B%65%79=forged&apikey={k}", "apikey=&apikey={k}", "apikey={k}&apikey",
    "apikey={k}&apikey=", "a=1;apikey=forged&apikey={k}", "apikey[]=forged&apikey={k}",
])
def test_query_parameter_twice_is_refused(key_gateway, upstream, query):
    before = len(upstream.requests)
    path = "/anything?" + query.format(k=API_KEY)
    assert_400_and_closed(raw_get(key_gateway, path=path), upstream, before)


# ---------------------------------------------------------------- both plugins on one route

def both(upstream, **plugins):
    return config(upstream, plugins={"key-auth": plugins.get("key", {}),
                                     "jwt-auth": plugins.get("jwt", {})},
                  consumers=[key_consumer("keyholder"),
                             {"username": "jack", "credentials": [
                                 {"key": "user-key", "secret": SECRET}]}])


def test_both_plugins_must_pass_jwt_auth_first(upstream, gateway_factory):
    gw = gateway_factory(both(upstream))
    t = jwt_token(exp=int(time.time()) + 60)
    before = len(upstream.requests)
    # jwt-auth (priority 2510) answers before key-auth (2500) is asked
    status, headers, body = get(gw)
    assert status == 401 and json.loads(body) == {"message": "Missing JWT token in request"}
    status, _, body = get(gw, apikey=API_KEY)
    assert status == 401 and json.loads(body) == {"message": "Missing JWT token in request"}
    assert_401(get(gw, Authorization=t), "Missing API key in request")
    assert_401(get(gw, Authorization=t, apikey="wrong"), "Invalid API key in request")
    assert len(upstream.requests) == before
    status, _, body = get(gw, Authorization=t, apikey=API_KEY)
    assert status == 200
    seen = json.loads(body)["headers"]
    # the later plugin's identity replaces the earlier one's: one of each header
    assert [v for n, v in seen if n == "x-consumer-username"] == ["keyholder"]
    assert [v for n, v in seen if n == "x-credential-identifier"] == ["keyholder-key-auth"]


def test_an_anonymous_jwt_consumer_is_replaced_by_the_key_holder(upstream, gateway_factory):
    conf = both(upstream, jwt={"anonymous_consumer": "jack"})
    gw = gateway_factory(conf)
    status, _, body = get(gw, apikey=API_KEY)
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "keyholder"
    assert_401(get(gw), "Missing API key in request")


def test_an_anonymous_key_consumer_never_replaces_a_verified_jwt_one(upstream, gateway_factory):
    gw = gateway_factory(both(upstream, key={"anonymous_consumer": "keyholder"}))
    status, _, body = get(gw, Authorization=jwt_token(exp=int(time.time()) + 60))
    seen = json.loads(body)["headers"]
    assert status == 200
    assert [v for n, v in seen if n == "x-consumer-username"] == ["jack"]
    assert [v for n, v in seen if n == "x-credential-identifier"] == ["user-key"]


def test_routes_run_plugins_by_priority_whatever_their_order():
    from fastgw.config.compile import Snapshot
    from fastgw.plugins import PLUGINS, in_order, jwt_auth, key_auth, new_states
    from fastgw.upstream import PoolRegistry
    assert (PLUGINS["jwt-auth"].PRIORITY, PLUGINS["key-auth"].PRIORITY) == (2510, 2500)
    for plugins in ({"key-auth": {}, "jwt-auth": {}}, {"jwt-auth": {}, "key-auth": {}}):
        assert [name for name, _ in in_order(plugins)] == ["jwt-auth", "key-auth"]
        conf = validate({"services": [service("http://127.0.0.1:9", [
            {"name": "r", "paths": ["/*"], "plugins": plugins}])]})
        snapshot = Snapshot(conf, 1, PoolRegistry(), new_states(SimpleNamespace(
            jwt_cache_size=8)))
        route = snapshot.router.match(b"a", b"/x", b"GET")
        assert [type(p) for p in route.plugins] == [jwt_auth.JwtAuth, key_auth.KeyAuth]


# ---------------------------------------------------------------- credentials

def test_credential_id_defaults_never_derive_from_the_key():
    conf = validate({"consumers": [{"username": "jack", "credentials": [
        {"type": "key-auth", "key": API_KEY}, {"key": "jwt-key", "secret": SECRET},
        {"type": "key-auth", "key": OTHER_KEY}, {"id": "mine", "type": "key-auth", "key": "k3"}]}]})
    assert [c["id"] for c in conf["consumers"][0]["credentials"]] == [
        "jack-key-auth", "jwt-key", "jack-key-auth-2", "mine"]


def test_keys_are_indexed_by_a_keyed_hash_and_unchanged_credentials_kept():
    from fastgw.plugins import key_auth
    consumers = validate({"consumers": [key_consumer(), key_consumer("jill", OTHER_KEY)]})[
        "consumers"]
    index = key_auth.index_credentials(consumers, None)
    assert API_KEY.encode() not in index and API_KEY not in index
    jill = next(c for c in index.values() if c.username == "jill")
    changed = validate({"consumers": [key_consumer(key="changed-key"),
                                      key_consumer("jill", OTHER_KEY)]})["consumers"]
    again = key_auth.index_credentials(changed, index)
    assert jill in again.values() and len(again) == 2
    plugin = key_auth.build(validate({"services": [service("http://a", [
        {"name": "r", "paths": ["/"], "plugins": {"key-auth": {}}}])]})["services"][0]["routes"][
        0]["plugins"]["key-auth"], SimpleNamespace(credentials={"key-auth": again}))
    ex = PluginSide([(b"apikey", API_KEY.encode())])
    assert plugin.access(ex) is key_auth.INVALID_KEY and ex.consumer is None
    ex = PluginSide([(b"apikey", b"changed-key")])
    assert plugin.access(ex) is None and ex.consumer.username == "jack"
    assert ex.consumer.head == (b"x-consumer-username: jack\r\n"
                                b"x-credential-identifier: jack-key-auth\r\n")


def test_key_changed_by_reload_is_refused(upstream, key_gateway):
    assert get(key_gateway, apikey=API_KEY)[0] == 200
    key_gateway.write_config(config(upstream, consumers=[key_consumer(key=OTHER_KEY)]))
    start = len(key_gateway.log)
    key_gateway.signal(signal.SIGHUP)
    key_gateway.wait_for_log("configuration reloaded", start=start)
    assert_401(get(key_gateway, apikey=API_KEY), "Invalid API key in request")
    assert get(key_gateway, apikey=OTHER_KEY)[0] == 200


def errors_of(conf) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(conf)
    return [f"{path}: {msg}" for path, msg in info.value.errors]


@pytest.mark.parametrize("cred,expected", [
    ({"type": "key-auth"}, "consumers[0].credentials[0].key: is required"),
    ({"type": "key-auth", "key": ""}, "consumers[0].credentials[0].key: must not be empty"),
    ({"type": "key-auth", "key": "has space"}, "consumers[0].credentials[0].key: must be 1 to 256 "
     "visible ASCII characters (the value is not shown)"),
    ({"type": "key-auth", "key": "k\nX-Injected: 1"}, "consumers[0].credentials[0].key: must be"),
    ({"type": "key-auth", "key": "k", "secret": "s"}, "consumers[0].credentials[0].secret: "
     "unknown key"),
    ({"type": "key-auth", "key": 42}, "consumers[0].credentials[0].key: must be a string"),
    ({"type": "basic-auth", "key": "k"}, "consumers[0].credentials[0].type: unknown credential "
     "type 'basic-auth'"),
])
def test_credential_errors_name_the_field(cred, expected):
    errors = errors_of({"consumers": [{"username": "u", "credentials": [cred]}]})
    assert any(e.startswith(expected) for e in errors), errors
    assert not any("X-Injected" in e or "has space" in e for e in errors)


def test_keys_are_unique_among_key_auth_credentials_and_never_shown():
    errors = errors_of({"consumers": [key_consumer("a"), key_consumer("b")]})
    assert errors == ["consumers[1].credentials[0].key: duplicate key "
                      "(also at consumers[0].credentials[0].key)"]
    # a JWT credential's key is another namespace (and no secret)
    validate({"consumers": [key_consumer("a", "shared"), {"username": "b", "credentials": [
        {"key": "shared", "secret": SECRET}]}]})


@pytest.mark.parametrize("plugin,expected", [
    ({"anonymous_consumer": "ghost"}, "services[0].routes[0].plugins.key-auth.anonymous_consumer: "
     "no consumer named 'ghost'"),
    ({"cookie": "c"}, "services[0].routes[0].plugins.key-auth.cookie: unknown key"),
    ({"header": "bad header"}, "services[0].routes[0].plugins.key-auth.header: must match"),
    ({"header": "a-b-c-d-e-f-g-h-i-j"}, "services[0].routes[0].plugins.key-auth.header: must not "
     "hold more than 8 '-' or '_'"),
    ({"hide_credentials": "yes"}, "services[0].routes[0].plugins.key-auth.hide_credentials: "
     "must be a boolean"),
])
def test_plugin_errors_name_the_field(plugin, expected):
    errors = errors_of({"services": [service("http://a", [
        {"name": "r", "paths": ["/"], "plugins": {"key-auth": plugin}}])]})
    assert any(e.startswith(expected) for e in errors), errors


# ---------------------------------------------------------------- commands

def test_check_accepts_key_auth_and_names_bad_fields(tmp_path, upstream):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config(upstream)))
    out = fastgw("check", str(good))
    assert out.returncode == 0 and "OK (1 services, 1 routes, 1 consumers)" in out.stdout
    for consumers, error in (
            ([key_consumer("a"), key_consumer("b")],
             "consumers[1].credentials[0].key: duplicate key (also at consumers[0]"),
            ([key_consumer("c", key="with space")],
             "consumers[0].credentials[0].key: must be 1 to 256 visible ASCII characters")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(config(upstream, consumers=consumers)))
        out = fastgw("check", str(bad))
        assert out.returncode == 1 and f"{bad}: {error}" in out.stderr
        assert API_KEY not in out.stderr and "with space" not in out.stderr


def test_token_command_refuses_a_key_auth_credential(tmp_path):
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [{"username": "jack", "credentials": [
        {"type": "key-auth", "key": API_KEY}, {"key": "jwt-key", "secret": SECRET}]},
        key_consumer("keyonly", OTHER_KEY)]}))
    out = fastgw("token", "--consumer", "jack", "--credential", "jack-key-auth", config_file=f)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("fastgw: credential 'jack-key-auth' is of type key-auth, which "
                                  "has no tokens: they are issued for jwt-auth credentials")
    out = fastgw("token", "--consumer", "keyonly", config_file=f)
    assert out.returncode == 1
    assert "consumer 'keyonly' has no credential that tokens are issued for" in out.stderr
    # without --credential: the first credential that has tokens, past the key
    out = fastgw("token", "--consumer", "jack", config_file=f)
    assert out.returncode == 0, out.stderr
    assert pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])["key"] == "jwt-key"


def test_keys_never_reach_the_access_log(upstream, gateway_factory, tmp_path):
    log = tmp_path / "access.log"
    gw = gateway_factory(config(upstream), env={"FASTGW_ACCESS_LOG": str(log)})
    assert get(gw, f"/a?apikey={API_KEY}")[0] == 200
    assert get(gw, "/b", apikey=API_KEY)[0] == 200
    assert get(gw, "/c?apikey=wrong-key-value")[0] == 401
    lines = [line.split() for line in wait_for_lines(log, 3)]
    assert [(f[3], f[4], f[10]) for f in lines] == [("/a", "200", "jack"), ("/b", "200", "jack"),
                                                    ("/c", "401", "-")]
    text = log.read_text() + "".join(gw.log)
    assert API_KEY not in text and "wrong-key-value" not in text


def test_a_key_in_the_query_never_reaches_the_error_log(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, plugins={"key-auth": {}, "explode": {}}),
                         plugins=("faulty_plugin",))
    start = len(gw.log)
    assert get(gw, f"/boom?apikey={API_KEY}")[0] == 500  # key-auth passes, then explode
    gw.wait_for_log("RuntimeError", 5, start)
    assert any("GET /boom failed" in line for line in gw.log[start:])
    assert API_KEY not in "".join(gw.log)


def test_auth_failures_are_counted_by_reason(upstream, gateway_factory):
    from test_metrics import scrape, value
    port = free_port()
    gw = gateway_factory(config(upstream), env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}"})
    gw.metrics_port = port
    get(gw)
    get(gw, apikey="wrong")
    get(gw, apikey="wrong")
    after = scrape(gw)
    assert value(after, "fastgw_auth_failures_total", reason="missing_api_key") == 1
    assert value(after, "fastgw_auth_failures_total", reason="invalid_api_key") == 2


# ---------------------------------------------------------------- the admin API

@pytest.fixture
def admin_gw(upstream, gateway_factory):
    gw = gateway_factory(config(upstream), env={
        "FASTGW_ADMIN_KEY": KEY, "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.wait_for_log("admin API on")
    return gw


def test_admin_masks_keys_in_every_get(admin_gw):
    for path in ("/admin/config", "/admin/consumers", "/admin/consumers/jack"):
        status, body = admin(admin_gw, "GET", path)
        assert status == 200 and API_KEY not in json.dumps(body)
    cred = admin(admin_gw, "GET", "/admin/consumers/jack")[1]["credentials"][0]
    assert cred == {"id": "jack-key-auth", "type": "key-auth", "key": "***"}


def test_admin_generates_a_key_returned_once_that_works(admin_gw):
    assert admin(admin_gw, "PUT", "/admin/consumers/jill", {})[0] == 200
    status, cred = admin(admin_gw, "PUT", "/admin/consumers/jill/credentials/jill-key",
                         {"type": "key-auth"})
    assert status == 200 and cred["id"] == "jill-key" and len(cred["key"]) == 43
    status, _, body = get(admin_gw, apikey=cred["key"])
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "jill"
    assert seen_headers(body)["x-credential-identifier"] == "jill-key"
    again = admin(admin_gw, "GET", "/admin/consumers/jill")[1]["credentials"][0]
    assert again["key"] == "***"
    # a given key is kept, and not echoed back
    status, cred = admin(admin_gw, "PUT", "/admin/consumers/jill/credentials/jill-key",
                         {"type": "key-auth", "key": OTHER_KEY})
    assert status == 200 and cred["key"] == "***"
    assert get(admin_gw, apikey=OTHER_KEY)[0] == 200


def test_admin_keeps_a_masked_key_sent_back(admin_gw):
    status, conf = admin(admin_gw, "GET", "/admin/config")
    assert status == 200
    conf["services"][0]["routes"][0]["paths"] = ["/only"]
    status, body = admin(admin_gw, "PUT", "/admin/config", conf)
    assert status == 200 and body["consumers"][0]["credentials"][0]["key"] == "***"
    assert get(admin_gw, "/only", apikey=API_KEY)[0] == 200
    consumer = admin(admin_gw, "GET", "/admin/consumers/jack")[1]
    assert admin(admin_gw, "PUT", "/admin/consumers/jack", consumer)[0] == 200
    assert get(admin_gw, "/only", apikey=API_KEY)[0] == 200
    status, body = admin(admin_gw, "PUT", "/admin/consumers/new", {"credentials": [
        {"type": "key-auth", "key": "***"}]})
    assert status == 400 and body["path"] == "key"


def test_admin_masked_field_of_a_credential_of_another_type_is_refused(admin_gw):
    """"***" stands for the same credential's secret: sent for a credential whose type
    changed, it would take the value of another field (a JWT credential's public key)."""
    assert admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": [
        {"id": "jill-jwt", "key": "jill-jwt", "secret": SECRET}]})[0] == 200
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jill/credentials/jill-jwt",
                         {"type": "key-auth", "key": "***"})
    assert (status, body["error_msg"]) == (400, "key: '***' is not a value")
    assert get(admin_gw, apikey="jill-jwt")[0] == 401
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jack/credentials/jack-key-auth",
                         {"type": "jwt-auth", "key": "k", "secret": "***"})
    assert (status, body["error_msg"]) == (400, "secret: '***' is not a value")
    assert get(admin_gw, apikey=API_KEY)[0] == 200  # nothing changed


@pytest.mark.parametrize("cred,path,message", [
    ({"key": ["a"]}, "consumers[1].credentials[0].key", "must be a string, not a list"),
    ({"id": [], "type": "key-auth", "key": "k-1"}, "consumers[1].credentials[0].id",
     "must be a string, not a list"),
    ({"id": {"x": 1}, "key": "k-2", "secret": "***"}, "secret", "'***' is not a value")])
def test_admin_credential_of_the_wrong_kinds_is_a_400_naming_the_field(admin_gw, cred, path,
                                                                       message):
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": [cred]})
    assert (status, body) == (400, {"error_msg": f"{path}: {message}", "path": path})


def test_admin_duplicate_key_is_a_conflict_that_does_not_show_it(admin_gw):
    status, body = admin(admin_gw, "PUT", "/admin/consumers/jill", {"credentials": [
        {"type": "key-auth", "key": API_KEY}]})
    assert status == 409 and "duplicate key" in body["error_msg"]
    assert API_KEY not in json.dumps(body)


def test_admin_token_endpoint_refuses_a_key_auth_credential(admin_gw):
    status, body = admin(admin_gw, "POST", "/admin/consumers/jack/credentials/jack-key-auth/token",
                         {"ttl": 60})
    assert status == 400
    assert body["error_msg"] == ("credential 'jack-key-auth' is of type key-auth, which has no "
                                 "tokens: they are issued for jwt-auth credentials")


# ---------------------------------------------------------------- etcd


def wait_key_status(gw, key: str, expected: int, within: float) -> None:
    start = time.monotonic()
    while (got := get(gw, apikey=key)[0]) != expected:
        assert time.monotonic() - start < within, f"still {got}, wanted {expected}"
        time.sleep(0.02)


def test_key_auth_in_etcd_mode(tmp_path, etcd, start_node, upstream):  # noqa: F811
    result = push(tmp_path, etcd.endpoint, config(upstream))
    assert result.returncode == 0 and "2 keys written" in result.stdout, result.stderr
    assert etcd.get(f"{PREFIX}/consumers/jack")["credentials"][0] == {
        "id": "jack-key-auth", "type": "key-auth", "key": API_KEY}
    a, b = start_node(etcd.endpoint, "a"), start_node(etcd.endpoint, "b")
    assert get(a, apikey=API_KEY)[0] == 200 and get(b, apikey=API_KEY)[0] == 200

    # a key generated through one node works on the other within a second
    assert admin(a, "PUT", "/admin/consumers/jill", {})[0] == 200
    status, cred = admin(a, "PUT", "/admin/consumers/jill/credentials/jill-key",
                         {"type": "key-auth"})
    assert status == 200 and len(cred["key"]) == 43
    wait_key_status(b, cred["key"], 200, within=1.0)
    assert admin(b, "GET", "/admin/consumers/jill")[1]["credentials"][0]["key"] == "***"

    # a value that does not validate is skipped, named without its key; the last good stays
    etcd.put(f"{PREFIX}/consumers/jack", key_consumer(key="bad key"))
    for node in (a, b):
        line = node.wait_for_log(f"etcd key {PREFIX}/consumers/jack skipped")
        assert "credentials[0].key: must be 1 to 256" in line and "bad key" not in line
    etcd.put(f"{PREFIX}/consumers/mallory", key_consumer("mallory", cred["key"]))
    line = a.wait_for_log(f"etcd key {PREFIX}/consumers/mallory skipped")
    assert "credentials[0].key: duplicate key" in line and cred["key"] not in line
    assert get(a, apikey=API_KEY)[0] == 200

    # the key changed in etcd: the old one is refused everywhere
    etcd.put(f"{PREFIX}/consumers/jack", key_consumer(key=OTHER_KEY))
    for node in (a, b):
        wait_key_status(node, OTHER_KEY, 200, within=1.0)
        assert_401(get(node, apikey=API_KEY), "Invalid API key in request")
    assert API_KEY not in "".join(a.log + b.log)
