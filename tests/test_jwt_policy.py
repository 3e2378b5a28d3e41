"""Token policy on the jwt-auth plugin and `issuer` on a credential: SPEC section 8, with
static keys (the key-set tests in test_jwks.py run the same rules on provider keys)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from conftest import service
from test_jwt_auth import SECRET, assert_401, b64, consumer, get, token

POLICY = {
    "audiences": ["api://orders", "api://other"],
    "required_claims": ["sub"],
    "required_scopes": ["orders:read"],
    "max_lifetime": 3600,
    "claims_to_headers": {"sub": "X-User-Id", "email": "X-User-Email", "roles": "X-Roles",
                          "tenant": "X-Tenant"},
}


def config(upstream, policy=None, cred=None):
    plugin = POLICY if policy is None else policy
    routes = [{"name": "policy", "paths": ["/p/*"], "plugins": {"jwt-auth": plugin}},
              {"name": "plain", "paths": ["/plain/*"], "plugins": {"jwt-auth": {}}}]
    return {"services": [service(upstream.url, routes)],
            "consumers": [consumer(**(cred or {}))]}


@pytest.fixture(scope="module")
def policy_gateway(upstream, tmp_path_factory):
    from conftest import Gateway
    gw = Gateway(tmp_path_factory.mktemp("policy"), config(upstream)).start()
    yield gw
    gw.stop()


def good(**claims):
    base = {"aud": "api://orders", "sub": "user-1", "scope": "profile orders:read",
            "exp": int(time.time()) + 600}
    base.update(claims)
    return token(**{k: v for k, v in base.items() if v is not None})


def signed(claims: dict) -> str:
    """An HS256 token PyJWT would not write (a claim of an unusual type)."""
    head = b64(json.dumps({"alg": "HS256"}).encode()) + "." + b64(json.dumps(
        {"key": "user-key", **claims}).encode())
    return head + "." + b64(hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest())


def headers_seen(body: bytes) -> list:
    return [(n, v) for n, v in json.loads(body)["headers"]]


def assert_answer(result, status: int, message: str, challenge: str):
    got, headers, body = result
    assert (got, json.loads(body)) == (status, {"message": message})
    assert headers["www-authenticate"] == challenge
    assert headers["content-type"] == "application/json"


INVALID = 'Bearer realm="fastgw", error="invalid_token"'
SCOPE = 'Bearer realm="fastgw", error="insufficient_scope"'


def test_a_token_meeting_the_policy_passes(policy_gateway):
    assert get(policy_gateway, "/p/x", Authorization=good())[0] == 200


@pytest.mark.parametrize("aud", ["api://other", ["x", "api://orders"], ["api://other"]])
def test_audience_string_or_list_holding_one_allowed(policy_gateway, aud):
    assert get(policy_gateway, "/p/x", Authorization=good(aud=aud))[0] == 200


@pytest.mark.parametrize("aud", [None, "api://elsewhere", [], ["x", 1], 7, {"a": 1}])
def test_audience_not_allowed_is_403(policy_gateway, aud):
    assert_answer(get(policy_gateway, "/p/x", Authorization=good(aud=aud)), 403,
                  "JWT audience not allowed", INVALID)


def test_missing_required_claim_is_401(policy_gateway):
    assert_answer(get(policy_gateway, "/p/x", Authorization=good(sub=None)), 401,
                  "JWT missing required claims", INVALID)


@pytest.mark.parametrize("claims", [
    {"scope": "orders:read"}, {"scope": None, "scp": ["orders:read", "x"]},
    {"scope": None, "scp": "x orders:read"}, {"scope": "x", "scp": ["orders:read"]}])
def test_scope_string_or_scp_list(policy_gateway, claims):
    assert get(policy_gateway, "/p/x", Authorization=good(**claims))[0] == 200


@pytest.mark.parametrize("claims", [
    {"scope": None}, {"scope": "orders:write"}, {"scope": "orders:readx"},
    {"scope": None, "scp": [["orders:read"]]}, {"scope": ["orders:read"]}])
def test_missing_scope_is_403_insufficient_scope(policy_gateway, claims):
    assert_answer(get(policy_gateway, "/p/x", Authorization=good(**claims)), 403,
                  "JWT scope insufficient", SCOPE)


@pytest.mark.parametrize("exp", [None, lambda now: now + 7200])
def test_no_exp_or_longer_lifetime_than_max_lifetime_fails_verification(policy_gateway, exp):
    now = int(time.time())
    t = good(exp=None if exp is None else exp(now))
    assert_401(get(policy_gateway, "/p/x", Authorization=t), "failed to verify jwt")


def test_the_same_token_passes_a_route_without_policy(policy_gateway):
    t = good(aud="api://elsewhere")
    assert get(policy_gateway, "/plain/x", Authorization=t)[0] == 200
    assert_answer(get(policy_gateway, "/p/x", Authorization=t), 403,
                  "JWT audience not allowed", INVALID)  # the cached verdict is not reused
    assert get(policy_gateway, "/plain/x", Authorization=t)[0] == 200


def test_claims_to_headers_delete_then_set(policy_gateway):
    t = good(email="a@example.com", roles=["admin", "ops"], tenant={"id": 7})
    status, _, body = get(policy_gateway, "/p/x", Authorization=t,
                          **{"X-User-Id": "forged", "X_User_Id": "forged", "x-roles": "forged"})
    assert status == 200
    seen = headers_seen(body)
    assert [v for n, v in seen if n.replace("_", "-").lower() == "x-user-id"] == ["user-1"]
    assert [v for n, v in seen if n == "x-user-email"] == ["a@example.com"]
    assert [v for n, v in seen if n == "x-roles"] == ['["admin","ops"]']
    assert [v for n, v in seen if n == "x-tenant"] == ['{"id":7}']
    # the same token again: a cache hit sets them alike
    status, _, again = get(policy_gateway, "/p/x", Authorization=t, **{"X-User-Id": "forged"})
    assert [v for n, v in headers_seen(again) if n.replace("_", "-").lower() == "x-user-id"] \
        == ["user-1"]
    assert [v for n, v in headers_seen(again) if n == "x-tenant"] == ['{"id":7}']


# (and any other control character but HTAB, RFC 9110 5.5: upstreams refuse them, a 502)
@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\0b", "\r", "a\x01b", "a\x1bb",
                                   "a\x7fb"])
def test_a_claim_holding_a_control_character_is_left_out(policy_gateway, value):
    status, _, body = get(policy_gateway, "/p/x", Authorization=good(email=value),
                          **{"X-User-Email": "forged"})
    assert status == 200
    names = [n.lower() for n, _ in headers_seen(body)]
    assert "x-user-email" not in names and "x-evil" not in names
    status, _, body = get(policy_gateway, "/p/x", Authorization=good(email="a\tb"))
    assert status == 200 and ["a\tb"] == [v for n, v in headers_seen(body)
                                          if n.lower() == "x-user-email"]


def test_claim_headers_are_removed_from_requests_without_a_token(upstream, gateway_factory):
    conf = config(upstream, {"claims_to_headers": {"sub": "X-User-Id"},
                             "anonymous_consumer": "guest"})
    conf["consumers"].append({"username": "guest"})
    gw = gateway_factory(conf)
    status, _, body = get(gw, "/p/x", **{"X-User-Id": "forged", "x_user_id": "forged"})
    assert status == 200
    assert not [n for n, _ in headers_seen(body) if n.replace("_", "-").lower() == "x-user-id"]
    assert dict(headers_seen(body))["x-consumer-username"] == "guest"


def test_issuer_on_the_credential(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {}, {"issuer": "https://idp.example"}))
    assert get(gw, "/p/x", Authorization=token(iss="https://idp.example"))[0] == 200
    for bad in (token(), token(iss="https://idp.example/"),
                signed({"iss": ["https://idp.example"]})):
        assert_401(get(gw, "/p/x", Authorization=bad), "failed to verify jwt")


def test_policy_on_the_service_covers_its_routes(upstream, gateway_factory):
    svc = service(upstream.url, [{"name": "r", "paths": ["/*"]}],
                  plugins={"jwt-auth": {"required_claims": ["sub", "tid"]}})
    gw = gateway_factory({"services": [svc], "consumers": [consumer()]})
    assert get(gw, Authorization=token(sub="a", tid="t"))[0] == 200
    assert_answer(get(gw, Authorization=token(sub="a")), 401, "JWT missing required claims",
                  INVALID)


@pytest.mark.parametrize("plugin,expected", [
    ({"audiences": []}, "audiences: must have at least 1 item"),
    ({"audiences": "api://x"}, "audiences: must be a list"),
    ({"required_scopes": ["a b"]}, "required_scopes[0]: must match"),
    ({"max_lifetime": 0}, "max_lifetime: must be at least 1"),
    ({"claims_to_headers": {"sub": "X User"}}, "claims_to_headers.sub: must match"),
    ({"claims_to_headers": {"sub": "Host"}}, "claims_to_headers.sub: 'Host' is a header"),
    ({"claims_to_headers": {"sub": "x_consumer_username"}},
     "claims_to_headers.sub: 'x_consumer_username' is a header"),
    ({"claims_to_headers": {"sub": "X-A", "oid": "x_a"}},
     "claims_to_headers.oid: header 'x_a' is also set from claim 'sub'"),
])
def test_policy_errors_name_their_field(plugin, expected):
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    with pytest.raises(ConfigError) as info:
        validate({"services": [service("http://a", [{"name": "r", "paths": ["/"], "plugins": {
            "jwt-auth": plugin}}])]})
    prefix = "services[0].routes[0].plugins.jwt-auth."
    assert any(f"{p}: {m}".startswith(prefix + expected) for p, m in info.value.errors), \
        info.value.errors
