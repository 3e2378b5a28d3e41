"""The web console (SPEC section 10) in a real browser: Debian's Chromium, headless,
driven by Playwright; the gateway's answers checked with a plain HTTP client.

Elements are found by their role and label, as a user (or a screen reader) finds them.
The README's screenshots (docs/console-*.png) are taken here.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jwt as pyjwt
import pytest

from conftest import ROOT, Gateway, free_port

playwright_api = pytest.importorskip("playwright.sync_api")
expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "console-admin-key-for-tests"
SHOTS = ROOT / "docs"

pytestmark = [pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no " + CHROMIUM),
              pytest.mark.timeout(60)]

expect.set_options(timeout=5000)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def start_gateway(tmp_path: Path, config: dict) -> Gateway:
    gw = Gateway(tmp_path, config, {"FASTGW_ADMIN_KEY": KEY, "FASTGW_WORKERS": "1",
                                    "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.admin_port = int(gw.env["FASTGW_ADMIN_LISTEN"].rsplit(":", 1)[1])
    gw.start()
    gw.wait_for_log("admin API on")
    gw.console = f"http://127.0.0.1:{gw.admin_port}/ui/"
    return gw


@pytest.fixture(scope="module")
def files_gw(tmp_path_factory):
    """A gateway for the tests that only read files and send no change."""
    gw = start_gateway(tmp_path_factory.mktemp("files"), {})
    yield gw
    gw.stop()


@pytest.fixture
def gateway(tmp_path):
    started = []

    def make(config=None):
        gw = start_gateway(tmp_path, config or {})
        started.append(gw)
        return gw
    yield make
    for gw in started:
        gw.stop()


class Page:
    """A fresh browser context on the console, recording every request the page makes."""

    def __init__(self, browser, gw):
        self.context = browser.new_context(viewport={"width": 800, "height": 600},
                                           timezone_id="UTC", locale="en-GB")
        self.page = self.context.new_page()
        self.requests = []  # every playwright Request the page made
        self.page.on("request", lambda r: self.requests.append(r))
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # a CSP refusal is logged as an error; an answer's 4xx is the test's to check
        self.page.on("console", lambda m: m.type == "error" and not m.text.startswith(
            "Failed to load resource") and self.errors.append(m.text))
        self.gw = gw

    def open(self, sign_in=True):
        self.page.goto(self.gw.console)
        if sign_in:
            self.page.get_by_label("Admin key").fill(KEY)
            self.page.get_by_role("button", name="Sign in").click()
            expect(self.page.get_by_role("heading", name="Services")).to_be_visible()
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def console(browser):
    opened = []

    def make(gw):
        page = Page(browser, gw)
        opened.append(page)
        return page
    yield make
    for page in opened:
        page.close()


def admin(gw, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=10)
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                 headers={"X-API-KEY": KEY})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"null")
    conn.close()
    return out


def raw_get(port, target):
    """A request as sent, unnormalised (http.client keeps the target as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", target, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def open_consumer(page, username: str) -> None:
    """The consumer's page, reached as a user does: Consumers, then its name."""
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    page.get_by_role("link", name=username, exact=True).click()


def credential_dialog(page, username: str, **fields: str):
    """The consumer's Add Credential dialog, reached from its page, its fields filled
    (label=value: ID, Key, Secret); not yet added."""
    open_consumer(page, username)
    page.get_by_role("button", name="Add Credential").click()
    dialog = page.get_by_role("dialog", name=f"Add Credential to {username}")
    for label, value in fields.items():
        dialog.get_by_label(label, exact=True).fill(value)
    return dialog


def expect_error(control, message):
    """The control is marked invalid, and the error is part of its description."""
    expect(control).to_have_attribute("aria-invalid", "true")
    pattern = message if isinstance(message, re.Pattern) else re.compile(re.escape(message))
    expect(control).to_have_accessible_description(pattern)


def screenshot(page, name):
    """docs/console-NAME.png for the README, taken when FASTGW_SCREENSHOTS is set
    (`FASTGW_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_console.py -k walkthrough`),
    made small with pngquant and optipng when they are installed."""
    if not os.environ.get("FASTGW_SCREENSHOTS"):
        return
    path = SHOTS / f"console-{name}.png"
    page.screenshot(path=str(path))
    if shutil.which("pngquant"):
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--output", str(path), "64",
                        str(path)], check=False)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", str(path)], check=False)


# ---------------------------------------------------------------- serving the files

def test_console_files_are_served_with_a_strict_policy(files_gw):
    gw = files_gw
    status, headers, body = raw_get(gw.admin_port, "/ui/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "img-src 'self'", "base-uri 'none'",
                      "form-action 'none'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert b"<script type=\"module\" src=\"app.js\">" in body
    assert b"style=" not in body and b"<style" not in body and b"onclick" not in body
    for name, kind in (("app.js", "text/javascript"), ("console.css", "text/css"),
                       ("index.html", "text/html"), ("favicon.svg", "image/svg+xml")):
        status, headers, _ = raw_get(gw.admin_port, "/ui/" + name)
        assert status == 200 and headers["content-type"].startswith(kind), name
        assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = raw_get(gw.admin_port, "/ui")
    assert status == 301 and headers["location"] == "/ui/"


@pytest.mark.parametrize("target", [
    "/ui/../admin/status", "/ui/..%2fadmin%2fstatus", "/ui/%2e%2e/%2e%2e/etc/passwd",
    "/ui/..%2F..%2F__init__.py", "/ui/__init__.py", "/ui/%2e%2e%2f__init__.py",
    "/ui/./index.html/..", "/ui/..\\__init__.py", "/ui/%5c..%5c__init__.py", "/ui/nope.js",
    "/ui/index.html%00.js", "/ui//etc/passwd", "/ui/%2Fetc%2Fpasswd", "/ui/.../",
])
def test_no_path_reaches_outside_the_console_files(files_gw, target):
    gw = files_gw
    status, headers, body = raw_get(gw.admin_port, target)
    assert status in (401, 404), (target, status)  # 401: the admin API's, never a file
    assert b"import" not in body and b"root:" not in body
    if status == 404:
        assert headers["x-content-type-options"] == "nosniff"


def test_the_page_needs_no_key_but_the_api_still_does(files_gw):
    gw = files_gw
    assert raw_get(gw.admin_port, "/ui/app.js")[0] == 200
    assert raw_get(gw.admin_port, "/admin/status")[0] == 401
    assert raw_get(gw.admin_port, "/admin/ui/")[0] == 401


# ---------------------------------------------------------------- the guide, end to end

def test_the_walkthrough_in_the_console(gateway, console, upstream):
    gw = gateway()
    c = console(gw)
    page = c.open(sign_in=False)

    # a wrong key: an error, and nothing else
    page.get_by_label("Admin key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="Wrong admin key")).to_be_visible()
    expect(page.get_by_role("navigation")).to_be_hidden()
    expect(page.get_by_role("main")).to_be_hidden()
    page.get_by_label("Admin key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Services")).to_be_visible()

    # 1. the service
    page.get_by_role("button", name="Create Service").click()
    page.get_by_label("Name", exact=True).fill("jwt-auth-app")
    page.get_by_label("Hosts").fill("cloud.httpbin.org")
    page.get_by_label("Path prefix", exact=True).fill("/v1")
    page.get_by_label("Upstream URL").fill(upstream.url)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Service jwt-auth-app")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Service created.")
    assert gw.request("GET", "/v1/json", host="cloud.httpbin.org")[0] == 404  # no route yet

    # 2. the route
    page.get_by_role("button", name="Add Route").click()
    page.get_by_label("Name", exact=True).fill("json")
    page.get_by_label("Paths").fill("/json")
    page.get_by_label("GET", exact=True).check()
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Route json")).to_be_visible()
    status, _, body = gw.request("GET", "/v1/json", host="cloud.httpbin.org")
    assert status == 200 and body == upstream_json()
    assert gw.request("POST", "/v1/json", host="cloud.httpbin.org")[0] == 404  # GET only

    # 3. Add Plugin -> Authentication -> JWT Auth, on the route
    page.get_by_role("button", name="Add Plugin").click()
    chooser = page.get_by_role("dialog", name="Add Plugin")
    chooser.get_by_role("button", name="Authentication").click()
    chooser.get_by_role("button", name="JWT Auth").click()
    dialog = page.get_by_role("dialog", name="JWT Auth on route json")
    expect(dialog.get_by_label("Header", exact=True)).to_have_value("Authorization")
    expect(dialog.get_by_label("Query")).to_have_value("jwt")
    expect(dialog.get_by_label("Cookie")).to_have_value("jwt")
    expect(dialog.get_by_label("Strip Credentials")).not_to_be_checked()
    screenshot(page, "jwt-auth-plugin")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Edit JWT Auth")).to_be_visible()

    # 4. no token
    status, headers, body = gw.request("GET", "/v1/json", host="cloud.httpbin.org")
    assert status == 401 and json.loads(body) == {"message": "Missing JWT token in request"}

    # 5. the consumer and its credential, the secret generated by the server
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    page.get_by_role("button", name="Create Consumer").click()
    page.get_by_label("Username").fill("oiloil")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Consumer oiloil")).to_be_visible()
    page.get_by_role("button", name="Add Credential").click()
    dialog = page.get_by_role("dialog", name="Add Credential to oiloil")
    expect(dialog.get_by_label("Type")).to_have_value("jwt-auth")
    expect(dialog.get_by_label("Algorithm")).to_have_value("HS256")
    dialog.get_by_label("Key", exact=True).fill("oiloil_key")
    screenshot(page, "credential")
    dialog.get_by_role("button", name="Add").click()
    shown = page.get_by_role("dialog", name="Generated secret")
    expect(shown).to_contain_text("will not be shown again")
    secret = shown.get_by_label("Secret").input_value()
    assert len(secret) >= 40
    shown.get_by_role("button", name="Close").click()
    cred = admin(gw, "GET", "/admin/consumers/oiloil")[1]["credentials"][0]
    assert cred["key"] == "oiloil_key" and cred["secret"] == "***"
    assert cred["algorithm"] == "HS256"
    expect(page.get_by_role("table", name="Credentials")).to_contain_text("oiloil_key")

    # 6. Generate JSON Web Token: an expiry, user "oiloil" and age 18 (a number)
    page.get_by_role("button", name="Generate JSON Web Token").click()
    dialog = page.get_by_role("dialog", name="Generate JSON Web Token for oiloil")
    dialog.get_by_label("Expires at").fill("2030-01-01T00:00:00")
    dialog.get_by_label("Payload field 1 name").fill("user")
    dialog.get_by_label("Payload field 1 value").fill("oiloil")
    dialog.get_by_role("button", name="Add payload field").click()
    dialog.get_by_label("Payload field 2 name").fill("age")
    dialog.get_by_label("Payload field 2 value").fill("18")
    dialog.get_by_role("button", name="Add payload field").click()
    dialog.get_by_label("Payload field 3 name").fill("admin")
    dialog.get_by_label("Payload field 3 value").fill("true")
    dialog.get_by_role("button", name="Add payload field").click()
    dialog.get_by_label("Payload field 4 name").fill("code")
    dialog.get_by_label("Payload field 4 value").fill('"18"')
    dialog.get_by_role("button", name="Generate").click()
    shown = page.get_by_role("dialog", name="JSON Web Token")
    expect(shown).to_contain_text("This token will not be shown again")
    token = shown.get_by_label("Token").input_value()
    screenshot(page, "token")
    c.context.grant_permissions(["clipboard-read", "clipboard-write"])
    shown.get_by_role("button", name="Copy").click()
    expect(shown.get_by_role("status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == token
    shown.get_by_role("button", name="Close").click()
    claims = pyjwt.decode(token, secret.encode(), algorithms=["HS256"])
    assert claims["exp"] == 1893456000 and claims["key"] == "oiloil_key"
    assert claims["user"] == "oiloil" and claims["age"] == 18 and claims["admin"] is True
    assert claims["code"] == "18"

    # 7. with the token (and with Bearer): the upstream's body, byte for byte
    for value in (token, f"Bearer {token}"):
        status, _, body = gw.request("GET", "/v1/json", host="cloud.httpbin.org",
                                     headers={"Authorization": value})
        assert status == 200 and body == upstream_json()

    # 8. a wrong token
    status, _, body = gw.request("GET", "/v1/json", host="cloud.httpbin.org",
                                 headers={"Authorization": "wrong token"})
    assert status == 401 and json.loads(body) == {"message": "JWT token invalid"}

    # Status
    page.get_by_role("navigation").get_by_role("link", name="Status").click()
    expect(page.get_by_role("heading", name="Status")).to_be_visible()
    status = admin(gw, "GET", "/admin/status")[1]
    expect(page.get_by_role("term")).to_have_text([
        "Version", "Configuration revision", "Workers", "Worker restarts",
        "Configuration source", "etcd"])
    expect(page.get_by_role("definition")).to_have_text([
        status["version"], str(status["revision"]), f"1 (pids {status['workers'][0]})", "0",
        status["config_source"], "not used (configuration from a file)"])

    # the key never in a URL or a cookie, and no request to another host
    assert_only_its_own_host(c, gw)


def assert_only_its_own_host(c, gw):
    """Every request went to the admin listener, the key only ever in X-API-KEY, never in
    a URL or a cookie; and the page logged no error (a CSP violation included)."""
    origin = f"http://127.0.0.1:{gw.admin_port}/"
    assert c.requests and all(r.url.startswith(origin) for r in c.requests), \
        [r.url for r in c.requests if not r.url.startswith(origin)]
    assert not any(KEY in r.url for r in c.requests)
    assert c.context.cookies() == [] and c.page.evaluate("document.cookie") == ""
    for r in c.requests:
        headers = r.all_headers()
        assert "cookie" not in headers
        if "/admin/" in r.url:
            assert headers.get("x-api-key") in (KEY, "not-the-key", "an-old-key")
        else:
            assert "x-api-key" not in headers
    assert not c.errors, c.errors


def upstream_json() -> bytes:
    from upstream import JSON_DOC
    return JSON_DOC


# ---------------------------------------------------------------- a round trip changes nothing

RICH = {
    "services": [{
        "name": "orders", "hosts": ["api.test", "*.orders.test"], "path_prefix": "/orders",
        "strip_path_prefix": False, "plugins": {"key-auth": {"header": "x-key"}},
        "upstream": {"nodes": [{"host": "127.0.0.1", "port": 1, "weight": 3},
                               {"host": "127.0.0.2", "port": 2}],
                     "pass_host": "rewrite", "upstream_host": "orders.internal",
                     "timeout": {"connect": 1.5, "send": 7, "read": 9},
                     "keepalive_pool": {"size": 5, "idle_timeout": 11, "requests": 50},
                     "retries": 1, "max_connections": 20},
        "routes": [{"name": "list", "paths": ["/list", "/all/*"], "methods": ["GET", "HEAD"],
                    "priority": 7, "plugins": {"jwt-auth": {
                        "header": "x-token", "query": "t", "cookie": "c",
                        "hide_credentials": True, "key_claim_name": "kid2",
                        "anonymous_consumer": "guest"}}}],
    }],
    "consumers": [
        {"username": "guest"},
        {"username": "jack", "credentials": [
            {"id": "jack-jwt", "key": "jack-key", "secret": base64.b64encode(b"s3cr3t" * 8).decode(),
             "base64_secret": True, "algorithm": "HS384", "exp": 600,
             "lifetime_grace_period": 5},
            {"type": "key-auth", "key": "jack-api-key-0123456789"}]},
    ],
}


def test_opening_and_saving_unchanged_changes_nothing(gateway, console, upstream):
    gw = gateway(RICH)
    before = admin(gw, "GET", "/admin/config")[1]
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="orders", exact=True).click()
    expect(page.get_by_role("radio", name="Nodes")).to_be_checked()
    expect(page.get_by_role("textbox", name="Nodes")).to_have_value("127.0.0.1:1 3\n127.0.0.2:2")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Service saved.")
    # the service's plugin, opened and saved as it is
    page.get_by_role("button", name="Edit Key Auth").click()
    dialog = page.get_by_role("dialog", name="Key Auth on service orders")
    expect(dialog.get_by_label("Header", exact=True)).to_have_value("x-key")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    # the route and its plugin
    page.get_by_role("table", name="Routes").get_by_role("link", name="list", exact=True).click()
    expect(page.get_by_label("GET", exact=True)).to_be_checked()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Route saved.")
    page.get_by_role("button", name="Edit JWT Auth").click()
    dialog = page.get_by_role("dialog", name="JWT Auth on route list")
    expect(dialog.get_by_label("Strip Credentials")).to_be_checked()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    # both credentials, whose secrets the page never had
    open_consumer(page, "jack")
    for cred in ("jack-jwt", "jack-key-auth"):
        page.get_by_role("button", name=f"Edit credential {cred}").click()
        dialog = page.get_by_role("dialog", name=f"Credential {cred}")
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()
        expect(page.get_by_role("status")).to_have_text("Credential saved.")
    status = admin(gw, "GET", "/admin/status")[1]
    assert status["revision"] >= 7  # every save went through the admin API
    assert admin(gw, "GET", "/admin/config")[1] == before
    # and the secrets still verify
    token = pyjwt.encode({"kid2": "jack-key"}, base64.b64decode(
        RICH["consumers"][1]["credentials"][0]["secret"]), algorithm="HS384")
    status, _, _ = gw.request("GET", "/orders/list", host="api.test",
                              headers={"x-token": token, "x-key": "jack-api-key-0123456789"})
    assert status == 502  # authenticated, then the unreachable nodes
    assert_only_its_own_host(c, gw)


def test_a_service_moved_from_https_nodes_to_an_http_url_goes_to_the_url(gateway, console,
                                                                          upstream):
    gw = gateway({"services": [{"name": "moved", "upstream": {
        "nodes": [{"host": "127.0.0.1", "port": 1}], "scheme": "https"},
        "routes": [{"name": "all", "paths": ["/*"]}]}]})
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="moved", exact=True).click()
    page.get_by_role("radio", name="URL", exact=True).check()
    page.get_by_label("Upstream URL").fill(upstream.url)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Service saved.")
    up = admin(gw, "GET", "/admin/services/moved")[1]["upstream"]
    assert (up["url"], up["nodes"], up["scheme"]) == (upstream.url, None, "http")
    assert gw.request("GET", "/x")[0] == 200


# ---------------------------------------------------------------- errors at their fields

def test_a_validation_error_is_shown_at_its_field(gateway, console, upstream):
    gw = gateway({"services": [{"name": "svc", "upstream": {"url": upstream.url},
                                "routes": [{"name": "r", "paths": ["/r"]}]}],
                  "consumers": [{"username": "taken", "credentials": [{"key": "k1", "secret": "s" * 32}]},
                                {"username": "other"}]})
    before = admin(gw, "GET", "/admin/config")[1]
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="svc", exact=True).click()
    prefix = page.get_by_label("Path prefix", exact=True)
    prefix.fill("v1")
    page.get_by_role("button", name="Save").click()
    expect(prefix).to_have_attribute("aria-invalid", "true")
    expect_error(prefix, 'must start with "/"')
    expect(prefix).to_be_focused()
    prefix.fill("/v1")
    hosts = page.get_by_label("Hosts")
    hosts.fill("good.test, bad_host!")
    page.get_by_role("button", name="Save").click()
    expect_error(hosts, re.compile("is not a host name"))
    expect(prefix).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("radio", name="Nodes").check()
    page.get_by_role("textbox", name="Nodes").fill("10.0.0.1")
    hosts.fill("good.test")
    page.get_by_role("button", name="Save").click()
    nodes = page.get_by_role("textbox", name="Nodes")
    expect_error(nodes, re.compile("expected host:port"))
    page.get_by_role("radio", name="URL").check()
    page.get_by_label("Upstream URL").fill("ftp://x")
    page.get_by_role("button", name="Save").click()
    expect_error(page.get_by_label("Upstream URL"), 
        "must start with http:// or https://")
    assert admin(gw, "GET", "/admin/config")[1] == before

    # a route's path, and a plugin's header in its dialog
    page.get_by_role("table", name="Routes").get_by_role("link", name="r", exact=True).click()
    paths = page.get_by_label("Paths")
    paths.fill("/ok, nope")
    page.get_by_role("button", name="Save").click()
    expect_error(paths, 'must start with "/"')
    page.get_by_role("button", name="Add Plugin").click()
    page.get_by_role("button", name="Authentication").click()
    page.get_by_role("button", name="JWT Auth").click()
    dialog = page.get_by_role("dialog", name="JWT Auth on route r")
    dialog.get_by_label("Header", exact=True).fill("two words")
    dialog.get_by_label("Anonymous consumer").fill("nobody")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog.get_by_label("Header", exact=True)).to_have_attribute("aria-invalid", "true")
    dialog.get_by_label("Header", exact=True).fill("Authorization")
    dialog.get_by_role("button", name="Add").click()
    expect_error(dialog.get_by_label("Anonymous consumer"), 
        re.compile("no consumer named 'nobody'"))
    dialog.get_by_role("button", name="Cancel").click()
    assert admin(gw, "GET", "/admin/config")[1] == before

    # a credential's key that another consumer has: 409, at the key
    dialog = credential_dialog(page, "other", ID="other-jwt", Key="k1")
    dialog.get_by_role("button", name="Add").click()
    expect_error(dialog.get_by_label("Key", exact=True), 
        "duplicate key 'k1'")
    assert admin(gw, "GET", "/admin/config")[1] == before
    assert_only_its_own_host(c, gw)


def test_create_and_add_never_replace_what_exists(gateway, console, upstream):
    """Create Service, Add Route, Create Consumer and Add Credential under a name taken:
    the error is at the name and nothing changes (each replaced the object: Add Route
    with a protected route's name made it an open one)."""
    gw = gateway({"services": [{"name": "app", "upstream": {"url": upstream.url}, "routes": [
        {"name": "json", "paths": ["/json"], "plugins": {"jwt-auth": {}}}]}],
        "consumers": [{"username": "oiloil", "credentials": [
            {"id": "oiloil-jwt", "key": "oiloil_key", "secret": "s" * 32}]}]})
    before = admin(gw, "GET", "/admin/config")[1]
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="app", exact=True).click()
    page.get_by_role("button", name="Add Route").click()
    page.get_by_label("Name", exact=True).fill("json")
    page.get_by_label("Paths").fill("/json")
    page.get_by_role("button", name="Create").click()
    expect_error(page.get_by_label("Name", exact=True), "route 'json' exists already")
    assert gw.request("GET", "/json")[0] == 401  # still protected
    page.get_by_role("navigation").get_by_role("link", name="Services").click()
    page.get_by_role("button", name="Create Service").click()
    page.get_by_label("Name", exact=True).fill("app")
    page.get_by_label("Upstream URL").fill(upstream.url)
    page.get_by_role("button", name="Create").click()
    expect_error(page.get_by_label("Name", exact=True), "service 'app' exists already")
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    page.get_by_role("button", name="Create Consumer").click()
    page.get_by_label("Username").fill("oiloil")
    page.get_by_role("button", name="Create").click()
    expect_error(page.get_by_label("Username"), "consumer 'oiloil' exists already")
    dialog = credential_dialog(page, "oiloil", ID="oiloil-jwt", Key="other_key")
    dialog.get_by_role("button", name="Add").click()
    expect_error(dialog.get_by_label("ID", exact=True), "credential 'oiloil-jwt' exists already")
    assert admin(gw, "GET", "/admin/config")[1] == before
    assert_only_its_own_host(c, gw)


def test_a_save_keeps_routes_and_plugins_changed_elsewhere_meanwhile(gateway, console, upstream):
    """The service page was open while jwt-auth was put on its route and a route added
    through the admin API: saving the service's own fields keeps both (the page sent back
    the routes as it had read them, which opened the route and dropped the new one)."""
    gw = gateway({"services": [{"name": "app", "upstream": {"url": upstream.url}, "routes": [
        {"name": "json", "paths": ["/json"]}]}]})
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="app", exact=True).click()
    expect(page.get_by_role("heading", name="Service app")).to_be_visible()
    assert admin(gw, "PUT", "/admin/services/app/routes/json",
                 {"paths": ["/json"], "plugins": {"jwt-auth": {}}})[0] == 200
    assert admin(gw, "PUT", "/admin/services/app/routes/more", {"paths": ["/more"]})[0] == 200
    page.get_by_label("Hosts").fill("api.test")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Service saved.")
    saved = admin(gw, "GET", "/admin/services/app")[1]
    assert saved["hosts"] == ["api.test"]
    assert [(r["name"], r["plugins"]) for r in saved["routes"]] == [
        ("json", {"jwt-auth": saved["routes"][0]["plugins"]["jwt-auth"]}), ("more", {})]
    assert gw.request("GET", "/json", host="api.test")[0] == 401
    # the route page open while its methods change elsewhere, and the jwt-auth stays
    page.get_by_role("table", name="Routes").get_by_role("link", name="json", exact=True).click()
    assert admin(gw, "PUT", "/admin/services/app/routes/json",
                 {"paths": ["/json"], "plugins": {}})[0] == 200
    assert admin(gw, "PUT", "/admin/services/app/routes/json",
                 {"paths": ["/json"], "plugins": {"jwt-auth": {"hide_credentials": True}}})[0] == 200
    page.get_by_label("Paths").fill("/json, /v2/json")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Route saved.")
    route = admin(gw, "GET", "/admin/services/app/routes/json")[1]
    assert route["paths"] == ["/json", "/v2/json"]
    assert route["plugins"]["jwt-auth"]["hide_credentials"] is True


def test_a_malformed_place_in_the_address_shows_the_services(gateway, console):
    """"#consumer/%E0%A4%A" (cut off mid-escape) threw "URI malformed" and left the page
    as it was."""
    gw = gateway({"consumers": [{"username": "oiloil"}]})
    c = console(gw)
    page = c.open()
    open_consumer(page, "oiloil")
    page.goto(gw.console + "#consumer/%E0%A4%A")
    expect(page.get_by_role("heading", name="Services")).to_be_visible()
    assert c.errors == []


# ---------------------------------------------------------------- names are text

HTML_KEY = "<img/src=x/onerror=window.pwned=1>"
HTML_ID = "<b>bold</b>&amp;"


def test_a_name_holding_html_is_shown_as_text(gateway, console, upstream):
    gw = gateway({"consumers": [{"username": "mallory"}]})
    c = console(gw)
    page = c.open()
    dialog = credential_dialog(page, "mallory", ID=HTML_ID, Key=HTML_KEY, Secret="x" * 40)
    dialog.get_by_role("button", name="Add").click()
    table = page.get_by_role("table", name="Credentials")
    expect(table.get_by_role("cell", name=HTML_ID, exact=True)).to_be_visible()
    expect(table.get_by_role("cell", name=HTML_KEY, exact=True)).to_be_visible()
    assert table.locator("img, b").count() == 0
    cred = admin(gw, "GET", "/admin/consumers/mallory")[1]["credentials"][0]
    assert cred["id"] == HTML_ID and cred["key"] == HTML_KEY  # named in its URL, encoded
    # an error message echoing a value shows it as text too
    page.get_by_role("navigation").get_by_role("link", name="Services").click()
    page.get_by_role("button", name="Create Service").click()
    page.get_by_label("Name", exact=True).fill("svc")
    page.get_by_label("Hosts").fill("<i>x</i>")
    page.get_by_label("Upstream URL").fill(upstream.url)
    page.get_by_role("button", name="Create").click()
    expect_error(page.get_by_label("Hosts"), 
        re.compile(re.escape("'<i>x</i>' is not a host name")))
    assert page.locator("main i, main img").count() == 0
    # the credential is edited and deleted through its encoded id
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    expect(page.get_by_role("table", name="Consumers")).to_contain_text(HTML_KEY)
    page.get_by_role("link", name="mallory", exact=True).click()
    page.get_by_role("button", name=f"Delete credential {HTML_ID}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No credentials yet.")).to_be_visible()
    assert admin(gw, "GET", "/admin/consumers/mallory")[1]["credentials"] == []
    assert page.evaluate("window.pwned") is None
    assert_only_its_own_host(c, gw)


def test_a_delete_the_admin_api_refuses_says_why(gateway, console, upstream):
    """It showed nothing: the page went on as if the consumer was deleted."""
    gw = gateway({
        "services": [{"name": "svc", "upstream": {"url": upstream.url}, "routes": [
            {"name": "r", "paths": ["/*"], "plugins": {"key-auth": {"anonymous_consumer": "anon"}}}]}],
        "consumers": [{"username": "anon"}]})
    c = console(gw)
    page = c.open()
    open_consumer(page, "anon")
    page.get_by_role("button", name="Delete Consumer").click()
    dialog = page.get_by_role("dialog", name="Delete consumer anon?")
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog.get_by_role("alert")).to_contain_text("no consumer named 'anon'")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name="Consumer anon")).to_be_visible()
    assert [u["username"] for u in admin(gw, "GET", "/admin/consumers")[1]] == ["anon"]
    assert c.errors == []


# ---------------------------------------------------------------- many consumers

def test_a_thousand_consumers_are_listed_and_searched_in_under_a_second(gateway, console):
    gw = gateway()
    consumers = [{"username": f"user-{i:04d}", "credentials": [
        {"key": f"key-{i:04d}", "secret": f"secret-{i:04d}-" + "x" * 32}]} for i in range(1000)]
    assert admin(gw, "PUT", "/admin/config", {"services": [], "consumers": consumers})[0] == 200
    c = console(gw)
    page = c.open()
    rows = page.get_by_role("table", name="Consumers").locator("tbody tr:visible")
    # timed in the page: from the click's (then the keystroke's) event to the frame that
    # shows its result, leaving out the time the test driver takes to send it
    page.evaluate("""() => { window.marks = {};
        for (const type of ['click', 'input'])
            document.addEventListener(type, (e) => { window.marks[type] = performance.now(); },
                                      {capture: true}); }""")
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    listed = page.wait_for_function(
        "() => document.querySelectorAll('table[aria-label=Consumers] tbody tr').length === 1000"
        " && performance.now() - window.marks.click", polling="raf").json_value()
    expect(rows).to_have_count(1000)
    expect(page.get_by_role("status")).to_have_text("1000 of 1000 consumers")
    search = page.get_by_label("Search consumers")
    search.fill("key-0777")
    found = page.wait_for_function(
        "() => document.querySelectorAll('table[aria-label=Consumers] tbody tr:not([hidden])')"
        ".length === 1 && performance.now() - window.marks.input", polling="raf").json_value()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("user-0777")
    search.fill("user-09")
    expect(rows).to_have_count(100)
    print(f"1,000 consumers listed in {listed:.0f} ms, searched in {found:.0f} ms")
    assert listed < 1000, f"listed in {listed:.0f} ms"
    assert found < 1000, f"searched in {found:.0f} ms"
    rows.get_by_role("link", name="user-0901", exact=True).click()
    expect(page.get_by_role("heading", name="Consumer user-0901")).to_be_visible()


# ---------------------------------------------------------------- the rest of the screens

def test_services_routes_plugins_and_consumers_are_edited_and_deleted(gateway, console, upstream):
    gw = gateway({"services": [{"name": "old", "upstream": {"url": upstream.url}}]})
    c = console(gw)
    page = c.open()
    # a service on nodes, Key Auth on the whole service
    page.get_by_role("button", name="Create Service").click()
    page.get_by_label("Name", exact=True).fill("echo")
    page.get_by_label("Path prefix", exact=True).fill("/e")
    page.get_by_role("radio", name="Nodes").check()
    host, port = upstream.url.removeprefix("http://").rsplit(":", 1)
    page.get_by_role("textbox", name="Nodes").fill(f"{host}:{port} 2")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Service echo")).to_be_visible()
    up = admin(gw, "GET", "/admin/services/echo")[1]["upstream"]
    assert up["url"] is None and up["nodes"] == [{"host": host, "port": int(port), "weight": 2}]
    page.get_by_role("button", name="Add Route").click()
    page.get_by_label("Name", exact=True).fill("all")
    page.get_by_label("Paths").fill("/*")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Route all")).to_be_visible()
    assert gw.request("GET", "/e/x")[0] == 200
    page.get_by_role("button", name="Back to service echo").click()
    page.get_by_role("button", name="Add Plugin").click()
    page.get_by_role("button", name="Authentication").click()
    page.get_by_role("button", name="Key Auth").click()
    dialog = page.get_by_role("dialog", name="Key Auth on service echo")
    expect(dialog.get_by_label("Header", exact=True)).to_have_value("apikey")
    dialog.get_by_label("Strip Credentials").check()
    dialog.get_by_role("button", name="Add").click()
    expect(dialog).to_be_hidden()
    status, _, body = gw.request("GET", "/e/x")
    assert status == 401 and json.loads(body) == {"message": "Missing API key in request"}

    # a consumer with a key-auth credential whose key the server generates, shown once
    page.get_by_role("navigation").get_by_role("link", name="Consumers").click()
    page.get_by_role("button", name="Create Consumer").click()
    page.get_by_label("Username").fill("robot")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("button", name="Add Credential").click()
    dialog = page.get_by_role("dialog", name="Add Credential to robot")
    dialog.get_by_label("Type").select_option(label="Key Auth")
    dialog.get_by_role("button", name="Add").click()
    shown = page.get_by_role("dialog", name="Generated API key")
    api_key = shown.get_by_label("API key").input_value()
    shown.get_by_role("button", name="Close").click()
    expect(page.get_by_role("table", name="Credentials")).to_contain_text("robot-key-auth")
    expect(page.get_by_role("button", name="Generate JSON Web Token")).to_be_disabled()
    # a JWT credential whose secret the Random button made, HS512
    page.get_by_role("button", name="Add Credential").click()
    dialog = page.get_by_role("dialog", name="Add Credential to robot")
    dialog.get_by_label("Type").select_option(label="Key Auth")  # the id it would get
    expect(dialog.get_by_text("Optional: robot-key-auth-2 when empty.")).to_be_visible()
    dialog.get_by_label("Type").select_option(label="JWT Auth")
    dialog.get_by_label("Key", exact=True).fill("robot-jwt")
    dialog.get_by_role("button", name="Random secret").click()
    secret = dialog.get_by_label("Secret", exact=True).input_value()
    assert re.fullmatch(r"[A-Za-z0-9_-]{86}", secret)
    dialog.get_by_label("Algorithm").select_option("HS512")
    dialog.get_by_role("button", name="Add").click()
    expect(page.get_by_role("dialog")).to_be_hidden()  # no generated secret to show
    token = admin(gw, "POST", "/admin/consumers/robot/credentials/robot-jwt/token", {})[1]["token"]
    assert pyjwt.decode(token, secret, algorithms=["HS512"])["key"] == "robot-jwt"
    expect(page.get_by_role("button", name="Generate JSON Web Token")).to_be_enabled()
    status, _, body = gw.request("GET", "/e/x", headers={"apikey": api_key})
    assert status == 200, body
    assert "apikey" not in json.loads(body)["headers"]  # stripped

    # the plugin edited (a header of our choosing), then removed; the service's prefix edited
    page.get_by_role("navigation").get_by_role("link", name="Services").click()
    page.get_by_role("link", name="echo", exact=True).click()
    page.get_by_role("button", name="Edit Key Auth").click()
    page.get_by_role("dialog").get_by_label("Header", exact=True).fill("x-robot-key")
    page.get_by_role("dialog").get_by_role("button", name="Save").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert gw.request("GET", "/e/x", headers={"x-robot-key": api_key})[0] == 200
    assert gw.request("GET", "/e/x", headers={"apikey": api_key})[0] == 401
    page.get_by_role("button", name="Remove Key Auth").click()  # asked first, as deletes
    confirm = page.get_by_role("dialog", name=re.compile("Remove Key Auth from service echo"))
    expect(confirm).to_contain_text("Requests will reach the upstream without it.")
    confirm.get_by_role("button", name="Cancel").click()
    assert gw.request("GET", "/e/x")[0] == 401  # one click no longer opens the API
    page.get_by_role("button", name="Remove Key Auth").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(page.get_by_text("No plugins.")).to_be_visible()
    assert gw.request("GET", "/e/x")[0] == 200
    page.get_by_label("Path prefix", exact=True).fill("/echo")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Service saved.")
    assert gw.request("GET", "/echo/x")[0] == 200 and gw.request("GET", "/e/x")[0] == 404

    # deletions, each confirmed, and one cancelled
    page.get_by_role("button", name="Delete route all").click()
    page.get_by_role("dialog", name="Delete route all?").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("table", name="Routes")).to_be_visible()
    page.get_by_role("button", name="Delete route all").click()
    page.get_by_role("dialog", name="Delete route all?").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No routes yet.")).to_be_visible()
    assert gw.request("GET", "/echo/x")[0] == 404
    page.get_by_role("button", name="Back to services").click()
    page.get_by_role("button", name="Delete service old").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="old", exact=True)).to_be_hidden()
    assert [s["name"] for s in admin(gw, "GET", "/admin/services")[1]] == ["echo"]
    open_consumer(page, "robot")
    page.get_by_role("button", name="Delete Consumer").click()
    page.get_by_role("dialog", name="Delete consumer robot?").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").first).to_have_text("Consumer deleted.")
    expect(page.get_by_text("0 of 0 consumers")).to_be_visible()
    assert admin(gw, "GET", "/admin/consumers")[1] == []
    assert_only_its_own_host(c, gw)


def test_a_key_refused_while_a_dialog_is_open_closes_it_for_the_sign_in(gateway, console):
    """The admin key changed on the gateway while the token dialog was open: Generate gets
    401, and the sign-in form can be used (the modal dialog stayed, the form inert)."""
    gw = gateway({"consumers": [{"username": "oiloil", "credentials": [
        {"id": "oiloil-jwt", "key": "oiloil_key", "secret": "s" * 32}]}]})
    c = console(gw)
    page = c.open()
    open_consumer(page, "oiloil")
    page.get_by_role("button", name="Generate JSON Web Token").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    page.evaluate("sessionStorage.setItem('fastgw.adminKey', 'a-key-no-longer-taken')")
    page.get_by_role("dialog").get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert").filter(has_text="no longer accepted")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.get_by_label("Admin key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation")).to_be_visible()  # signed in again
    expect(page.get_by_label("Admin key")).to_be_hidden()


# ---------------------------------------------------------------- the token dialog

def token_dialog(gw, console):
    """The page on consumer oiloil, and its Generate JSON Web Token dialog."""
    page = console(gw).open()
    open_consumer(page, "oiloil")
    page.get_by_role("button", name="Generate JSON Web Token").click()
    return page, page.get_by_role("dialog", name="Generate JSON Web Token for oiloil")


def fill_payload(dialog, fields: dict[str, str]) -> None:
    for n, (name, value) in enumerate(fields.items(), 1):
        if n > 1:
            dialog.get_by_role("button", name="Add payload field").click()
        dialog.get_by_label(f"Payload field {n} name").fill(name)
        dialog.get_by_label(f"Payload field {n} value").fill(value)


TOKEN_SECRET = "s" * 32
OILOIL = {"username": "oiloil", "credentials": [
    {"id": "oiloil-jwt", "key": "oiloil_key", "secret": TOKEN_SECRET}]}


def test_payload_numbers_reach_the_token_as_typed(gateway, console, upstream):
    """A payload value is sent as the JSON text typed: 2^53 + 1, the largest 64-bit unsigned
    integer and a larger one, alone or inside an object, are the very numbers the token
    carries, and 1.0 stays a float (the browser's JSON.parse made 9007199254740993 into
    9007199254740992 and 1.0 into 1, and the admin API made an integer above 2^64 a float)."""
    gw = gateway({"services": [{"name": "svc", "upstream": {"url": upstream.url},
                                "routes": [{"name": "r", "paths": ["/r"],
                                            "plugins": {"jwt-auth": {}}}]}],
                  "consumers": [OILOIL]})
    page, dialog = token_dialog(gw, console)
    typed = {"id": "9007199254740993", "account": " 18446744073709551615",
             "huge": "123456789012345678901234567890",
             "nested": '{"n": [-9007199254740993], "f": 1.0}', "user": "oiloil"}
    fill_payload(dialog, typed)
    dialog.get_by_role("button", name="Generate").click()
    token = page.get_by_role("dialog", name="JSON Web Token").get_by_label("Token").input_value()
    claims = pyjwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])
    assert claims["id"] == 9007199254740993 and claims["account"] == 2 ** 64 - 1
    assert claims["huge"] == 123456789012345678901234567890
    assert claims["nested"] == {"n": [-9007199254740993], "f": 1.0}
    assert type(claims["nested"]["f"]) is float and claims["user"] == "oiloil"
    assert gw.request("GET", "/r", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_a_claim_the_admin_api_refuses_is_shown_at_its_payload_field(gateway, console):
    """The admin API's 400 at claims.sub (claims.iat, ...) marks the value of the payload
    field of that name, as other dialogs show their fields' errors (it was shown above the
    buttons, with the command line's advice)."""
    gw = gateway({"consumers": [OILOIL]})
    page, dialog = token_dialog(gw, console)
    fill_payload(dialog, {"user": "oiloil", "sub": "42"})
    dialog.get_by_role("button", name="Generate").click()
    value = dialog.get_by_label("Payload field 2 value")
    expect_error(value, "must be a string")
    expect(value).to_be_focused()
    expect(dialog.get_by_role("alert")).to_have_count(0)  # nothing above the buttons
    first = dialog.get_by_label("Payload field 1 value")
    expect(first).not_to_have_attribute("aria-invalid", "true")
    expect(value).not_to_have_accessible_description(re.compile("--claim"))
    dialog.get_by_label("Payload field 2 name").fill("iat")
    value.fill("yesterday")
    dialog.get_by_role("button", name="Generate").click()
    expect_error(value, "must be a number (unix seconds)")
    dialog.get_by_label("Payload field 2 name").fill("sub")
    value.fill('"42"')
    dialog.get_by_role("button", name="Generate").click()
    token = page.get_by_role("dialog", name="JSON Web Token").get_by_label("Token").input_value()
    assert pyjwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])["sub"] == "42"


def test_an_expiry_in_the_past_is_refused_at_its_field(gateway, console):
    """A token that would be expired already is not issued: the admin API answers 400 at
    expires, shown at Expires at (it was issued, and refused wherever it was sent)."""
    gw = gateway({"consumers": [OILOIL]})
    page, dialog = token_dialog(gw, console)
    expires = dialog.get_by_label("Expires at")
    expires.fill("2020-01-01T00:00:00")
    dialog.get_by_role("button", name="Generate").click()
    expect_error(expires, "in the past")
    expect(expires).to_be_focused()
    expect(page.get_by_role("dialog", name="JSON Web Token", exact=True)).to_have_count(0)
    expires.fill("2030-01-01T00:00:00")
    dialog.get_by_role("button", name="Generate").click()
    token = page.get_by_role("dialog", name="JSON Web Token").get_by_label("Token").input_value()
    assert pyjwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])["exp"] == 1893456000


def test_the_key_lasts_the_tab_and_sign_out_forgets_it(gateway, console):
    gw = gateway()
    c = console(gw)
    page = c.open()
    assert page.evaluate("sessionStorage.getItem('fastgw.adminKey')") == KEY
    assert page.evaluate("localStorage.length") == 0
    page.get_by_role("navigation").get_by_role("link", name="Status").click()
    expect(page.get_by_role("heading", name="Status")).to_be_visible()
    page.reload()  # still signed in, at the same place
    expect(page.get_by_role("heading", name="Status")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="Services")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin key")).to_be_focused()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_label("Admin key")).to_be_visible()
    expect(page.get_by_role("main")).to_be_hidden()
    # a key the gateway no longer takes (FASTGW_ADMIN_KEY changed): signed out, and told
    page.evaluate("sessionStorage.setItem('fastgw.adminKey', 'an-old-key')")
    page.reload()
    expect(page.get_by_role("alert").filter(has_text="no longer accepted")).to_be_visible()
    expect(page.get_by_role("main")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert_only_its_own_host(c, gw)


def test_the_console_is_used_with_the_keyboard(gateway, console, upstream):
    gw = gateway({"services": [{"name": "svc", "upstream": {"url": upstream.url},
                                "routes": [{"name": "r", "paths": ["/r"]}]}]})
    c = console(gw)
    page = c.open(sign_in=False)
    page.get_by_label("Admin key").focus()
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Services")).to_be_focused()
    page.keyboard.press("Tab")  # the first control after the heading
    expect(page.get_by_role("button", name="Create Service")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="svc", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Service svc")).to_be_focused()
    page.get_by_role("button", name="Add Plugin").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Add Plugin")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Add Plugin").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Authentication")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="JWT Auth")).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="JWT Auth on service svc")
    expect(dialog.get_by_label("Header", exact=True)).to_be_focused()
    page.keyboard.press("Enter")  # submits the form
    expect(dialog).to_be_hidden()
    assert "jwt-auth" in admin(gw, "GET", "/admin/services/svc")[1]["plugins"]
    # every control on the page has a name
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unnamed == []
    assert_only_its_own_host(c, gw)


def test_key_set_and_policy_fields_are_shown_kept_and_sent_when_changed(gateway, console,
                                                                        upstream):
    """The fields extensions.js adds (SPEC 8: a credential's key set and issuer, the
    plugin's token policy) are in their own fieldsets, and are sent only once changed."""
    gw = gateway({"services": [{"name": "svc", "upstream": {"url": upstream.url},
                                "routes": [{"name": "r", "paths": ["/r"],
                                            "plugins": {"jwt-auth": {}}}]}],
                  "consumers": [{"username": "u", "credentials": [{"key": "k", "secret": "s" * 40}]}]})
    before = admin(gw, "GET", "/admin/config")[1]
    c = console(gw)
    page = c.open()
    page.get_by_role("link", name="svc", exact=True).click()
    page.get_by_role("table", name="Routes").get_by_role("link", name="r", exact=True).click()
    page.get_by_role("button", name="Edit JWT Auth").click()
    dialog = page.get_by_role("dialog", name="JWT Auth on route r")
    policy = dialog.get_by_role("group", name="Token policy")
    expect(policy.get_by_label("Audiences")).to_have_value("")
    dialog.get_by_role("button", name="Save").click()  # unchanged: not sent
    expect(dialog).to_be_hidden()
    assert admin(gw, "GET", "/admin/config")[1] == before
    page.get_by_role("button", name="Edit JWT Auth").click()
    dialog.get_by_label("Audiences").fill("api://orders")
    dialog.get_by_label("Maximum lifetime (seconds)").fill("abc")
    dialog.get_by_role("button", name="Save").click()
    expect_error(dialog.get_by_label("Maximum lifetime (seconds)"), "number")
    dialog.get_by_label("Maximum lifetime (seconds)").fill("3600")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    plugin = admin(gw, "GET", "/admin/config")[1]["services"][0]["routes"][0]["plugins"]["jwt-auth"]
    assert plugin["audiences"] == ["api://orders"] and plugin["max_lifetime"] == 3600

    open_consumer(page, "u")
    page.get_by_role("button", name="Edit credential k").click()
    dialog = page.get_by_role("dialog", name="Credential k")
    key_set = dialog.get_by_role("group", name="Key set (identity provider)")
    expect(key_set.get_by_label("Key set URL")).to_have_value("")
    dialog.get_by_label("Key set URL").fill("http://idp.example/certs")  # http: only loopback
    dialog.get_by_role("button", name="Save").click()
    expect_error(dialog.get_by_label("Key set URL"), "https")
    dialog.get_by_label("Key set URL").fill("")
    dialog.get_by_label("Issuer", exact=True).fill("https://idp.example/realms/corp")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    cred = admin(gw, "GET", "/admin/config")[1]["consumers"][0]["credentials"][0]
    assert cred["issuer"] == "https://idp.example/realms/corp" and cred["jwks_uri"] is None


def test_revoke_tokens_from_a_consumer_page(gateway, console, upstream):
    """Revoke Tokens (SPEC 9) on a consumer: by jti the token is refused at once; a
    subject without its time is an error shown at that field."""
    gw = gateway({"services": [{"name": "svc", "upstream": {"url": upstream.url},
                                "routes": [{"name": "r", "paths": ["/r"],
                                            "plugins": {"jwt-auth": {}}}]}],
                  "consumers": [{"username": "u", "credentials": [{"key": "k", "secret": "s" * 40}]}]})
    token = admin(gw, "POST", "/admin/consumers/u/credentials/k/token",
                  {"claims": {"jti": "t-1", "sub": "alice"}})[1]["token"]
    assert gw.request("GET", "/r", headers={"Authorization": f"Bearer {token}"})[0] == 200
    c = console(gw)
    page = c.open()
    open_consumer(page, "u")
    page.get_by_role("button", name="Revoke Tokens").click()
    dialog = page.get_by_role("dialog", name="Revoke tokens of u")
    dialog.get_by_label("Subject (sub)").fill("alice")
    dialog.get_by_role("button", name="Revoke").click()
    expect_error(dialog.get_by_label("Issued before"), "is required with sub")
    dialog.get_by_label("Subject (sub)").fill("")
    dialog.get_by_label("Token ID (jti)").fill("t-1")
    dialog.get_by_role("button", name="Revoke").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status").first).to_contain_text("Revoked")
    entries = admin(gw, "GET", "/admin/revocations")[1]
    assert [e["jti"] for e in entries] == ["t-1"] and "sub" not in entries[0]
    status, _, body = gw.request("GET", "/r", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and json.loads(body) == {"message": "JWT token revoked"}
    assert_only_its_own_host(c, gw)
