"""Keys from an identity provider (SPEC section 8): key sets, discovery, refetches on an
unknown kid, outages, and the operations around them, against tests/idp.py on loopback."""

from __future__ import annotations

import concurrent.futures
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from certs import CertificateAuthority
from conftest import free_port, service
from idp import IdentityProvider

ADMIN_KEY = "admin-key-for-jwks-tests"


@pytest.fixture
def idp():
    provider = IdentityProvider().start()
    provider.add_key("RS256", "k1")
    yield provider
    provider.stop()


def credential(url: str, source: str = "jwks_uri", **extra) -> dict:
    return {"username": "corp", "credentials": [{"id": "corp-sso", "key": extra.pop(
        "key", "corp"), source: url, **extra}]}


def gw_config(upstream, consumers, plugin=None, routes=None) -> dict:
    routes = routes or [
        {"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": {"key_claim_name": "iss",
                                                                **(plugin or {})}}},
    ]
    return {"services": [service(upstream.url, routes)], "consumers": consumers}


class Admin:
    def __init__(self, port: int):
        self.port = port

    def call(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-API-KEY": ADMIN_KEY})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def start(gateway_factory, config, **env):
    admin_port, metrics_port = free_port(), free_port()
    gw = gateway_factory(config, env={"FASTGW_ADMIN_KEY": ADMIN_KEY,
                                      "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
                                      "FASTGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                                      **env})
    gw.admin = Admin(admin_port)
    gw.metrics_port = metrics_port
    return gw


def metrics(gw) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def until(check, timeout: float = 10, every: float = 0.05):
    """Poll `check()` until it returns a true value; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{check} still false after {timeout} s")
        time.sleep(every)


def key_set_status(gw, url: str) -> dict:
    status, sets = gw.admin.call("GET", "/admin/jwks")
    assert status == 200
    return next(s for s in sets if s["uri"] == url)


def wait_state(gw, url: str, state: str, timeout: float = 10) -> dict:
    return until(lambda: (lambda s: s if s["state"] == state else None)(
        key_set_status(gw, url)), timeout)


def get(gw, token: str | None = None, path: str = "/anything", **headers):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return gw.request("GET", path, headers=headers)


def assert_refused(result, message: str = "failed to verify jwt", status: int = 401):
    got, _, body = result
    assert (got, json.loads(body)) == (status, {"message": message})


# ---------------------------------------------------------------- the basics

def test_token_signed_by_a_key_of_the_set_is_accepted(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    status, _, body = get(gw, idp.sign({"sub": "u1"}))
    assert status == 200
    headers = dict(json.loads(body)["headers"])
    assert headers["x-consumer-username"] == "corp"
    assert headers["x-credential-identifier"] == "corp-sso"
    assert idp.count() == 1  # one fetch for the node


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_key_sets_of_every_kind(upstream, gateway_factory, alg):
    provider = IdentityProvider().start()
    try:
        kid = provider.add_key(alg)
        provider.add_key("RS384" if alg != "RS384" else "RS512")  # another algorithm's key
        gw = start(gateway_factory, gw_config(upstream, [
            credential(provider.jwks_uri, key=provider.issuer, algorithm=alg)]))
        wait_state(gw, provider.jwks_uri, "fresh")
        assert get(gw, provider.sign({"sub": "u"}, kid))[0] == 200
        # no kid: the one key usable for the algorithm
        assert get(gw, provider.sign({"sub": "u"}, kid, with_kid=False))[0] == 200
        head, _, sig = provider.sign({"sub": "u"}, kid).split(".")
        other_payload = provider.sign({"sub": "admin"}, kid).split(".")[1]
        assert_refused(get(gw, ".".join((head, other_payload, sig))))
        # the other algorithm's key is never used, even when the token names it
        other = [k for k in provider.keys if k != kid][0]
        assert_refused(get(gw, provider.sign({"sub": "u"}, other)))
    finally:
        provider.stop()


def test_default_algorithm_of_a_key_set_credential_is_rs256():
    from fastgw.config.schema import validate
    conf = validate({"consumers": [credential("https://idp.example/certs")]})
    assert conf["consumers"][0]["credentials"][0]["algorithm"] == "RS256"


# ---------------------------------------------------------------- which key

def test_token_without_kid_only_when_the_set_has_one_usable_key(idp, upstream, gateway_factory):
    idp.add_key("RS256", "enc-key", use="enc")  # not for signatures: does not count
    idp.add_key("ES256", "ec-key")  # another algorithm: does not count
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    assert get(gw, idp.sign({}, "k1", with_kid=False))[0] == 200
    idp.add_key("RS256", "k2")
    assert gw.admin.call("POST", "/admin/jwks/refresh")[0] == 200
    until(lambda: "k2" in key_set_status(gw, idp.jwks_uri)["key_ids"])
    assert_refused(get(gw, idp.sign({"n": 1}, "k1", with_kid=False)))  # two usable keys now
    assert get(gw, idp.sign({"n": 1}, "k1"))[0] == 200


@pytest.mark.parametrize("members", [{"use": "enc"}, {"alg": "PS256"}, {"key_ops": ["encrypt"]}])
def test_a_key_that_does_not_fit_the_credential_is_never_used(upstream, gateway_factory,
                                                              members):
    provider = IdentityProvider().start()
    try:
        provider.add_key("RS256", "bad", publish_alg=False, members=members)
        gw = start(gateway_factory, gw_config(upstream, [
            credential(provider.jwks_uri, key=provider.issuer)]))
        wait_state(gw, provider.jwks_uri, "fresh")
        assert_refused(get(gw, provider.sign({}, "bad", alg="RS256")))
    finally:
        provider.stop()


def test_a_key_of_another_type_under_the_token_kid_is_never_used(idp, upstream, gateway_factory):
    idp.add_key("ES256", "ec", publish_alg=False)
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    assert_refused(get(gw, idp.sign({}, "ec")))  # ES256-signed, RS256 credential
    assert_refused(get(gw, idp.sign({}, "k1", alg="RS384")))  # not the credential's algorithm


def test_keys_named_or_carried_by_the_token_are_never_used_nor_fetched(idp, upstream,
                                                                       gateway_factory):
    attacker = IdentityProvider().start()
    try:
        kid = attacker.add_key("RS256", "k1")  # the same kid as the real key
        gw = start(gateway_factory, gw_config(upstream, [
            credential(idp.jwks_uri, key=idp.issuer)]))
        wait_state(gw, idp.jwks_uri, "fresh")
        jwk = attacker.keys[kid][2]
        claims = {"iss": idp.issuer}
        for headers in ({"jku": attacker.jwks_uri}, {"jwk": jwk}, {"x5u": attacker.jwks_uri},
                        {"jku": attacker.jwks_uri, "kid": "unknown-kid"}):
            assert_refused(get(gw, attacker.sign(claims, kid, headers=headers)))
        import jwt as pyjwt
        for alg in ("none", "HS256"):
            forged = pyjwt.encode(claims, None if alg == "none" else "s" * 32, algorithm=alg,
                                  headers={"kid": "k1"})
            assert_refused(get(gw, forged))
        assert attacker.count() == 0
    finally:
        attacker.stop()


# ---------------------------------------------------------------- unknown kids

def test_rotation_is_picked_up_through_an_unknown_kid(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    assert idp.count() == 1
    new = idp.add_key("RS256")
    assert get(gw, idp.sign({}, new))[0] == 200  # waited for the refetch it caused
    assert idp.count() == 2
    assert get(gw, idp.sign({}, "k1"))[0] == 200
    # within the cooldown, another new key is refused at once, without a fetch
    newer = idp.add_key("RS256")
    started = time.monotonic()
    assert_refused(get(gw, idp.sign({}, newer)))
    assert time.monotonic() - started < 1 and idp.count() == 2


def test_a_flood_of_random_kids_costs_one_fetch_and_valid_requests_stay_fast(
        idp, upstream, gateway_factory):
    import http.client
    import random
    import threading
    from test_jwt_auth import raw_token
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    before = idp.count()
    valid = idp.sign({"sub": "u"})
    answers = []

    def flood(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
        for _ in range(n):
            kid = "%032x" % random.getrandbits(128)
            bad = raw_token({"alg": "RS256", "kid": kid}, {"iss": idp.issuer}, b"x" * 256)
            conn.request("GET", "/anything", headers={"Host": "a", "Authorization": bad})
            resp = conn.getresponse()
            resp.read()
            answers.append(resp.status)
        conn.close()
    threads = [threading.Thread(target=flood, args=(250,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    times = []
    while any(thread.is_alive() for thread in threads) or len(times) < 50:
        started = time.perf_counter()
        conn.request("GET", "/anything", headers={"Host": "a", "Authorization": valid})
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - started)
        assert resp.status == 200
    for thread in threads:
        thread.join(30)
    conn.close()
    assert answers == [401] * 1000
    assert idp.count() - before <= 1
    times.sort()
    assert times[int(len(times) * 0.99)] < 0.050, times[-5:]


# ---------------------------------------------------------------- outages

def test_stale_keys_serve_while_the_provider_is_down_and_the_metric_says_so(
        idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.jwks_uri, key=idp.issuer, jwks_refresh=1)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    token = idp.sign({"sub": "u"})
    fresh_token = idp.sign({"sub": "other"})
    assert get(gw, token)[0] == 200
    assert f'fastgw_jwks_stale{{uri="{idp.jwks_uri}"}} 0.0' in metrics(gw)
    for mode in ("500", "garbage", "huge", "hang"):
        idp.mode = mode
        fetched = idp.count()
        idp.wait_fetches(fetched + 1, timeout=15)
        wait_state(gw, idp.jwks_uri, "stale", timeout=15)
        assert get(gw, token)[0] == 200  # cached
        assert get(gw, fresh_token)[0] == 200  # verified with the last keys
        text = metrics(gw)
        assert f'fastgw_jwks_stale{{uri="{idp.jwks_uri}"}} 1.0' in text
        assert f'fastgw_jwks_keys{{uri="{idp.jwks_uri}"}} 1.0' in text
        idp.mode = "ok"
        wait_state(gw, idp.jwks_uri, "fresh", timeout=15)
        fresh_token = idp.sign({"sub": mode})
    text = metrics(gw)
    assert f'fastgw_jwks_stale{{uri="{idp.jwks_uri}"}} 0.0' in text
    for outcome in ("success", "error", "invalid", "timeout"):
        assert f'fastgw_jwks_fetches_total{{outcome="{outcome}",uri="{idp.jwks_uri}"}}' in text
    log = "".join(gw.log)
    assert log.count("refresh failed") == 4 and log.count("recovered") == 4  # per change
    assert "Bearer" not in log and token not in log


def test_keys_are_dropped_after_jwks_max_stale(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.jwks_uri, key=idp.issuer, jwks_refresh=1, jwks_max_stale=2)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    token = idp.sign({})
    assert get(gw, token)[0] == 200
    idp.mode = "500"
    wait_state(gw, idp.jwks_uri, "stale")
    until(lambda: key_set_status(gw, idp.jwks_uri)["keys"] is None, timeout=10)
    assert_refused(get(gw, token))  # the cached token too
    text = metrics(gw)  # stale until the next success; no keys
    assert f'fastgw_jwks_stale{{uri="{idp.jwks_uri}"}} 1.0' in text
    assert f'fastgw_jwks_keys{{uri="{idp.jwks_uri}"}} 0.0' in text
    idp.mode = "ok"
    wait_state(gw, idp.jwks_uri, "fresh")
    assert get(gw, token)[0] == 200


def test_keys_of_a_provider_that_stops_answering_stop_serving_after_jwks_max_stale(
        idp, upstream, gateway_factory):
    """A provider that accepts connections and never answers (a hung IdP, a black-holed
    route): its keys serve jwks_max_stale from the start of the first fetch it leaves
    unanswered, and are dropped then, while that fetch still waits for its 5 s time-out.
    They served 12 s and more: the staleness counted from the end of the first timed-out
    fetch, and the keys were dropped only when a later fetch had timed out too."""
    max_stale, refresh = 2, 1
    gw = start(gateway_factory, gw_config(upstream, [credential(
        idp.jwks_uri, key=idp.issuer, jwks_refresh=refresh, jwks_max_stale=max_stale)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    token = idp.sign({"sub": "u"})
    assert get(gw, token)[0] == 200
    seen = idp.count()
    idp.mode = "hang"
    stopped = time.monotonic()
    idp.wait_fetches(seen + 1, timeout=refresh + 1)  # the first fetch left unanswered
    assert get(gw, token)[0] == 200  # the last keys serve
    bound = max_stale + refresh + 1.0  # the next refresh finds the outage; 1 s slack
    until(lambda: key_set_status(gw, idp.jwks_uri)["keys"] is None, timeout=bound + 15)
    served = time.monotonic() - stopped
    assert max_stale - 0.5 <= served <= bound, (
        f"keys served {served:.1f} s after the provider stopped answering; "
        f"jwks_max_stale is {max_stale} s")
    state = key_set_status(gw, idp.jwks_uri)
    assert (state["state"], state["refreshing"]) == ("failing", True)  # the fetch still hangs
    # the cached token too, once the fetch under way has answered (it waits for that)
    assert_refused(get(gw, token))
    idp.mode = "ok"  # the hung fetch times out, the retry a second later answers
    wait_state(gw, idp.jwks_uri, "fresh", timeout=15)
    assert get(gw, token)[0] == 200


def test_a_shorter_jwks_refresh_put_in_force_is_honoured_before_the_old_one_ends(
        idp, upstream, gateway_factory):
    """jwks_refresh lowered by the admin API from an hour to 1 s counts from the last
    fetch at once: the fetcher slept on until the hour it had been given."""
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.jwks_uri, key=idp.issuer, jwks_refresh=3600)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    fetched = idp.count()
    status, body = gw.admin.call("PUT", "/admin/consumers/corp/credentials/corp-sso", {
        "key": idp.issuer, "jwks_uri": idp.jwks_uri, "jwks_refresh": 1})
    assert status == 200, body
    state = key_set_status(gw, idp.jwks_uri)
    assert state["next_refresh"] is None or \
        state["next_refresh"] - state["last_success"] <= 1.5, state
    idp.wait_fetches(fetched + 2, timeout=5)  # two refreshes, a second apart


def test_a_lower_jwks_max_stale_put_in_force_drops_keys_stale_longer_at_once(
        idp, upstream, gateway_factory):
    """jwks_max_stale lowered while the provider fails counts from its first failure at
    once, not from the next retry (30 s away here)."""
    consumer = credential(idp.jwks_uri, key=idp.issuer, jwks_refresh=60)
    gw = start(gateway_factory, gw_config(upstream, [consumer]))
    wait_state(gw, idp.jwks_uri, "fresh")
    token = idp.sign({})
    assert get(gw, token)[0] == 200
    idp.mode = "500"
    gw.admin.call("POST", "/admin/jwks/refresh")
    wait_state(gw, idp.jwks_uri, "stale")  # retried in min(jwks_refresh, 30 s)
    failed = time.monotonic()
    status, body = gw.admin.call("PUT", "/admin/consumers/corp/credentials/corp-sso", {
        **consumer["credentials"][0], "jwks_max_stale": 1})
    assert status == 200, body
    until(lambda: key_set_status(gw, idp.jwks_uri)["keys"] is None, timeout=5)
    assert time.monotonic() - failed < 3
    assert_refused(get(gw, token))


def test_a_removed_key_refuses_a_token_cached_a_moment_before(idp, upstream, gateway_factory):
    second = idp.add_key("RS256", "k2")
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]))
    wait_state(gw, idp.jwks_uri, "fresh")
    kept, removed = idp.sign({}, "k1"), idp.sign({}, second)
    assert get(gw, kept)[0] == 200 and get(gw, removed)[0] == 200  # both cached now
    idp.drop(second)
    status, sets = gw.admin.call("POST", "/admin/jwks/refresh")
    assert status == 200 and sets[0]["key_ids"] == ["k1"]
    assert_refused(get(gw, removed))
    assert get(gw, kept)[0] == 200


def test_a_set_never_fetched_refuses_its_tokens_and_the_node_serves_the_rest(
        upstream, gateway_factory):
    provider = IdentityProvider().start()
    try:
        provider.add_key("RS256", "k1")
        provider.mode = "500"
        routes = [{"name": "open", "paths": ["/open"]},
                  {"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": {
                      "key_claim_name": "iss"}}}]
        gw = start(gateway_factory, gw_config(upstream, [
            credential(provider.jwks_uri, key=provider.issuer)], routes=routes))
        assert gw.request("GET", "/open", headers={})[0] == 200
        wait_state(gw, provider.jwks_uri, "failing")
        assert_refused(get(gw, provider.sign({})))
        assert "HTTP 500" in key_set_status(gw, provider.jwks_uri)["last_error"]
        provider.mode = "ok"
        gw.admin.call("POST", "/admin/jwks/refresh")
        assert get(gw, provider.sign({}))[0] == 200
    finally:
        provider.stop()


def test_a_key_set_too_large_says_so(upstream, gateway_factory):
    """It said "not an HTTP response: `on_body` callback error"."""
    provider = IdentityProvider().start()
    try:
        provider.add_key("RS256", "k1")
        provider.mode = "huge"
        gw = start(gateway_factory, gw_config(upstream, [
            credential(provider.jwks_uri, key=provider.issuer)]))
        wait_state(gw, provider.jwks_uri, "failing")
        assert key_set_status(gw, provider.jwks_uri)["last_error"] == "larger than 1048576 bytes"
    finally:
        provider.stop()


def test_a_hanging_provider_never_blocks_start_up(upstream, gateway_factory):
    provider = IdentityProvider().start()
    try:
        provider.add_key("RS256", "k1")
        provider.mode = "hang"
        started = time.monotonic()
        routes = [{"name": "open", "paths": ["/open"]},
                  {"name": "r", "paths": ["/*"], "plugins": {"jwt-auth": {
                      "key_claim_name": "iss"}}}]
        gw = start(gateway_factory, gw_config(upstream, [
            credential(provider.jwks_uri, key=provider.issuer)], routes=routes))
        assert gw.request("GET", "/open", headers={})[0] == 200
        assert time.monotonic() - started < 4
        wait_state(gw, provider.jwks_uri, "failing", timeout=10)
        assert "no answer in 5 s" in key_set_status(gw, provider.jwks_uri)["last_error"]
        assert_refused(get(gw, provider.sign({})))
    finally:
        provider.stop()


# ---------------------------------------------------------------- discovery and TLS

def test_oidc_discovery(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.issuer, "oidc_issuer", key="corp-app", issuer=idp.issuer)],
        {"key_claim_name": "azp"}))
    wait_state(gw, idp.issuer, "fresh")
    assert idp.count("/.well-known/openid-configuration") == 1
    assert get(gw, idp.sign({"azp": "corp-app"}))[0] == 200
    assert_refused(get(gw, idp.sign({"azp": "corp-app", "iss": idp.issuer + "/other"})))


def test_discovery_with_a_mismatched_issuer_is_refused(idp, upstream, gateway_factory):
    idp.issuer_override = "https://evil.example"
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.issuer, "oidc_issuer", key=idp.issuer)]))
    state = wait_state(gw, idp.issuer, "failing")
    assert "issuer" in state["last_error"] and idp.count() == 0
    assert_refused(get(gw, idp.sign({})))
    assert f'fastgw_jwks_fetches_total{{outcome="invalid",uri="{idp.issuer}"}}' in metrics(gw)


def test_https_key_set_verified_against_jwks_ca_file(upstream, gateway_factory, tmp_path):
    ca = CertificateAuthority("jwks test CA")
    cert, key = ca.issue().write(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    provider = IdentityProvider(context).start()
    try:
        provider.add_key("ES256", "k1")
        trusted = credential(provider.issuer, "oidc_issuer", key=provider.issuer,
                             algorithm="ES256", jwks_ca_file=str(ca.write(tmp_path)))
        gw = start(gateway_factory, gw_config(upstream, [trusted]))
        wait_state(gw, provider.issuer, "fresh")
        assert get(gw, provider.sign({}))[0] == 200
        untrusted = credential(provider.jwks_uri, key=provider.issuer, algorithm="ES256")
        gw2 = start(gateway_factory, gw_config(upstream, [untrusted]))
        state = wait_state(gw2, provider.jwks_uri, "failing")
        assert "TLS" in state["last_error"]
        assert_refused(get(gw2, provider.sign({})))
    finally:
        provider.stop()


# ---------------------------------------------------------------- policy on provider keys

def test_policy_applies_to_key_set_credentials(idp, upstream, gateway_factory):
    plugin = {"audiences": ["api://orders"], "required_scopes": ["orders:read"],
              "claims_to_headers": {"sub": "X-User-Id"}}
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)],
                                          plugin))
    wait_state(gw, idp.jwks_uri, "fresh")
    status, _, body = get(gw, idp.sign({"aud": "api://orders", "scope": "orders:read",
                                        "sub": "u9"}), **{"X-User-Id": "forged"})
    assert status == 200
    assert [v for n, v in json.loads(body)["headers"] if n == "x-user-id"] == ["u9"]
    assert_refused(get(gw, idp.sign({"aud": "api://x", "scope": "orders:read"})),
                   "JWT audience not allowed", 403)
    assert_refused(get(gw, idp.sign({"aud": "api://orders"})), "JWT scope insufficient", 403)


# ---------------------------------------------------------------- configuration and commands

@pytest.mark.parametrize("cred,expected", [
    ({"jwks_uri": "http://idp.example/certs"}, "jwks_uri: must use https://"),
    ({"oidc_issuer": "http://10.0.0.1/realms/x"}, "oidc_issuer: must use https://"),
    ({"jwks_uri": "ftp://idp.example/certs"}, "jwks_uri: must start with https://"),
    ({"jwks_uri": "https://u:p@idp.example/certs"}, "jwks_uri: must not contain credentials"),
    ({"jwks_uri": "https://idp.example:0/certs"}, "jwks_uri: port must be 1-65535"),
    ({"oidc_issuer": "https://idp.example:99999/x"}, "oidc_issuer: is not a valid URL"),
    ({"jwks_uri": "https://idp.example/c", "secret": "x"}, "secret: must be absent"),
    ({"jwks_uri": "https://idp.example/c", "public_key": "x"}, "public_key: must be absent"),
    ({"jwks_uri": "https://idp.example/c", "algorithm": "HS256"},
     "algorithm: HS256 cannot be used with a key set"),
    ({"jwks_uri": "https://idp.example/c", "oidc_issuer": "https://idp.example"},
     "oidc_issuer: cannot be given with jwks_uri"),
    ({"jwks_uri": "https://idp.example/c", "jwks_ca_file": "/nonexistent.pem"},
     "jwks_ca_file: cannot be read as CA certificates"),
    ({"jwks_uri": "https://idp.example/c", "jwks_refresh": 0}, "jwks_refresh: must be at least 1"),
    ({"jwks_uri": "https://idp.example/c", "jwks_refetch_cooldown": "30"},
     "jwks_refetch_cooldown: must be an integer"),
    ({"jwks_uri": "https://idp.example/c", "jwks_max_stale": -1},
     "jwks_max_stale: must be at least 0"),
    ({"secret": "x", "jwks_ca_file": "/x.pem"}, "jwks_ca_file: is only for jwks_uri"),
])
def test_key_set_credential_errors_name_their_field(cred, expected):
    from fastgw.config import ConfigError
    from fastgw.config.schema import validate
    with pytest.raises(ConfigError) as info:
        validate({"consumers": [{"username": "u", "credentials": [{"key": "k", **cred}]}]})
    prefix = "consumers[0].credentials[0]."
    assert any(f"{p}: {m}".startswith(prefix + expected) for p, m in info.value.errors), \
        info.value.errors


def run_fastgw(*args, config_file):
    env = {**os.environ, "FASTGW_CONFIG": str(config_file)}
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          text=True, timeout=20, env=env)


def test_check_accepts_and_token_refuses_a_key_set_credential(tmp_path, upstream):
    import yaml
    path = tmp_path / "fastgw.yaml"
    path.write_text(yaml.safe_dump(gw_config(upstream, [
        credential("https://idp.example/certs", issuer="https://idp.example")])))
    assert run_fastgw("check", config_file=path).returncode == 0
    result = run_fastgw("token", "--consumer", "corp", config_file=path)
    assert result.returncode != 0
    assert "signed by the identity provider" in result.stderr
    assert "Traceback" not in result.stderr


def test_admin_api_takes_a_key_set_credential(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, []))
    status, answer = gw.admin.call("PUT", "/admin/consumers/corp", {"credentials": [{
        "id": "sso", "key": idp.issuer, "jwks_uri": idp.jwks_uri, "jwks_refresh": 60}]})
    assert status == 200, answer
    cred = answer["credentials"][0]
    assert (cred["algorithm"], cred["secret"], cred["jwks_uri"]) == ("RS256", None, idp.jwks_uri)
    wait_state(gw, idp.jwks_uri, "fresh")
    assert get(gw, idp.sign({}))[0] == 200
    status, answer = gw.admin.call("POST", "/admin/consumers/corp/credentials/sso/token", {})
    assert status == 400 and "signed by the identity provider" in answer["error_msg"]
    status, answer = gw.admin.call("PUT", "/admin/consumers/corp/credentials/sso", {
        "key": idp.issuer, "jwks_uri": "http://idp.example/certs"})
    assert status == 400 and answer["path"] == "consumers[0].credentials[0].jwks_uri"
    # the credential removed: its URL is no longer fetched, its cached tokens refused
    token = idp.sign({"n": 2})
    assert get(gw, token)[0] == 200
    assert gw.admin.call("DELETE", "/admin/consumers/corp")[0] == 200
    assert gw.admin.call("GET", "/admin/jwks") == (200, [])
    assert_refused(get(gw, token), "Invalid user key in JWT token")


def test_etcd_mode_and_config_push_take_a_key_set_credential(idp, upstream, tmp_path,
                                                             gateway_factory):
    from etcd import EtcdServer
    from test_cluster import push
    etcd = EtcdServer(tmp_path / "etcd-data").start()
    try:
        conf = gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)])
        result = push(tmp_path, etcd.endpoint, conf)
        assert result.returncode == 0, result.stderr
        assert etcd.get("/fastgw/consumers/corp")["credentials"][0]["jwks_uri"] == idp.jwks_uri
        gw = start(gateway_factory, {}, FASTGW_ETCD=etcd.endpoint,
                   FASTGW_ETCD_CACHE=str(tmp_path / "snapshot.json"))
        wait_state(gw, idp.jwks_uri, "fresh")
        assert get(gw, idp.sign({}))[0] == 200
    finally:
        etcd.kill()


# ---------------------------------------------------------------- one fetch per node

def test_workers_share_the_masters_fetch_and_a_new_worker_gets_the_keys(idp, upstream,
                                                                        gateway_factory):
    import signal
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)]),
               FASTGW_WORKERS="2")
    wait_state(gw, idp.jwks_uri, "fresh")
    tokens = [idp.sign({"n": n}) for n in range(20)]
    assert [get(gw, t)[0] for t in tokens] == [200] * 20  # on both workers, new connections
    new = idp.add_key("RS256")
    assert [get(gw, idp.sign({"n": n}, new))[0] for n in range(10)] == [200] * 10
    assert idp.count() == 2  # the start, and one refetch for both workers
    old = set(gw.worker_pids())
    os.kill(sorted(old)[0], signal.SIGKILL)
    until(lambda: len(set(gw.worker_pids()) - old) == 1 and len(gw.worker_pids()) == 2)
    gw.wait_for_log("starting a new one")
    until(lambda: all(get(gw, idp.sign({"m": n}, new))[0] == 200 for n in range(10)))
    assert idp.count() == 2  # the new worker got the keys from the master, not a fetch


def test_cache_control_max_age_sets_the_refresh_clamped(idp, upstream, gateway_factory):
    idp.cache_control = "public, max-age=5"  # below 60: 60
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.jwks_uri, key=idp.issuer, jwks_refresh=1)]))
    state = wait_state(gw, idp.jwks_uri, "fresh")
    assert 59 <= state["next_refresh"] - state["last_success"] <= 61
    idp.cache_control = "max-age=999999"
    _, sets = gw.admin.call("POST", "/admin/jwks/refresh")
    assert 86399 <= sets[0]["next_refresh"] - sets[0]["last_success"] <= 86401
    idp.cache_control = None
    _, sets = gw.admin.call("POST", "/admin/jwks/refresh")
    assert 0.5 <= sets[0]["next_refresh"] - sets[0]["last_success"] <= 1.5


def test_a_request_waiting_for_a_refetch_gets_its_claim_headers(idp, upstream, gateway_factory):
    gw = start(gateway_factory, gw_config(upstream, [credential(idp.jwks_uri, key=idp.issuer)],
                                          {"claims_to_headers": {"sub": "X-User-Id"}}))
    wait_state(gw, idp.jwks_uri, "fresh")
    # a token of another algorithm is refused before any key is looked for: no refetch
    assert_refused(get(gw, idp.sign({"sub": "x"}, idp.add_key("ES256"))))
    assert idp.count() == 1
    status, _, body = get(gw, idp.sign({"sub": "u7"}, idp.add_key("RS256")),
                          **{"X-User-Id": "forged"})
    assert status == 200 and idp.count() == 2
    assert [v for n, v in json.loads(body)["headers"] if n == "x-user-id"] == ["u7"]


def test_a_request_waiting_for_a_refetch_is_refused_if_its_consumer_goes_meanwhile(
        idp, upstream, gateway_factory):
    """Verified again once the keys came, the token's credential is looked at as it is
    then: one deleted while the request waited lets nothing through."""
    other = {"username": "other", "credentials": [  # keeps the key set in use
        {"id": "other-sso", "key": "other", "jwks_uri": idp.jwks_uri,
         "jwks_refetch_cooldown": 1}]}
    gw = start(gateway_factory, gw_config(upstream, [
        credential(idp.jwks_uri, key=idp.issuer, jwks_refetch_cooldown=1), other]))
    wait_state(gw, idp.jwks_uri, "fresh")
    new_key = idp.add_key("RS256")
    idp.mode = "held"
    path = f"/waited-{time.monotonic_ns()}"
    waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
        get, gw, idp.sign({"sub": "u1"}, new_key), path)
    idp.wait_fetches(2)  # its refetch is under way, the request waits
    assert gw.admin.call("DELETE", "/admin/consumers/corp")[0] == 200
    idp.release_held()
    assert_refused(waiting.result(timeout=15), "Invalid user key in JWT token")
    assert not [r for r in upstream.requests if r["target"] == path]


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("jwk,alg,expected", [
    ({"kty": "RSA"}, "RS256", True),
    ({"kty": "RSA", "use": "sig", "alg": "PS256"}, "PS256", True),
    ({"kty": "RSA", "use": "enc"}, "RS256", False),
    ({"kty": "RSA", "alg": "RS512"}, "RS256", False),
    ({"kty": "RSA", "key_ops": ["verify"]}, "RS256", True),
    ({"kty": "RSA", "key_ops": ["sign"]}, "RS256", False),
    ({"kty": "EC", "crv": "P-256"}, "ES256", True),
    ({"kty": "EC", "crv": "P-384"}, "ES256", False),
    ({"kty": "EC", "crv": "P-521"}, "ES512", True),
    ({"kty": "EC", "crv": "P-256"}, "RS256", False),
    ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA", True),
    ({"kty": "OKP", "crv": "X25519"}, "EdDSA", False),
    ({"kty": "oct", "k": "c2VjcmV0"}, "RS256", False),
    (["kty", "RSA"], "RS256", False),
])
def test_which_keys_serve_an_algorithm(jwk, alg, expected):
    from fastgw.keysets import usable
    assert usable(jwk, alg) is expected


@pytest.mark.parametrize("value,expected", [
    ("max-age=300", 300), ("public, max-age=1", 60), ("max-age=100000000", 86400),
    ('max-age="120"', 120), ("no-cache", 60), ("private", None), ("", None),
    ("s-maxage=10", None),
])
def test_max_age_is_clamped(value, expected):
    from fastgw.jwks import _max_age
    assert _max_age({"cache-control": value} if value else {}) == expected


def test_a_url_that_leaves_the_configuration_and_returns_serves_its_new_keys(
        idp, upstream, gateway_factory):
    consumers = [credential(idp.jwks_uri, key=idp.issuer)]
    gw = start(gateway_factory, gw_config(upstream, consumers))
    wait_state(gw, idp.jwks_uri, "fresh")
    old = idp.sign({})
    assert get(gw, old)[0] == 200
    assert gw.admin.call("DELETE", "/admin/consumers/corp")[0] == 200
    idp.drop("k1")
    idp.add_key("RS256", "k9")
    assert gw.admin.call("PUT", "/admin/consumers/corp", consumers[0])[0] == 200
    wait_state(gw, idp.jwks_uri, "fresh")
    assert get(gw, idp.sign({}, "k9"))[0] == 200
    assert_refused(get(gw, old))  # an unknown kid now: refused after the refetch it makes


def test_an_rsa_key_under_2048_bits_serves_no_token():
    """RFC 7518 3.3: a set's 512- or 1024-bit key was used, and such a key can be factored."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from fastgw.jwt import WeakKey
    from fastgw.keysets import SetKey

    def jwk(bits: int) -> dict:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
        return {**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key)), "kid": "k"}

    for bits in (1024, 1536, 2040):  # (cryptography makes none under 1024)
        with pytest.raises(WeakKey, match=f"an RSA key of {bits} bits; at least 2048"):
            SetKey(jwk(bits), "RS256")
    assert SetKey(jwk(2048), "PS256").kid == "k"
