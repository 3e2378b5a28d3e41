"""Configuration validation (every error names its path), `fastgw check`, start-up faults."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastgw.config import ConfigError
from fastgw.config.loader import parse
from fastgw.config.schema import validate
from conftest import free_port, service

UP = {"url": "http://127.0.0.1:9"}


def svc(**kw):
    return {"name": "s", "upstream": UP, "routes": [{"name": "r", "paths": ["/x"]}], **kw}


def errors_of(conf) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(conf)
    return [f"{path}: {msg}" for path, msg in info.value.errors]


# SPEC 3: "url: scheme://host[:port][/base-path] — or: nodes: [...] with scheme: http|https".
def test_with_url_the_scheme_is_the_urls():
    def scheme(upstream: dict) -> str:
        return validate({"services": [svc(upstream=upstream)]})["services"][0]["upstream"][
            "scheme"]

    assert scheme({"url": "https://a"}) == "https"  # what GET /admin/services shows
    assert scheme({"url": "HTTPS://a", "scheme": "http"}) == "https"  # "http", the default
    assert scheme({"url": "http://a"}) == "http"
    assert scheme({"nodes": [{"host": "a", "port": 1}], "scheme": "https"}) == "https"
    assert scheme({"nodes": [{"host": "a", "port": 1}]}) == "http"


def test_minimal_configuration_gets_defaults():
    conf = validate({"services": [svc()]})
    s = conf["services"][0]
    assert s["path_prefix"] == "/" and s["strip_path_prefix"] is True and s["hosts"] == []
    assert s["upstream"]["timeout"] == {"connect": 60, "send": 60, "read": 60}
    assert s["upstream"]["keepalive_pool"] == {"size": 320, "idle_timeout": 60, "requests": 1000}
    assert s["upstream"]["max_connections"] is None  # no limit
    assert s["routes"][0]["methods"] == [] and conf["consumers"] == []


@pytest.mark.parametrize("conf,expected", [
    ({"services": [svc(routes=[{"name": "r", "paths": ["/ok", "nope"]}])]},
     'services[0].routes[0].paths[1]: must start with "/"'),
    ({"services": [svc(routes=[{"name": "r", "paths": ["/a/*/b"]}])]},
     'services[0].routes[0].paths[0]: "*" is only allowed at the end (prefix match)'),
    ({"services": [svc(colour="blue")]}, "services[0].colour: unknown key"),
    ({"services": [svc(plugins={"jwt-auth": {"header": "x-a-b-c-d-e-f-g-h-i"}})]},
     "services[0].plugins.jwt-auth.header: must not hold more than 8 '-' or '_'"),
    ({"services": [svc(hosts="a.com")]}, "services[0].hosts: must be a list, not a string"),
    ({"services": [svc(), svc()]}, "services[1].name: duplicate name 's' (also at services[0])"),
    ({"services": [svc(routes=[{"name": "r", "paths": ["/x"]}, {"name": "r", "paths": ["/y"]}])]},
     "services[0].routes[1].name: duplicate name 'r' (also at services[0].routes[0])"),
    ({"services": [svc(upstream={"url": "ftp://x"})]},
     "services[0].upstream.url: must start with http:// or https://"),
    ({"services": [svc(upstream={"url": "http://"})]}, "services[0].upstream.url: has no host"),
    ({"services": [svc(upstream={"url": "http://x:99999"})]},
     "services[0].upstream.url: is not a valid URL: Port out of range 0-65535"),
    ({"services": [svc(upstream={})]}, "services[0].upstream: needs exactly one of url or nodes"),
    ({"services": [svc(upstream={"url": "http://a", "scheme": "https"})]},
     "services[0].upstream.scheme: is https, but url starts with http://: with url, the "
     "scheme is the url's"),
    ({"services": [svc(upstream={"nodes": [{"host": "a", "port": 0}]})]},
     "services[0].upstream.nodes[0].port: must be at least 1"),
    ({"services": [svc(upstream={"url": "http://a", "pass_host": "rewrite"})]},
     'services[0].upstream.upstream_host: is required when pass_host is "rewrite"'),
    ({"services": [svc(upstream={"url": "http://a", "timeout": {"read": 0}})]},
     "services[0].upstream.timeout.read: must be greater than 0"),
    ({"services": [svc(upstream={"url": "https://a", "tls": {"ca_file": "/no/such/ca.pem"}})]},
     "services[0].upstream.tls.ca_file: cannot be read as CA certificates: No such file or "
     "directory"),
    ({"services": [svc(routes=[{"name": "r", "paths": ["/x"], "methods": ["FETCH"]}])]},
     "services[0].routes[0].methods[0]: must be one of GET, HEAD, POST, PUT, DELETE, PATCH, "
     "OPTIONS, TRACE, CONNECT, PURGE, not 'FETCH'"),
    ({"services": [svc(routes=[{"name": "r", "paths": ["/x"], "plugins": {"nope": {}}}])]},
     "services[0].routes[0].plugins.nope: unknown plugin"),
    ({"services": [svc(routes=[{"name": "r"}])]}, "services[0].routes[0].paths: is required"),
    ({"services": [svc(hosts=["bad host"])]},
     "services[0].hosts[0]: 'bad host' is not a host name or \"*.domain\" pattern"),
    ({"services": [svc(priority=True)]}, "services[0].priority: unknown key"),
    ({"services": [svc(routes=[{"name": "r", "paths": ["/x"], "priority": "high"}])]},
     "services[0].routes[0].priority: must be an integer, not a string"),
    ({"services": {}}, "services: must be a list, not a mapping"),
    (["not", "a", "mapping"], "(top level): must be a mapping, not a list"),
    # numbers the workers' messages (64 bits) and JSON readers (2^53) carry exactly
    ({"services": [svc(routes=[{"name": "r", "paths": ["/x"], "priority": 10 ** 20}])]},
     "services[0].routes[0].priority: must be a finite number of at most "
     "9,007,199,254,740,992 (2^53) either way"),
    ({"services": [svc(upstream={"url": "http://a", "timeout": {"connect": float("inf")}})]},
     "services[0].upstream.timeout.connect: must be a finite number of at most "
     "9,007,199,254,740,992 (2^53) either way"),
    ({"services": [svc(upstream={"url": "http://a", "timeout": {"connect": float("nan")}})]},
     "services[0].upstream.timeout.connect: must be a finite number of at most "
     "9,007,199,254,740,992 (2^53) either way"),
    # nothing that could split the upstream's request head
    ({"services": [svc(upstream={"url": "http://a", "pass_host": "rewrite",
                                 "upstream_host": "h\r\nX-Injected: yes"})]},
     "services[0].upstream.upstream_host: 'h\\r\\nX-Injected: yes' is not host[:port]"),
    ({"services": [svc(upstream={"url": "http://a/a b HTTP/1.1\r\nX: y"})]},
     "services[0].upstream.url: must not contain spaces, control or non-ASCII characters "
     "(percent-encode them)"),
    ({"services": [svc(upstream={"url": "http://a/caf\u00e9"})]},
     "services[0].upstream.url: must not contain spaces, control or non-ASCII characters "
     "(percent-encode them)"),
    # a name no URL can hold (the console's Delete of the credential ".." deleted its consumer)
    ({"consumers": [{"username": ".."}]},
     "consumers[0].username: must not be '..', which no URL can name (it is a dot segment)"),
    ({"consumers": [{"username": "u", "credentials": [{"id": ".", "key": "k", "secret": "s" * 40}]}]},
     "consumers[0].credentials[0].id: must not be '.', which no URL can name (it is a dot segment)"),
    ({"consumers": [{"username": "u", "credentials": [{"key": "..", "secret": "s" * 40}]}]},
     "consumers[0].credentials[0].id: must not be '..', which no URL can name (it is a dot segment)"),
])
def test_errors_name_their_path(conf, expected):
    assert expected in errors_of(conf)


POOL = {"size": 10, "idle_timeout": 60, "requests": 1000}
NODE_9 = {"nodes": [{"host": "127.0.0.1", "port": 9}]}  # the node UP names, as a list


def test_services_sharing_a_node_must_agree_on_its_pool():
    assert errors_of({"services": [
        svc(name="a"), svc(name="b", routes=[], upstream={**UP, "keepalive_pool": POOL})]}) == [
        "services[1].upstream.keepalive_pool: service 'b' and service 'a' "
        "(services[0].upstream.keepalive_pool) use node http://127.0.0.1:9 with different "
        "keepalive_pool; a node has one pool, so they must agree"]
    assert errors_of({"services": [
        svc(name="a"), svc(name="b", routes=[], upstream={**NODE_9, "max_connections": 4})]}) == [
        "services[1].upstream.max_connections: service 'b' and service 'a' "
        "(services[0].upstream.max_connections) use node http://127.0.0.1:9 with different "
        "max_connections; a node has one pool, so they must agree"]


@pytest.mark.parametrize("second", [
    {**UP, "keepalive_pool": {"size": 320}},  # the defaults, spelled out
    {"url": "http://127.0.0.1:10", "keepalive_pool": POOL},  # another port: another node
    {"url": "https://127.0.0.1:9", "keepalive_pool": POOL},  # another scheme
    {"nodes": [{"host": "127.0.0.1", "port": 9, "weight": 0}, {"host": "a", "port": 9}],
     "keepalive_pool": POOL},  # a node of weight 0 gets no pool
])
def test_services_agreeing_on_a_node_or_not_sharing_one_are_fine(second):
    validate({"services": [svc(name="a"), svc(name="b", upstream=second)]})


def test_https_nodes_with_other_tls_settings_have_pools_of_their_own():
    first = {"url": "https://127.0.0.1:9", "max_connections": 2}
    validate({"services": [svc(name="a", upstream=first), svc(name="b", upstream={
        "url": "https://127.0.0.1:9", "tls": {"verify": False}})]})
    assert errors_of({"services": [svc(name="a", upstream=first), svc(name="b", upstream={
        "url": "https://127.0.0.1:9"})]})[0].startswith("services[1].upstream.max_connections:")


def test_all_errors_are_reported_at_once():
    errors = errors_of({"services": [svc(colour=1, routes=[{"name": "r", "paths": ["x"]}])],
                        "extra": 1})
    assert len(errors) == 3


def test_duplicate_yaml_key_is_an_error():
    with pytest.raises(ConfigError) as info:
        parse("services: []\nservices: []\n", "f.yaml")
    assert "duplicate key 'services'" in str(info.value)


@pytest.mark.parametrize("text,name,expected", [
    ("services: [{? [a, b] : 1, name: a}]\n", "f.yaml",
     "line 1: a key must be a name, not a list"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "f.yaml", "(top level): is nested too deeply"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "f.json",
     "(top level): is nested too deeply"),
])
def test_a_document_no_configuration_could_be_is_an_error_not_a_traceback(text, name,
                                                                           expected):
    with pytest.raises(ConfigError) as info:
        parse(text, name)
    assert str(info.value) == expected


@pytest.mark.parametrize("value", ["a\u0085b", "\u0085", "é\u2028ü\u2029\ufeff", "ünïcode"])
def test_a_file_written_reads_back_as_the_configuration_it_was_written_from(value):
    from fastgw.config.loader import dump
    conf = {"consumers": [{"username": value, "credentials": [{"secret": value}]}]}
    assert parse(dump(conf, "f.yaml"), "f.yaml") == conf


def test_duplicate_json_key_is_an_error():
    with pytest.raises(ConfigError):
        parse('{"services": [], "services": []}', "f.json")


def run_fastgw(*args, env=None, cwd=None, timeout=20):
    import os
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_check_command_prints_every_error_and_exits_1(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("services:\n  - name: s\n    upstream: {url: 'http://a'}\n"
                 "    routes: [{name: r, paths: [nope]}]\n    colour: blue\n")
    result = run_fastgw("check", str(f))
    assert result.returncode == 1
    assert f'{f}: services[0].routes[0].paths[0]: must start with "/"' in result.stderr
    assert f"{f}: services[0].colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


SECRET = "k3y-0f-jack-0123456789abcdef"


@pytest.mark.parametrize("written,expected", [
    (f"*{SECRET}", "line 5, column 14: invalid YAML: found undefined alias (a value that "
                   "starts with *, ! or & is read as YAML syntax: quote it)"),
    (f"!{SECRET}", "line 5, column 14: invalid YAML: could not determine a constructor for "
                   "the tag (a value that starts with *, ! or & is read as YAML syntax: "
                   "quote it)"),
    (f"|{SECRET}", "line 5, column 15: invalid YAML: expected chomping or indentation "
                   "indicators, but found 'k'"),
])
def test_a_yaml_error_never_repeats_the_secret_written_unquoted(tmp_path, written, expected):
    """A key or secret that starts with *, ! or | is YAML syntax when not quoted, and
    PyYAML's message quotes what follows it: the error says where, never what."""
    f = tmp_path / "bad.yaml"
    f.write_text("consumers:\n  - username: jack\n    credentials:\n"
                 "      - type: key-auth\n"
                 f"        key: {written}\n")
    result = run_fastgw("check", str(f))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{f}: {expected}"
    assert SECRET[1:] not in result.stderr


@pytest.mark.parametrize("text,expected", [
    ("a: [b\n", "line 2, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("a: b\nc: \x01\n", "line 2: invalid YAML: character #x0001: special characters are "
                         "not allowed"),
    ("a:\tb\n\tc: d\n", "line 1, column 3: invalid YAML: found character '\\t' that "
                        "cannot start any token"),
])
def test_a_yaml_error_says_where_and_what(text, expected):
    with pytest.raises(ConfigError) as info:
        parse(text, "f.yaml")
    assert str(info.value) == expected


def test_check_command_accepts_a_good_file(tmp_path):
    f = tmp_path / "good.json"
    f.write_text('{"services": [{"name": "s", "upstream": {"url": "http://a"}, '
                 '"routes": [{"name": "r", "paths": ["/x"]}]}]}')
    result = run_fastgw("check", str(f))
    assert result.returncode == 0 and "OK" in result.stdout


def test_bad_configuration_at_start_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "fastgw.yaml"
    f.write_text("services: [{name: s, upstream: {url: 'gopher://x'}}]\n")
    result = run_fastgw("serve", env={"FASTGW_CONFIG": str(f), "FASTGW_LISTEN": "127.0.0.1:0"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "services[0].upstream.url: must start with http:// or https://" in result.stderr


@pytest.mark.parametrize("field,written,expected", [
    ("services[0].upstream.tls.ca_file", "tls: {ca_file: \"/etc/ssl\\0x\"}",
     "cannot be read as CA certificates: embedded null byte"),
    ("services[0].upstream.tls.ca_file", "tls: {ca_file: \"\\ud800\"}",
     "must be Unicode text: a lone surrogate (\\ud800 to \\udfff) is none"),
    ("services[0].routes[0].plugins.jwt-auth.key_claim_name",
     "routes: [{name: r, paths: [/x], plugins: {jwt-auth: {key_claim_name: \"\\ud800\"}}}]",
     "must be Unicode text: a lone surrogate (\\ud800 to \\udfff) is none"),
])
def test_a_string_no_file_or_worker_can_take_is_an_error_naming_it(tmp_path, field, written,
                                                                    expected):
    """YAML escapes can write a NUL and a lone surrogate: refused by `check` and at start
    (ssl raised ValueError for the NUL; orjson could not send the surrogate to a worker)."""
    f = tmp_path / "fastgw.yaml"
    f.write_text("services: [{name: s, upstream: {url: 'http://127.0.0.1:9', " + written
                 + "}}]\n" if written.startswith("tls") else
                 "services: [{name: s, upstream: {url: 'http://127.0.0.1:9'}, " + written
                 + "}]\n")
    check = run_fastgw("check", str(f))
    assert (check.returncode, check.stderr.strip()) == (1, f"{f}: {field}: {expected}")
    serve = run_fastgw("serve", env={"FASTGW_CONFIG": str(f), "FASTGW_LISTEN": "127.0.0.1:0",
                                     "FASTGW_METRICS_LISTEN": "off"})
    assert serve.returncode == 2 and f"{field}: {expected}" in serve.stderr
    assert serve.stderr.strip().count("\n") == 0


def test_an_admin_key_the_environment_holds_as_no_text_is_one_line_naming_it(tmp_path):
    """Bytes that are not UTF-8 reach os.environ as lone surrogates: the key was encoded
    once the workers ran (a traceback, exit 1). The error never shows the key."""
    f = tmp_path / "fastgw.yaml"
    f.write_text("services: []\n")
    result = run_fastgw("serve", env={
        "FASTGW_CONFIG": str(f), "FASTGW_LISTEN": "127.0.0.1:0",
        "FASTGW_METRICS_LISTEN": "off", "FASTGW_ADMIN_KEY": "key-\udcff",
        "FASTGW_ADMIN_LISTEN": "127.0.0.1:0"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("fastgw: FASTGW_ADMIN_KEY: must be UTF-8 text (the "
                                     "environment's bytes are not)"), result.stderr
    assert "key-" not in result.stderr


@pytest.mark.parametrize("variable", ["FASTGW_CONFIG", "FASTGW_REVOCATIONS", "FASTGW_ACCESS_LOG"])
def test_an_empty_file_setting_is_one_line_naming_it(variable):
    result = run_fastgw("serve", env={variable: "", "FASTGW_LISTEN": "127.0.0.1:0"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"fastgw: {variable}: must name a file (got '')"


def test_missing_configuration_file_is_exit_2(tmp_path):
    result = run_fastgw("serve", env={"FASTGW_CONFIG": str(tmp_path / "absent.yaml")})
    assert result.returncode == 2 and "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("env,flag,named", [
    ({"FASTGW_LISTEN": "nowhere"}, None, "FASTGW_LISTEN"),
    ({"FASTGW_WORKERS": "zero"}, None, "FASTGW_WORKERS"),
    ({"FASTGW_MAX_BODY_BYTES": "-5"}, None, "FASTGW_MAX_BODY_BYTES"),
    ({}, ["--header-timeout", "soon"], "--header-timeout"),
    ({"FASTGW_LOG_LEVEL": "chatty"}, None, "FASTGW_LOG_LEVEL"),
    # a worker per unit: memory ran out before a line was written (and SIGTERM waited)
    ({"FASTGW_WORKERS": "99999999999999999999"}, None, "FASTGW_WORKERS"),
    # no time-out at all: each worker looked, forever, for the tick it could time out at
    ({"FASTGW_HEADER_TIMEOUT": "inf", "FASTGW_KEEPALIVE_TIMEOUT": "inf"}, None,
     "FASTGW_KEEPALIVE_TIMEOUT"),
    ({"FASTGW_SHUTDOWN_TIMEOUT": "nan"}, None, "FASTGW_SHUTDOWN_TIMEOUT"),
])
def test_bad_setting_is_one_line_naming_it_and_exit_2(env, flag, named):
    result = run_fastgw("serve", *(flag or []), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"fastgw: {named}:")
    assert "Traceback" not in result.stderr


def test_port_in_use_is_exit_2(tmp_path):
    f = tmp_path / "fastgw.yaml"
    f.write_text("services: []\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_fastgw("serve", env={"FASTGW_CONFIG": str(f),
                                          "FASTGW_LISTEN": f"127.0.0.1:{port}"})
        assert result.returncode == 2 and result.stderr == (
            f"fastgw: FASTGW_LISTEN: cannot listen on 127.0.0.1:{port}: Address already in use\n")
        result = run_fastgw("serve", env={"FASTGW_CONFIG": str(f),  # which setting: SPEC 2
                                          "FASTGW_LISTEN": f"127.0.0.1:{free_port()}",
                                          "FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}"})
        assert result.returncode == 2 and result.stderr.startswith(
            "fastgw: FASTGW_METRICS_LISTEN: cannot listen on ")


def test_port_0_is_logged_as_the_port_bound(upstream, gateway_factory):
    """FASTGW_LISTEN=127.0.0.1:0 takes any free port: the log says which (it said :0)."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_LISTEN": "127.0.0.1:0", "FASTGW_WORKERS": "1"})
    line = gw.wait_for_log("serving on")
    port = int(line.split("serving on 127.0.0.1:")[1].split()[0])
    assert port != 0
    gw.port = port
    assert gw.request("GET", "/json")[0] == 200


def _public_key(encoding) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("secret,base64_secret", [
    (_public_key(serialization.Encoding.PEM).decode(), False),     # PEM public key
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", False),
    ('{"kty": "oct", "k": "c2VjcmV0"}', False),                    # a JWK
    ('  [{"kty": "oct", "k": "c2VjcmV0"}]', False),
    (base64.b64encode(_public_key(serialization.Encoding.DER)).decode(), True),  # DER
])
def test_an_hmac_secret_that_is_an_asymmetric_key_or_jwk_is_refused(secret, base64_secret):
    """Whoever knows a public key could sign HS256 tokens with it (algorithm confusion)."""
    conf = {"consumers": [{"username": "u", "credentials": [
        {"key": "k", "secret": secret, "base64_secret": base64_secret}]}]}
    [error] = errors_of(conf)
    assert error.startswith("consumers[0].credentials[0].secret: cannot be used with HS256")


@pytest.mark.parametrize("secret", ["0123456789abcdef0123", "plain-secret_with.symbols~",
                                    '"quoted"', "12345678901234567890"])
def test_ordinary_hmac_secrets_are_accepted(secret):
    validate({"consumers": [{"username": "u", "credentials": [{"key": "k", "secret": secret}]}]})
