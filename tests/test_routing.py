"""Router precedence (SPEC section 3), table-driven and property-based, plus black-box checks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from conftest import service
from fastgw.routing import (NEEDS_NORMALIZING, Route, RouteTable, lenient_readings,
                            normalize_path, parse_host)


class FakeUpstream:
    base_path = b""


def route(name, methods=(), priority=0, strip=0):
    return Route("svc", name, methods, priority, strip, FakeUpstream(), ())


def table(*entries):
    """entries: (hosts, path, Route)."""
    return RouteTable.build(entries)


@pytest.mark.parametrize("host,path,method,expected", [
    ("a.com", "/x", "GET", "exact-host"),
    ("b.a.com", "/x", "GET", "wildcard"),
    ("c.b.a.com", "/x", "GET", "wildcard"),
    ("a.com", "/only-any", "GET", "any-host"),  # falls through the host tiers
    ("other.org", "/x", "GET", "any-host"),
    ("B.A.COM", "/x", "GET", "wildcard"),
])
def test_host_tiers(host, path, method, expected):
    t = table((["a.com"], "/x", route("exact-host")),
              (["*.a.com"], "/x", route("wildcard")),
              ([], "/x", route("any-host")),
              ([], "/only-any", route("any-host")))
    assert t.match(parse_host(host.encode())[1], path.encode(), method.encode()).name == expected


@pytest.mark.parametrize("path,expected", [
    ("/api/users", "exact"),
    ("/api/users/1", "users-prefix"),
    ("/api/other", "api-prefix"),
    ("/api/", "api-prefix"),
    ("/api", None),
    ("/elsewhere", None),
])
def test_exact_beats_prefix_and_longer_prefix_beats_shorter(path, expected):
    t = table(([], "/api/*", route("api-prefix")),
              ([], "/api/users/*", route("users-prefix")),
              ([], "/api/users", route("exact")))
    found = t.match(b"h", path.encode(), b"GET")
    assert (found.name if found else None) == expected


def test_priority_breaks_ties_then_declaration_order():
    t = table(([], "/p", route("low", priority=1)),
              ([], "/p", route("high", priority=5)),
              ([], "/q", route("first")),
              ([], "/q", route("second")))
    assert t.match(b"h", b"/p", b"GET").name == "high"
    assert t.match(b"h", b"/q", b"GET").name == "first"


def test_method_must_be_allowed_and_falls_through_to_next_candidate():
    t = table(([], "/m", route("get-only", methods=["GET"])),
              ([], "/m*", route("post-prefix", methods=["POST"])))
    assert t.match(b"h", b"/m", b"GET").name == "get-only"
    assert t.match(b"h", b"/m", b"POST").name == "post-prefix"
    assert t.match(b"h", b"/m", b"DELETE") is None


@pytest.mark.parametrize("raw,expected", [
    ("/a/b", "/a/b"), ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("/../../b", "/b"),
    ("/a/%2e%2e/b", "/b"), ("/a/%2E/b", "/a/b"), ("/a/..", "/"), ("/a/b/.", "/a/b/"),
    ("/%61dmin/x", "/admin/x"), ("/a%7e%2D%5f", "/a~-_"), ("/a%2fb", "/a%2Fb"),
    ("/a%20b", "/a%20b"), ("//admin//x", "/admin/x"), ("/a;v=1/b", "/a;v=1/b"),
    ("/a\\b", None), ("/a#b", None),
])
def test_paths_are_put_in_normal_form(raw, expected):
    assert normalize_path(raw.encode()) == (None if expected is None else expected.encode())
    if raw == expected and "%" not in raw and ";" not in raw:
        assert not NEEDS_NORMALIZING(raw.encode())  # the usual path skips all of it


@pytest.mark.parametrize("path,readings", [
    ("/public/..%2Fprivate", {"/public/../private", "/private"}),
    ("/public/..%5Cprivate", {"/public/../private", "/private"}),
    ("/private%2F..%2Fx", {"/private/../x", "/x"}),
    ("/admin%2Fsecret", {"/admin/secret"}),
    ("/public/..;/private", {"/public/../private", "/private"}),
    ("/admin;/secret", {"/admin/secret"}), ("/a;v=1/b", {"/a/b"}),
    ("/files/a%2Fb", {"/files/a/b"}), ("/a%20b", {"/a%20b"}),
    ("/p/..%2F..;/x", {"/p/../..;/x", "/..;/x", "/p/../../x", "/x"}),
    ("/admin;%2F..%2Fx", {"/admin;/../x", "/x", "/admin/../x"}),
])
def test_the_lenient_readings_of_a_path(path, readings):
    assert lenient_readings(path.encode()) == {r.encode() for r in readings}


@pytest.mark.parametrize("value,forwarded,routed", [
    ("Example.COM", "Example.COM", "example.com"),
    ("example.com:8080", "example.com:8080", "example.com"),
    ("[::1]:80", "[::1]:80", "::1"), ("[::1]", "[::1]", "::1"),
    ("example.com \t", "example.com", "example.com"), ("example.com.", "example.com", "example.com"),
    ("example.com.:81", "example.com:81", "example.com"), ("a:65535", "a:65535", "a"),
])
def test_host_header_parsing(value, forwarded, routed):
    assert parse_host(value.encode()) == (forwarded.encode(), routed.encode())


@pytest.mark.parametrize("value", [
    "a@b", "a:x@b", "a,b", "a, b", "a:", "a:65536", "a:8o", "a:1:2", "a b", "a/b", "a%2eb",
    "[::1", "[::1]x", ".", "a\\b", "a;b", "\x00", "", " ", "a" * 301,
])
def test_a_host_that_is_not_host_and_port_is_refused(value):
    assert parse_host(value.encode()) == ()


segment = st.text(alphabet="abc", min_size=1, max_size=3)
paths = st.lists(segment, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))


@settings(max_examples=300, deadline=None)
@given(exact=st.lists(paths, max_size=6, unique=True),
       prefixes=st.lists(paths, max_size=6, unique=True), request=paths)
def test_router_agrees_with_the_precedence_rules(exact, prefixes, request):
    entries = [([], p, route(f"exact:{p}")) for p in exact]
    entries += [([], p + "/*", route(f"prefix:{p}/")) for p in prefixes]
    found = table(*entries).match(b"h", request.encode(), b"GET")
    if request in exact:
        expected = f"exact:{request}"
    else:
        matching = [p + "/" for p in prefixes if request.startswith(p + "/")]
        expected = f"prefix:{max(matching, key=len)}" if matching else None
    assert (found.name if found else None) == expected


def test_black_box_routing_strips_prefix_and_answers_404(upstream, gateway_factory):
    gw = gateway_factory({"services": [
        service(upstream.url, [{"name": "json", "paths": ["/json"], "methods": ["GET"]},
                               {"name": "rest", "paths": ["/rest/*"]}],
                name="v1", hosts=["cloud.test"], path_prefix="/v1"),
        service(upstream.url + "/base", [{"name": "all", "paths": ["/*"]}],
                name="wild", hosts=["*.wild.test"], strip_path_prefix=False,
                path_prefix="/keep"),
    ]})
    status, _, body = gw.request("GET", "/v1/json", host="cloud.test")
    assert status == 200 and body.startswith(b'{"slideshow"')
    status, _, body = gw.request("GET", "/v1/rest/a/b?q=1", host="cloud.test")
    assert json.loads(body)["target"] == "/rest/a/b?q=1"
    status, _, body = gw.request("GET", "/keep/x", host="a.wild.test")
    assert json.loads(body)["target"] == "/base/keep/x"
    for method, path, host in [("POST", "/v1/json", "cloud.test"), ("GET", "/v1/json", "x.test"),
                               ("GET", "/v2/json", "cloud.test"), ("GET", "/keep/x", "wild.test")]:
        status, _, body = gw.request(method, path, host=host)
        assert status == 404 and json.loads(body) == {"error_msg": "404 Route Not Found"}


def test_dot_segments_cannot_escape_a_route(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "public", "paths": ["/public/*"]}])]})
    status, _, _ = gw.request("GET", "/public/../private")
    assert status == 404
    status, _, body = gw.request("GET", "/public/a/%2e%2e/b")
    assert status == 200 and json.loads(body)["target"] == "/public/b"
    for hidden in ("/public/..%2fprivate", "/public/..\\private", "/public/..;/private"):
        status, _, body = gw.request("GET", hidden)
        assert status == 400 and json.loads(body) == {"error_msg": "400 Bad Request"}


def test_a_path_another_server_reads_as_another_route_is_refused(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "open", "paths": ["/*"]},
        {"name": "admin", "paths": ["/admin/*"], "plugins": {"jwt-auth": {}}}])],
        "consumers": []})
    for confusing in ("/admin%2Fsecret", "/admin%5csecret", "/admin;/secret",
                      "/admin\\secret", "/x/..%2Fadmin/secret", "/admin%2F..%2Fx",
                      "/admin%2F..", "/admin%2F..;/x"):
        status, _, _ = gw.request("GET", confusing)
        assert status == 400, confusing
    for same_route, routed in (("/%61dmin/secret", 401), ("//admin/secret", 401),
                               ("/files/a%2Fb", 200), ("/x;v=1/y", 200)):
        status, _, body = gw.request("GET", same_route)
        assert status == routed, same_route
        if status == 200:
            assert json.loads(body)["target"] == same_route


def test_a_fragment_in_the_path_is_refused_not_routed_past_a_plugin(upstream, gateway_factory):
    # Servers that end the path at "#" would serve "/admin#x" as "/admin": had it been
    # routed as it is, it would take the open route past the plugin of "/admin".
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "open", "paths": ["/*"]},
        {"name": "admin", "paths": ["/admin"], "plugins": {"key-auth": {}}},
        {"name": "locked", "paths": ["/locked/*"], "plugins": {"key-auth": {}}}])],
        "consumers": []})
    for target in (b"/admin#x", b"/admin#", b"/locked#/a", b"http://api.test/admin#x",
                   b"/x#/../admin"):
        with gw.raw() as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: api.test\r\n\r\n")
            status, _, body = c.response()
        assert (status, json.loads(body)) == (400, {"error_msg": "400 Bad Request"}), target
    assert gw.request("GET", "/admin")[0] == 401
    with gw.raw() as c:  # in the query, "#" is the query's: the path routes as it is
        c.send(b"GET /x?a=1#b HTTP/1.1\r\nHost: api.test\r\n\r\n")
        status, _, body = c.response()
    assert status == 200 and json.loads(body)["target"] == "/x?a=1#b"


def test_absolute_form_request_target_is_accepted(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET http://api.test/abs?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
        status, _, body = c.response()
    seen = json.loads(body)
    assert status == 200 and seen["target"] == "/abs?x=1"
    assert dict(seen["headers"])["host"] == "api.test"
