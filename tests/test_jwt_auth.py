"""The jwt-auth plugin through a real gateway: SPEC sections 1 and 4."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time

import jwt as pyjwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import service
from jwt_kit import PluginSide, pem_pair

SECRET = "s3cr3t-for-tests-" + "0123456789abcdef" * 4


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, payload: dict, signature: bytes = b"sig") -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)))


def token(key="user-key", secret=SECRET, alg="HS256", **claims) -> str:
    return pyjwt.encode({"key": key, **claims}, secret, algorithm=alg)


def consumer(username="jack", key="user-key", **cred):
    return {"username": username, "credentials": [{"key": key, "secret": SECRET, **cred}]}


def config(upstream, plugin=None, consumers=None, routes=None, service_plugins=None):
    routes = routes or [{"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": plugin or {}}}]
    svc = service(upstream.url, routes, plugins=service_plugins or {})
    return {"services": [svc], "consumers": consumers if consumers is not None else [consumer()]}


def seen_headers(body: bytes) -> dict:
    return dict(json.loads(body)["headers"])


@pytest.fixture
def jwt_gateway(upstream, gateway_factory):
    return gateway_factory(config(upstream))


def get(gw, path="/anything", **headers):
    return gw.request("GET", path, headers=headers)


# ---------------------------------------------------------------- the verification table

def assert_401(result, message: str, token_present: bool = True):
    status, headers, body = result
    assert status == 401
    assert json.loads(body) == {"message": message}
    assert headers["content-type"] == "application/json"
    challenge = 'Bearer realm="fastgw"' + (', error="invalid_token"' if token_present else "")
    assert headers["www-authenticate"] == challenge


def test_missing_token(jwt_gateway):
    assert_401(get(jwt_gateway), "Missing JWT token in request", token_present=False)


@pytest.mark.parametrize("bad", [
    "wrong token", "a.b", "a.b.c.d", "!!!.???.###", b64(b"[1,2]") + "." + b64(b"{}") + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b"not json") + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b'{"key":"user-key"') + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b'"just a string"') + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b'[1]') + ".x",
    "x" * 20000, "a" * 6000 + "." + "b" * 6000 + "." + "c" * 6000,
    b64(b'{"alg":"HS256"}') + "." + b64(b'{"key":"user-key"}') + ".a",  # bad base64 length
])
def test_malformed_tokens_are_invalid_never_500(jwt_gateway, bad):
    assert_401(get(jwt_gateway, Authorization=bad), "JWT token invalid")


def test_missing_key_claim(jwt_gateway):
    assert_401(get(jwt_gateway, Authorization=pyjwt.encode({"user": "x"}, SECRET)),
               "missing user key in JWT token")


@pytest.mark.parametrize("key", ["nobody", 42, ["user-key"], {"k": 1}])
def test_unknown_key(jwt_gateway, key):
    assert_401(get(jwt_gateway, Authorization=pyjwt.encode({"key": key}, SECRET)),
               "Invalid user key in JWT token")


@pytest.mark.parametrize("bad_token", [
    pytest.param(lambda: token(secret="another secret 0123456789abcdefgh"), id="bad-signature"),
    pytest.param(lambda: token(alg="HS512"), id="other-hmac-algorithm"),
    pytest.param(lambda: token(exp=int(time.time()) - 10), id="expired"),
    pytest.param(lambda: token(nbf=int(time.time()) + 60), id="not-yet-valid"),
    pytest.param(lambda: token(exp="tomorrow"), id="exp-not-a-number"),
    pytest.param(lambda: raw_token({"alg": "none"}, {"key": "user-key"}, b""), id="alg-none"),
    pytest.param(lambda: raw_token({"alg": "none"}, {"key": "user-key"}) .rsplit(".", 1)[0] + ".",
                 id="alg-none-empty-signature"),
    pytest.param(lambda: raw_token({"alg": "HS256", "crit": ["exp"]}, {"key": "user-key"}),
                 id="crit-header"),
])
def test_failed_verification(jwt_gateway, bad_token):
    assert_401(get(jwt_gateway, Authorization=bad_token()), "failed to verify jwt")


def test_valid_token_reaches_upstream_with_consumer_headers(jwt_gateway, upstream):
    status, _, body = get(jwt_gateway, Authorization=token(exp=int(time.time()) + 60),
                          **{"X-Consumer-Username": "admin", "X-Credential-Identifier": "forged"})
    assert status == 200
    headers = seen_headers(body)
    assert headers["x-consumer-username"] == "jack"
    assert headers["x-credential-identifier"] == "user-key"
    assert sum(1 for n, _ in json.loads(body)["headers"] if n == "x-consumer-username") == 1


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer ", "BEARER  "])
def test_authorization_header_with_or_without_bearer(jwt_gateway, prefix):
    assert get(jwt_gateway, Authorization=prefix + token())[0] == 200


def test_token_in_query_and_cookie(jwt_gateway):
    t = token()
    assert get(jwt_gateway, f"/anything?a=1&jwt={t}")[0] == 200
    assert get(jwt_gateway, Cookie=f"theme=dark; jwt={t}; lang=en")[0] == 200


def test_first_place_present_is_the_only_one_read(jwt_gateway):
    t = token()
    # a garbled header is not rescued by a good query parameter or cookie
    assert_401(get(jwt_gateway, f"/anything?jwt={t}", Authorization="garbage", Cookie=f"jwt={t}"),
               "JWT token invalid")
    assert_401(get(jwt_gateway, "/anything?jwt=garbage", Cookie=f"jwt={t}"), "JWT token invalid")


def test_nbf_and_exp_within_grace_period(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, consumers=[consumer(lifetime_grace_period=30)]))
    now = int(time.time())
    assert get(gw, Authorization=token(exp=now - 10))[0] == 200
    assert get(gw, Authorization=token(nbf=now + 10))[0] == 200
    assert_401(get(gw, Authorization=token(exp=now - 40)), "failed to verify jwt")
    assert_401(get(gw, Authorization=token(nbf=now + 40)), "failed to verify jwt")


# ---------------------------------------------------------------- plugin options

def test_custom_header_query_cookie_names(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"header": "X-Token", "query": "access_token",
                                           "cookie": "session"}))
    t = token()
    assert get(gw, **{"X-Token": t})[0] == 200
    assert get(gw, f"/anything?access_token={t}")[0] == 200
    assert get(gw, Cookie=f"session={t}")[0] == 200
    assert get(gw, Authorization=t)[0] == 401  # the default places are no longer read


def test_hide_credentials_removes_only_the_credential(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"hide_credentials": True}))
    t = token()
    _, _, body = get(gw, Authorization=f"Bearer {t}")
    assert "authorization" not in seen_headers(body)
    _, _, body = get(gw, f"/anything?b=2&jwt={t}&a=1")
    assert json.loads(body)["target"] == "/anything?b=2&a=1"
    _, _, body = get(gw, f"/anything?jwt={t}")
    assert json.loads(body)["target"] == "/anything"
    _, _, body = get(gw, Cookie=f"theme=dark; jwt={t}; lang=en")
    assert seen_headers(body)["cookie"] == "theme=dark; lang=en"
    _, _, body = get(gw, Cookie=f"jwt={t}")
    assert "cookie" not in seen_headers(body)


def test_credentials_kept_without_hide_credentials(jwt_gateway):
    t = token()
    _, _, body = get(jwt_gateway, f"/anything?jwt={t}", Cookie=f"jwt={t}")
    assert json.loads(body)["target"] == f"/anything?jwt={t}"
    assert seen_headers(body)["cookie"] == f"jwt={t}"


def test_key_claim_name(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"key_claim_name": "iss"}))
    assert get(gw, Authorization=pyjwt.encode({"iss": "user-key"}, SECRET))[0] == 200
    assert_401(get(gw, Authorization=token()), "missing user key in JWT token")


def test_anonymous_consumer_only_when_no_token(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"anonymous_consumer": "guest"},
                                consumers=[consumer(), {"username": "guest"}]))
    status, _, body = get(gw)
    assert status == 200 and seen_headers(body)["x-consumer-username"] == "guest"
    assert "x-credential-identifier" not in seen_headers(body)
    assert_401(get(gw, Authorization="garbage"), "JWT token invalid")
    _, _, body = get(gw, Authorization=token())
    assert seen_headers(body)["x-consumer-username"] == "jack"


def test_service_plugin_covers_routes_and_route_overrides_it(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, service_plugins={"jwt-auth": {}}, routes=[
        {"name": "plain", "paths": ["/plain"]},
        {"name": "custom", "paths": ["/custom"], "plugins": {"jwt-auth": {"header": "x-jwt"}}},
    ]))
    assert get(gw, "/plain")[0] == 401
    assert get(gw, "/plain", Authorization=token())[0] == 200
    assert get(gw, "/custom", Authorization=token())[0] == 401
    assert get(gw, "/custom", **{"X-JWT": token()})[0] == 200


# ---------------------------------------------------------------- algorithms and keys




@pytest.fixture(scope="module")
def key_pairs():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "RS": pem_pair(rsa_key),
        "ES256": pem_pair(ec.generate_private_key(ec.SECP256R1())),
        "ES384": pem_pair(ec.generate_private_key(ec.SECP384R1())),
        "ES512": pem_pair(ec.generate_private_key(ec.SECP521R1())),
        "EdDSA": pem_pair(ed25519.Ed25519PrivateKey.generate()),
    }


def test_asymmetric_keys_in_the_wrong_field_or_of_two_pairs_are_configuration_errors(key_pairs):
    """A private key in public_key would be shown by the admin API (public_key is not
    secret); a private_key that is not public_key's pair signs tokens that are refused."""
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    private, public = key_pairs["ES256"]
    other_private, _ = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    rsa_public = key_pairs["RS"][1]
    for cred, field, expected in (
            ({"public_key": private}, "public_key", "is a private key"),
            ({"public_key": public, "private_key": public}, "private_key", "is a public key"),
            ({"public_key": public, "private_key": other_private}, "private_key",
             "does not match public_key"),
            ({"public_key": rsa_public}, "public_key",
             "cannot be used with ES256: it is an RSAPublicKey")):
        with pytest.raises(ConfigError) as caught:
            validate({"consumers": [{"username": "u", "credentials": [
                {"key": "k", "algorithm": "ES256", **cred}]}]})
        assert caught.value.errors == [(f"consumers[0].credentials[0].{field}",
                                        caught.value.errors[0][1])], caught.value.errors
        assert caught.value.errors[0][1].startswith(expected), caught.value.errors
    validate({"consumers": [{"username": "u", "credentials": [
        {"key": "k", "algorithm": "ES256", "public_key": public, "private_key": private}]}]})


ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA"]


def test_an_rsa_key_under_2048_bits_is_a_configuration_error():
    """RFC 7518 3.3 and 3.5; PyJWT only warns, and fastgw check passed a 512-bit key."""
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    private, public = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    for field, cred in (("public_key", {"public_key": public}),
                        ("private_key", {"public_key": public, "private_key": private})):
        with pytest.raises(ConfigError) as caught:
            validate({"consumers": [{"username": "u", "credentials": [
                {"key": "k", "algorithm": "RS256", **cred}]}]})
        assert any(path == f"consumers[0].credentials[0].{field}" and
                   "an RSA key of 1024 bits; at least 2048 are required" in message
                   for path, message in caught.value.errors), caught.value.errors


def test_every_algorithm_with_real_keys(upstream, gateway_factory, key_pairs):
    consumers, tokens = [], {}
    for alg in ["HS256", "HS384", "HS512"]:
        consumers.append(consumer(f"u-{alg}", f"k-{alg}", algorithm=alg))
        tokens[alg] = token(f"k-{alg}", alg=alg)
    for alg in ASYMMETRIC:
        private, public = key_pairs["RS" if alg[:2] in ("RS", "PS") else alg]
        consumers.append({"username": f"u-{alg}", "credentials": [
            {"key": f"k-{alg}", "algorithm": alg, "public_key": public}]})
        tokens[alg] = pyjwt.encode({"key": f"k-{alg}"}, private, algorithm=alg)
    gw = gateway_factory(config(upstream, consumers=consumers))
    for alg, t in tokens.items():
        status, _, body = get(gw, Authorization=t)
        assert status == 200, alg
        assert seen_headers(body)["x-consumer-username"] == f"u-{alg}"
    # a token signed with another key of the right type fails
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = pyjwt.encode({"key": "k-RS256"}, pem_pair(other)[0], algorithm="RS256")
    assert_401(get(gw, Authorization=forged), "failed to verify jwt")
    # RS256 token for a PS256 credential (same key pair) fails: only the credential's algorithm
    wrong_alg = pyjwt.encode({"key": "k-PS256"}, key_pairs["RS"][0], algorithm="RS256")
    assert_401(get(gw, Authorization=wrong_alg), "failed to verify jwt")


def test_algorithm_confusion_hs256_signed_with_public_key_is_rejected(
        upstream, gateway_factory, key_pairs):
    private, public = key_pairs["RS"]
    gw = gateway_factory(config(upstream, consumers=[{"username": "r", "credentials": [
        {"key": "rsa-key", "algorithm": "RS256", "public_key": public}]}]))
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64(b'{"key":"rsa-key"}')
    sig = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert_401(get(gw, Authorization=f"{header}.{payload}.{b64(sig)}"), "failed to verify jwt")


def test_base64_secret(upstream, gateway_factory):
    raw = os.urandom(32)
    encoded = base64.b64encode(raw).decode()
    gw = gateway_factory(config(upstream, consumers=[{"username": "b", "credentials": [
        {"key": "b64-key", "secret": encoded, "base64_secret": True}]}]))
    assert get(gw, Authorization=pyjwt.encode({"key": "b64-key"}, raw))[0] == 200
    assert_401(get(gw, Authorization=pyjwt.encode({"key": "b64-key"}, encoded)),
               "failed to verify jwt")


# ---------------------------------------------------------------- the cache

def test_tampered_payload_after_genuine_token_was_cached(jwt_gateway):
    genuine = token(role="user")
    assert get(jwt_gateway, Authorization=genuine)[0] == 200  # now cached
    head, _, sig = genuine.split(".")
    forged_payload = b64(json.dumps({"key": "user-key", "role": "admin"}).encode())
    assert_401(get(jwt_gateway, Authorization=f"{head}.{forged_payload}.{sig}"),
               "failed to verify jwt")
    assert get(jwt_gateway, Authorization=genuine)[0] == 200


def test_cached_token_rejected_once_expired(jwt_gateway):
    exp = int(time.time()) + 2
    t = token(exp=exp)
    assert get(jwt_gateway, Authorization=t)[0] == 200  # verified and cached
    assert get(jwt_gateway, Authorization=t)[0] == 200  # a cache hit
    time.sleep(max(0.0, exp - time.time()) + 0.05)  # the clock has to pass exp
    assert_401(get(jwt_gateway, Authorization=t), "failed to verify jwt")


def test_cached_token_rejected_after_credential_removed_by_reload(upstream, jwt_gateway):
    t = token()
    assert get(jwt_gateway, Authorization=t)[0] == 200
    jwt_gateway.write_config(config(upstream, consumers=[consumer("jill", "other-key")]))
    jwt_gateway.signal(signal.SIGHUP)
    jwt_gateway.wait_for_log("configuration reloaded")
    assert_401(get(jwt_gateway, Authorization=t), "Invalid user key in JWT token")


def test_cached_token_rejected_after_secret_changed_by_reload(upstream, jwt_gateway):
    t = token()
    assert get(jwt_gateway, Authorization=t)[0] == 200
    jwt_gateway.write_config(config(upstream, consumers=[
        {"username": "jack", "credentials": [{"key": "user-key", "secret": "changed" * 10}]}]))
    jwt_gateway.signal(signal.SIGHUP)
    jwt_gateway.wait_for_log("configuration reloaded")
    assert_401(get(jwt_gateway, Authorization=t), "failed to verify jwt")


def test_bad_reload_keeps_running_configuration(upstream, jwt_gateway):
    jwt_gateway.config_path.write_text("services: [{name: broken}]\n")
    jwt_gateway.signal(signal.SIGHUP)
    line = jwt_gateway.wait_for_log("reload refused")
    assert "services[0].upstream: is required" in line
    assert get(jwt_gateway, Authorization=token())[0] == 200





def _plugin_with_cache(size: int):
    """jwt-auth built for one route and consumer jack, with a verified-token cache of
    `size`: (plugin, cache)."""
    from types import SimpleNamespace

    from fastgw.config.schema import validate
    from fastgw.plugins import jwt_auth
    conf = validate({"consumers": [consumer()], "services": [service("http://127.0.0.1:9", [
        {"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": {}}}])]})
    cache = jwt_auth.VerifiedTokenCache(size)
    plugin = jwt_auth.build(conf["services"][0]["routes"][0]["plugins"]["jwt-auth"],
                            SimpleNamespace(credentials={"jwt-auth": jwt_auth.index_credentials(
                                conf["consumers"], None)}, state={"jwt-auth": cache}))
    return plugin, cache


def test_verified_token_cache_drops_the_least_recently_used():
    plugin, cache = _plugin_with_cache(2)
    t0, t1, t2 = (token(n=i).encode() for i in range(3))
    for t in (t0, t1, t0, t2):  # t0 is used again before t2 comes: t1 is the one to go
        ex = PluginSide([(b"authorization", t)])
        assert plugin.access(ex) is None and ex.consumer.username == "jack"
    assert list(cache) == [t0, t2]
    assert (cache.hits, cache.misses, cache.evictions) == (1, 3, 1)


def test_one_token_spelt_many_ways_in_the_header_takes_one_cache_entry_per_prefix_case():
    """Spaces after "Bearer" and after the token are not part of it: one valid token padded
    a thousand ways is accepted each time, but cached only as sent plainly (else one token
    could fill the cache with entries of any size, and push out everyone else's)."""
    plugin, cache = _plugin_with_cache(100)
    tok = token().encode()
    spellings = [b"Bearer " + b" " * n + tok for n in range(1, 500)]
    spellings += [b"Bearer " + tok + b" \t" * n for n in range(1, 500)]
    spellings += [b"Bearer " + tok, b"bearer " + tok, tok]
    for value in spellings:
        ex = PluginSide([(b"authorization", value)])
        assert plugin.access(ex) is None and ex.consumer.username == "jack"
    assert set(cache) == {b"Bearer " + tok, b"bearer " + tok, tok}


# ---------------------------------------------------------------- time claims

def signed(payload, header=None, secret: str = SECRET) -> str:
    """An HS256 token over any JSON payload (PyJWT's encoder would refuse some on purpose)."""
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


NOT_NUMBERS = [None, "1700000000", "", True, False, [1700000000], {"t": 1700000000}]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=lambda v: json.dumps(v))
def test_time_claim_present_but_not_a_number_fails_verification(jwt_gateway, claim, value):
    """RFC 7519 4.1.4-6: a NumericDate is a JSON number; null is not "absent"."""
    assert_401(get(jwt_gateway, Authorization=signed({"key": "user-key", claim: value})),
               "failed to verify jwt")


@pytest.mark.parametrize("claim", ["jti", "sub"])
@pytest.mark.parametrize("value", [None, 7, 7.5, True, ["a"], {"id": "a"}], ids=json.dumps)
def test_a_jti_or_sub_that_is_not_a_string_fails_verification(jwt_gateway, claim, value):
    """RFC 7519 4.1.2 and 4.1.7 (and PyJWT): a revocation, which names them as strings,
    could never reach such a token."""
    assert_401(get(jwt_gateway, Authorization=signed({"key": "user-key", claim: value})),
               "failed to verify jwt")
    assert get(jwt_gateway, Authorization=signed({"key": "user-key", claim: "7"}))[0] == 200


def test_iat_is_not_checked_beyond_its_type(jwt_gateway):
    now = time.time()
    for iat in (int(now) + 86400, 0, now - 0.5, -1):  # the future, the epoch, a fraction
        assert get(jwt_gateway, Authorization=signed({"key": "user-key", "iat": iat}))[0] == 200
    assert get(jwt_gateway, Authorization=signed(
        {"key": "user-key", "exp": now + 60.5, "nbf": now - 60.5}))[0] == 200


# ---------------------------------------------------------------- where the token is read

def raw_get(gw, *lines: str, path: str = "/anything"):
    """A GET with exactly these header lines: (status, headers, body, client still open)."""
    client = gw.raw()
    head = f"GET {path} HTTP/1.1\r\nHost: api.test\r\n" + "".join(f"{l}\r\n" for l in lines)
    client.send(head.encode() + b"\r\n")
    status, headers, body = client.response()
    return status, headers, body, client


@pytest.mark.parametrize("value", ["{t}   ", "{t}\t", "{t} \t \t", "Bearer {t}  ",
                                   "Bearer \t {t}", "bearer   {t}\t ", "BEARER {t}\t"])
def test_whitespace_around_the_token_is_not_part_of_it(jwt_gateway, value):
    """RFC 9110 5.5: leading and trailing SP/HTAB are not part of a field value (llhttp
    keeps the trailing ones). Twice: verified in full, then from the cache."""
    t = token(n=value)
    for _ in range(2):
        status, _, body, client = raw_get(jwt_gateway, "Authorization: " + value.format(t=t))
        client.close()
        assert status == 200, body
        assert seen_headers(body)["x-consumer-username"] == "jack"


def assert_400_and_closed(result, upstream, requests_before: int):
    status, headers, body, client = result
    try:
        assert status == 400
        assert json.loads(body) == {"error_msg": "400 Bad Request"}
        assert headers["connection"] == "close"
        assert client.closed()
    finally:
        client.close()
    assert len(upstream.requests) == requests_before  # nothing was forwarded


def test_credential_header_twice_is_refused_and_the_connection_closed(jwt_gateway, upstream):
    good = token()
    forged = token(role="admin", secret="forged-" + SECRET)
    assert get(jwt_gateway, Authorization=good)[0] == 200  # cached: the hot path is checked too
    before = len(upstream.requests)
    for lines in ([f"Authorization: {good}", f"Authorization: {forged}"],
                  [f"Authorization: Bearer {good}", "X-Other: 1", f"authorization: {good}"],
                  ["Authorization:", f"Authorization: {good}"],  # an empty one counts
                  [f"Authorization: {good}", "Authorization:"],
                  ["Authorization:", "Authorization:", f"Cookie: jwt={good}"]):
        assert_400_and_closed(raw_get(jwt_gateway, *lines), upstream, before)


def test_configured_header_twice_is_refused(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"header": "X-Token"}))
    good = token()
    before = len(upstream.requests)
    assert_400_and_closed(raw_get(gw, f"X-Token: {good}", f"x-token: {good}"), upstream, before)
    # the default header is only another header here
    status, _, _, client = raw_get(gw, f"X-Token: {good}", "Authorization: a", "Authorization: b")
    client.close()
    assert status == 200


def test_the_credential_header_under_another_spelling_is_the_same_header(upstream,
                                                                         gateway_factory):
    """X_Token and X-Token are one variable to a CGI or WSGI server behind the gateway."""
    gw = gateway_factory(config(upstream, {"header": "X-Token", "hide_credentials": True}))
    good, forged = token(), token(role="admin", secret="forged-" + SECRET)
    before = len(upstream.requests)
    assert_400_and_closed(raw_get(gw, f"X-Token: {good}", f"X_Token: {forged}"), upstream, before)
    assert_400_and_closed(raw_get(gw, f"x_token: {forged}", f"X-Token: {good}"), upstream, before)
    status, _, body, client = raw_get(gw, f"X_TOKEN: Bearer {good}")
    client.close()
    assert status == 200
    assert good not in body.decode()  # hidden under the spelling it came in


@pytest.mark.parametrize("query", [
    "jwt={good}&jwt={forged}", "jwt={good}&a=1&jwt={good}", "jwt={good}&%6Awt={forged}",
    "j%77t={forged}&jwt={good}", "%6A%77%74={forged}&jwt={good}", "jwt=&jwt={good}",
    "jwt={good}&jwt", "jwt={good}&jwt=", "jwt={good}&JWT={forged}", "Jwt={forged}&jwt={good}",
    # a ";" separates parameters too, and PHP reads jwt[] as jwt: the copy reached the
    # upstream as it was, the token read and stripped
    "a=1;jwt={forged}&jwt={good}", "jwt[]={forged}&jwt={good}", "jwt={good}&jwt%5B%5D={forged}",
    "jwt={good}&a=1;JWT={forged}",
])
def test_query_parameter_twice_is_refused(jwt_gateway, upstream, query):
    good, forged = token(), token(role="admin", secret="forged-" + SECRET)
    assert get(jwt_gateway, f"/anything?jwt={good}")[0] == 200
    before = len(upstream.requests)
    path = "/anything?" + query.format(good=good, forged=forged)
    assert_400_and_closed(raw_get(jwt_gateway, path=path), upstream, before)


@pytest.mark.parametrize("cookies", [
    ["Cookie: jwt={good}; jwt={forged}"], ["Cookie: a=1; jwt={good}; b=2; jwt={good}"],
    ["Cookie: jwt={good}", "Cookie: jwt={forged}"], ["Cookie: jwt={good}; jwt ={forged}"],
    ["Cookie: jwt={good}; %6Awt={forged}"], ["Cookie: jwt=; jwt={good}"],
])
def test_cookie_twice_is_refused(jwt_gateway, upstream, cookies):
    good, forged = token(), token(role="admin", secret="forged-" + SECRET)
    assert get(jwt_gateway, Cookie=f"jwt={good}")[0] == 200
    before = len(upstream.requests)
    lines = [c.format(good=good, forged=forged) for c in cookies]
    assert_400_and_closed(raw_get(jwt_gateway, *lines), upstream, before)


def test_repeats_in_places_not_read_are_not_examined(jwt_gateway):
    """Only the first place where the credential is present is read (SPEC 4)."""
    t = token()
    status, _, body, client = raw_get(jwt_gateway, f"Authorization: {t}", "Cookie: jwt=a; jwt=b",
                                      path="/anything?jwt=a&jwt=b")
    client.close()
    assert status == 200
    assert json.loads(body)["target"] == "/anything?jwt=a&jwt=b"


def upstream_view(body: bytes) -> tuple[str, list]:
    seen = json.loads(body)
    return seen["target"], seen["headers"]


def test_hide_credentials_leaves_no_copy_where_the_token_was_read(upstream, gateway_factory):
    gw = gateway_factory(config(upstream, {"hide_credentials": True}))
    t = token()
    cases = [  # (header lines, path) -> what the upstream must see instead
        (([f"Authorization: Bearer {t}  "], "/anything"), ("/anything", None)),
        (([], f"/anything?a=1&%6Awt={t}&b=2"), ("/anything?a=1&b=2", None)),
        (([], f"/anything?j%77t={t}"), ("/anything", None)),
        ((["Cookie: a=1", f"Cookie: b=2; jwt = {t} ; c=3"], "/anything"),
         ("/anything", ["a=1", "b=2; c=3"])),
        (([f'Cookie: jwt="{t}"'], "/anything"), ("/anything", [])),
        (([f"Cookie: %6Awt={t}; x=y"], "/anything"), ("/anything", ["x=y"])),
    ]
    for (lines, path), (target, cookies) in cases:
        status, _, body, client = raw_get(gw, *lines, path=path)
        client.close()
        assert status == 200, (lines, path, body)
        seen_target, headers = upstream_view(body)
        assert seen_target == target
        assert "authorization" not in [n for n, _ in headers]
        if cookies is not None:
            assert [v for n, v in headers if n == "cookie"] == cookies
        assert t not in body.decode()  # no copy anywhere in what the upstream received


# ---------------------------------------------------------------- one token, one text

def _variants(t: str) -> dict[str, str]:
    """Other spellings of t's segments that decode to the same bytes."""
    head, body, sig = t.split(".")
    out = {}
    for name, seg, put in (("payload", body, lambda s: f"{head}.{s}.{sig}"),
                           ("signature", sig, lambda s: f"{head}.{body}.{s}")):
        rem = len(seg) % 4
        if rem:
            out[f"{name}-padded"] = put(seg + "=" * (4 - rem))
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            unused = 4 if rem == 2 else 2  # bits of the last character that carry nothing
            last = alphabet[alphabet.index(seg[-1]) | (1 << unused) - 1]
            out[f"{name}-trailing-bits"] = put(seg[:-1] + last)
        if "-" in seg or "_" in seg:
            out[f"{name}-plus-slash"] = put(seg.replace("-", "+").replace("_", "/"))
    return out


def _lenient(segment: str) -> bytes:
    """What a forgiving decoder makes of a segment: either alphabet, padding optional."""
    return base64.b64decode(segment.replace("-", "+").replace("_", "/") + "==")


def _token_with_every_variant() -> tuple[str, dict[str, str]]:
    for n in range(1000):  # until payload and signature both allow every kind of respelling
        t = token(n=n, x="??>>~~")  # "?" and "~" make "_" and "-" in base64url
        variants = _variants(t)
        if len(variants) == 6:
            return t, variants
    raise AssertionError("no suitable token")


def test_only_the_canonical_spelling_of_a_token_is_accepted(jwt_gateway, upstream):
    """RFC 7515 2 / RFC 4648 3.5: one signature, one token text (the cache is keyed by it)."""
    t, variants = _token_with_every_variant()
    assert get(jwt_gateway, Authorization=t)[0] == 200  # genuine, and now cached
    before = len(upstream.requests)
    for kind, variant in variants.items():
        assert [_lenient(seg) for seg in variant.split(".")] == \
            [_lenient(seg) for seg in t.split(".")], kind  # the same bytes, spelt otherwise
        assert_401(get(jwt_gateway, Authorization=variant), "JWT token invalid")
        assert_401(get(jwt_gateway, f"/anything?jwt={variant.replace('+', '%2B')}"),
                   "JWT token invalid")
    assert len(upstream.requests) == before
    assert get(jwt_gateway, Authorization=t)[0] == 200


def _ecdsa_twin(t: str, order: int) -> str:
    """The same ECDSA signature with s replaced by n - s, which verifies as well."""
    head, body, sig = t.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    half = len(raw) // 2
    s = int.from_bytes(raw[half:], "big")
    return f"{head}.{body}.{b64(raw[:half] + (order - s).to_bytes(half, 'big'))}"


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_es256_signatures_are_accepted_with_high_or_low_s(upstream, gateway_factory, key_pairs):
    """ECDSA (FIPS 186, RFC 7518 3.4) does not fix s to its low half, and about half the
    signatures that OpenSSL (so PyJWT, and `fastgw token`) and most JOSE libraries make have
    s > n/2: refusing high s would refuse half the tokens issued. So (r, n - s) verifies too;
    it is a second text of the same claims, made only from a token already held."""
    private, public = key_pairs["ES256"]
    gw = gateway_factory(config(upstream, consumers=[{"username": "es", "credentials": [
        {"key": "es-key", "algorithm": "ES256", "public_key": public}]}]))
    seen_high = seen_low = False
    for n in range(64):
        t = pyjwt.encode({"key": "es-key", "n": n}, private, algorithm="ES256")
        s = int.from_bytes(base64.urlsafe_b64decode(t.split(".")[2] + "==")[32:], "big")
        high = s > P256_ORDER // 2
        if (high and seen_high) or (not high and seen_low):
            continue
        seen_high, seen_low = seen_high or high, seen_low or not high
        assert get(gw, Authorization=t)[0] == 200
        assert get(gw, Authorization=_ecdsa_twin(t, P256_ORDER))[0] == 200
        if seen_high and seen_low:
            break
    assert seen_high and seen_low


# ---------------------------------------------------------------- configuration errors

@pytest.mark.parametrize("cred,expected", [
    ({"key": "k"}, "consumers[0].credentials[0].secret: is required for HS256"),
    ({"key": "k", "algorithm": "RS256"},
     "consumers[0].credentials[0].public_key: is required for RS256"),
    ({"key": "k", "algorithm": "RS256", "public_key": "not a pem"},
     "consumers[0].credentials[0].public_key: cannot be used with RS256"),
    ({"key": "k", "algorithm": "HS999", "secret": "x"},
     "consumers[0].credentials[0].algorithm: must be one of"),
    ({"key": "k", "algorithm": "none", "secret": "x"},
     "consumers[0].credentials[0].algorithm: must be one of"),
    ({"key": "k", "secret": "***not base64***", "base64_secret": True},
     "consumers[0].credentials[0].secret: is not valid base64"),
    ({"key": "k\nX-Injected: 1", "secret": "x"}, "consumers[0].credentials[0].key: must match"),
])
def test_credential_errors(cred, expected):
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    with pytest.raises(ConfigError) as info:
        validate({"consumers": [{"username": "u", "credentials": [cred]}]})
    assert any(f"{p}: {m}".startswith(expected) for p, m in info.value.errors), info.value.errors


def test_credential_key_unique_across_consumers():
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    with pytest.raises(ConfigError) as info:
        validate({"consumers": [consumer("a", "same"), consumer("b", "same")]})
    assert ("consumers[1].credentials[0].key",
            "duplicate key 'same' (also at consumers[0].credentials[0].key)") in info.value.errors


def test_anonymous_consumer_must_exist():
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    with pytest.raises(ConfigError) as info:
        validate({"services": [service("http://a", [{"name": "r", "paths": ["/"], "plugins": {
            "jwt-auth": {"anonymous_consumer": "ghost"}}}])]})
    assert ("services[0].routes[0].plugins.jwt-auth.anonymous_consumer",
            "no consumer named 'ghost'") in info.value.errors


# ---------------------------------------------------------------- commands

def fastgw(*args, config_file=None):
    env = {**os.environ}
    if config_file:
        env["FASTGW_CONFIG"] = str(config_file)
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          text=True, timeout=20, env=env)


def test_secret_command_prints_32_random_bytes():
    secrets = {fastgw("secret").stdout.strip() for _ in range(3)}
    assert len(secrets) == 3
    for s in secrets:
        assert len(s) == 43 and len(base64.urlsafe_b64decode(s + "=")) == 32


def test_token_command_claims_and_expiry(tmp_path):
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [consumer("oiloil", "oiloil_key", exp=600)]}))
    out = fastgw("token", "--consumer", "oiloil", "--claim", "user=oiloil", "--claim", "age=18",
                 "--claim", 'tags=["a"]', "--expires", "2030-01-01T00:00:00Z", config_file=f)
    assert out.returncode == 0, out.stderr
    claims = pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["user"] == "oiloil" and claims["age"] == 18 and claims["tags"] == ["a"]
    assert claims["key"] == "oiloil_key" and claims["exp"] == 1893456000
    assert abs(claims["iat"] - time.time()) < 60
    out = fastgw("token", "--consumer", "oiloil", "--expires", "1900000000", config_file=f)
    assert pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])["exp"] == 1900000000
    out = fastgw("token", "--consumer", "oiloil", "--ttl", "30", config_file=f)
    claims = pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 30
    out = fastgw("token", "--consumer", "oiloil", config_file=f)  # the credential's exp
    claims = pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 600


def test_token_command_errors(tmp_path, key_pairs):
    f = tmp_path / "fastgw.yaml"
    public = key_pairs["ES256"][1]
    f.write_text(yaml.safe_dump({"consumers": [{"username": "es", "credentials": [
        {"key": "es-key", "algorithm": "ES256", "public_key": public}]}]}))
    out = fastgw("token", "--consumer", "es", config_file=f)
    assert out.returncode == 1 and "no private_key" in out.stderr
    out = fastgw("token", "--consumer", "nobody", config_file=f)
    assert out.returncode == 1 and "no consumer named 'nobody'" in out.stderr
    out = fastgw("token", "--consumer", "es", "--expires", "someday", config_file=f)
    assert out.returncode == 2 and "not an ISO 8601 time" in out.stderr
    assert "Traceback" not in out.stderr
    for flag, value in (("--expires", "inf"), ("--expires", "1e300"), ("--expires", "nan"),
                        ("--expires", "0001-01-01")):
        out = fastgw("token", "--consumer", "es", flag, value, config_file=f)
        assert out.returncode == 2 and f"{flag} '{value}': not a time" in out.stderr, out.stderr
    for ttl in ("0", "-5", "1" + "0" * 20):  # a token that expires as it is made, or never
        out = fastgw("token", "--consumer", "es", "--ttl", ttl, config_file=f)
        assert out.returncode == 1 and f"ttl {ttl}: not a number" in out.stderr, out.stderr


def test_token_command_refuses_an_expiry_in_the_past(tmp_path):
    """--expires in the past is an argument error, as the admin API's 400 at expires (the
    token was printed, expired already)."""
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [consumer("oiloil", "oiloil_key")]}))
    for when in ("2020-01-01T00:00:00", str(int(time.time()) - 60)):
        out = fastgw("token", "--consumer", "oiloil", "--expires", when, config_file=f)
        assert out.returncode == 2 and out.stdout == "", when
        assert f"--expires {when!r}: in the past" in out.stderr and "Traceback" not in out.stderr
    out = fastgw("token", "--consumer", "oiloil", "--expires", "2030-01-01", config_file=f)
    assert pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])["exp"] == 1893456000

def test_token_command_never_issues_a_token_its_verification_refuses(tmp_path):
    """A --claim value that is JSON keeps its type (SPEC 2), so sub=42 is a number: jwt-auth
    refuses a sub or jti that is not a string and a time claim that is not a number, and
    such a token is not issued (it was, and was then refused). The key and exp are fastgw's
    own: given as claims, they are refused (they were replaced without a word)."""
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [consumer("oiloil", "oiloil_key")]}))
    for claim, message in (("sub=42", "claim sub: must be a string"),
                           ("jti=1001", "claim jti: must be a string"),
                           ('iat="yesterday"', "claim iat: must be a number"),
                           ("exp=1893456000", "claim exp: set by fastgw: give the expiry as "
                                              "expires or ttl (use --expires or --ttl)"),
                           ("key=other_key", "claim key: set by fastgw"),
                           ("nbf=null", "claim nbf: must be a number")):
        out = fastgw("token", "--consumer", "oiloil", "--claim", claim, config_file=f)
        assert out.returncode == 1 and out.stdout == "", claim
        assert out.stderr.startswith(f"fastgw: {message}") and "Traceback" not in out.stderr
    out = fastgw("token", "--consumer", "oiloil", "--claim", 'sub="42"', config_file=f)
    assert pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == "42"


def test_token_command_keeps_integers_whole(tmp_path):
    """A --claim integer is the one the token carries, however large (one above 2^64 became a
    float: 123456789012345678901234567890 was signed as 1.2345678901234568e+29)."""
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [consumer("oiloil", "oiloil_key")]}))
    out = fastgw("token", "--consumer", "oiloil", "--claim", "huge=123456789012345678901234567890",
                 "--claim", 'ids=[18446744073709551617, 1.0]', config_file=f)
    claims = pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["huge"] == 123456789012345678901234567890
    assert claims["ids"] == [18446744073709551617, 1.0] and type(claims["ids"][1]) is float

def test_token_command_signs_with_private_key(tmp_path, key_pairs):
    private, public = key_pairs["ES256"]
    f = tmp_path / "fastgw.yaml"
    f.write_text(yaml.safe_dump({"consumers": [{"username": "es", "credentials": [
        {"key": "es-key", "algorithm": "ES256", "public_key": public, "private_key": private}]}]}))
    out = fastgw("token", "--consumer", "es", "--ttl", "60", config_file=f)
    assert pyjwt.decode(out.stdout.strip(), public, algorithms=["ES256"])["key"] == "es-key"


# ---------------------------------------------------------------- the walkthrough

def test_walkthrough_end_to_end(upstream, gateway_factory, tmp_path):
    """SPEC section 1, step by step, with the commands a user would type."""
    secret = fastgw("secret").stdout.strip()
    gw = gateway_factory({
        "services": [{"name": "jwt-auth-app", "hosts": ["cloud.httpbin.org"], "path_prefix": "/v1",
                      "upstream": {"url": upstream.url},
                      "routes": [{"name": "json", "paths": ["/json"], "methods": ["GET"],
                                  "plugins": {"jwt-auth": {}}}]}],
        "consumers": [{"username": "oiloil", "credentials": [
            {"key": "oiloil_key", "secret": secret, "algorithm": "HS256"}]}]})
    host = "cloud.httpbin.org"
    status, _, body = gw.request("GET", "/v1/json", host=host)
    assert status == 401 and json.loads(body) == {"message": "Missing JWT token in request"}
    out = fastgw("token", "--consumer", "oiloil", "--claim", "user=oiloil", "--claim", "age=18",
                 "--expires", str(int(time.time()) + 3600), config_file=gw.config_path)
    t = out.stdout.strip()
    for auth in (t, f"Bearer {t}"):
        status, _, body = gw.request("GET", "/v1/json", host=host, headers={"Authorization": auth})
        assert status == 200
        assert body == b'{"slideshow": {"author": "Yours Truly", "title": "Sample Slide Show", ' \
                       b'"slides": [{"title": "Wake up!", "type": "all"}]}}'
        assert upstream.requests[-1]["target"] == "/json"
    status, _, body = gw.request("GET", "/v1/json", host=host,
                                 headers={"Authorization": "wrong token"})
    assert status == 401 and json.loads(body) == {"message": "JWT token invalid"}
