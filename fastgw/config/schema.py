"""The configuration schema (SPEC section 3) and the rules that span objects."""

from __future__ import annotations

import ipaddress
import re
import ssl

from ..plugins import CREDENTIAL_TYPES, DEFAULT_CREDENTIAL_TYPE, PLUGINS, credential_type
from ..routing import parse_host
from ..upstream import POOL_SETTINGS, node_key, upstream_nodes
from .types import (INVALID, Bool, ConfigError, Errors, Field, Int, List, Map, Nullable, Obj,
                    Seconds, Str, http_url, join)

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
           "PURGE")
_HOST_LABELS = re.compile(r"(?:\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                          r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PATH_CHARS = re.compile(r"/[!$&'()*+,;=:@%A-Za-z0-9._~/-]*")


def _host_pattern(value: str) -> str | None:
    host = value.lower()
    if _HOST_LABELS.fullmatch(host):
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        return f'{value!r} is not a host name or "*.domain" pattern'


def _route_path(value: str) -> str | None:
    if not value.startswith("/"):
        return 'must start with "/"'
    if not _PATH_CHARS.fullmatch(value):
        return "has characters not allowed in a path"
    if "*" in value[:-1]:
        return '"*" is only allowed at the end (prefix match)'
    return None


def _path_prefix(value: str) -> str | None:
    if "*" in value:
        return 'must not contain "*"'
    return _route_path(value)


def _host_field(value: str) -> str | None:
    """The Host an upstream is sent (pass_host rewrite): host[:port] by the rule a client's
    Host is held to, so nothing a line of the request head could be split at."""
    if not value.isascii() or not parse_host(value.encode()) or value != value.strip():
        return f"{value!r} is not host[:port]"
    return None


def _upstream_url(value: str) -> str | None:
    parts, problem = http_url(value, "must start with http:// or https://")
    if problem is None and (parts.query or parts.fragment):
        return "must not contain a query or fragment"
    return problem


def _upstream_whole(up: dict, path: str, errors: Errors) -> None:
    if (up["url"] is None) == (up["nodes"] is None):
        errors.append((path, "needs exactly one of url or nodes"))
    elif up["url"] is not None:
        # the url's scheme is the scheme; `scheme` (for nodes) is written as it says. It
        # could not tell https meant for TLS from http, so it is refused rather than lost;
        # "http" is its default, which configurations stored with an https url carry.
        scheme = up["url"].partition(":")[0].lower()
        if up["scheme"] == "https" and scheme == "http":
            errors.append((join(path, "scheme"), "is https, but url starts with http://: "
                           "with url, the scheme is the url's"))
        up["scheme"] = scheme
    if up["nodes"] is not None and not any(n["weight"] > 0 for n in up["nodes"]):
        errors.append((join(path, "nodes"), "needs a node with weight > 0"))
    if up["pass_host"] == "rewrite" and not up["upstream_host"]:
        errors.append((join(path, "upstream_host"), 'is required when pass_host is "rewrite"'))
    ca_file = up["tls"]["ca_file"]
    if ca_file is not None:
        try:  # read now: a worker would fail on it at its first configuration
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in the path
            errors.append((join(join(path, "tls"), "ca_file"),
                           f"cannot be read as CA certificates: {getattr(exc, 'strerror', None) or exc}"))


def _plugin_schema(name: str):
    plugin = PLUGINS.get(name)
    return plugin.SCHEMA if plugin else None


PLUGINS_MAP = Map(_plugin_schema, unknown="unknown plugin")

NODE = Obj({
    "host": Field(Str(_host_pattern), required=True),
    "port": Field(Int(min=1, max=65535), required=True),
    "weight": Field(Int(min=0, max=10000), default=1),
})

UPSTREAM = Obj({
    "url": Field(Nullable(Str(_upstream_url))),
    "nodes": Field(Nullable(List(NODE, min_len=1))),
    "scheme": Field(Str(choices=("http", "https")), default="http"),
    "pass_host": Field(Str(choices=("pass", "node", "rewrite")), default="pass"),
    "upstream_host": Field(Nullable(Str(_host_field))),
    "timeout": Field(Obj({
        "connect": Field(Seconds(), default=60),
        "send": Field(Seconds(), default=60),
        "read": Field(Seconds(), default=60),
    }), default={"connect": 60, "send": 60, "read": 60}),
    "keepalive_pool": Field(Obj({
        "size": Field(Int(min=0), default=320),
        "idle_timeout": Field(Seconds(), default=60),
        "requests": Field(Int(min=1), default=1000),
    }), default={"size": 320, "idle_timeout": 60, "requests": 1000}),
    # connections (open and connecting) to each node at once; more requests wait
    "max_connections": Field(Nullable(Int(min=1))),
    "retries": Field(Nullable(Int(min=0, max=100))),
    "tls": Field(Obj({
        "verify": Field(Bool(), default=True),
        "ca_file": Field(Nullable(Str())),
    }), default={"verify": True, "ca_file": None}),
}, check=_upstream_whole)

ROUTE = Obj({
    "name": Field(Str(pattern=NAME), required=True),
    "paths": Field(List(Str(_route_path), min_len=1, unique=True), required=True),
    "methods": Field(List(Str(choices=METHODS), unique=True), default=[]),
    "priority": Field(Int(), default=0),
    "plugins": Field(PLUGINS_MAP, default={}),
})

SERVICE = Obj({
    "name": Field(Str(pattern=NAME), required=True),
    "hosts": Field(List(Str(_host_pattern), unique=True), default=[]),
    "path_prefix": Field(Str(_path_prefix), default="/"),
    "strip_path_prefix": Field(Bool(), default=True),
    "upstream": Field(UPSTREAM, required=True),
    "plugins": Field(PLUGINS_MAP, default={}),
    "routes": Field(List(ROUTE, unique_by="name"), default=[]),
})


class _Credential(Obj):
    """A credential's schema is chosen by its `type`."""

    def __init__(self):
        super().__init__({})

    def convert(self, value: dict, path: str, errors: Errors):
        kind = credential_type(value)
        if kind is None:
            errors.append((join(path, "type"),
                           f"unknown credential type {value.get('type')!r}; one of "
                           f"{', '.join(CREDENTIAL_TYPES)} (default {DEFAULT_CREDENTIAL_TYPE})"))
            return INVALID
        return kind.CREDENTIAL_SCHEMA.convert(value, path, errors)


def credential_ids(username, credentials: list) -> list:
    """Each credential's id: its own, else its type's default (None where neither is
    known). Takes validated credentials, and raw ones from the admin API."""
    ids, counts = [], {}
    for cred in credentials:
        kind = credential_type(cred) if isinstance(cred, dict) else None
        if kind is None or cred.get("id") is not None:
            own = cred.get("id") if isinstance(cred, dict) else None
            ids.append(own if isinstance(own, str) else None)  # the schema refuses the rest
            continue
        nth = counts[kind] = counts.get(kind, 0) + 1
        try:
            own = kind.default_id(username, cred, nth)
        except (KeyError, TypeError):  # a raw credential without what its default needs
            own = None
        ids.append(own if isinstance(own, str) else None)  # (a key that is a list, say)
    return ids


def _credential_ids(consumer: dict, path: str, errors: Errors) -> None:
    for nth, (cred, cred_id) in enumerate(zip(consumer["credentials"], credential_ids(
            consumer["username"], consumer["credentials"]))):
        cred["id"] = cred_id
        if message := _dot_segment(cred_id):  # (a jwt-auth credential's id defaults to its key)
            errors.append((f"{path}.credentials[{nth}].id", message))


def _dot_segment(name: str | None) -> str | None:
    """What is wrong with naming an object "." or "..": no URL names it (browsers, curl and
    servers resolve such a segment, %2E-encoded too), so the admin API cannot."""
    if name in (".", ".."):
        return f"must not be {name!r}, which no URL can name (it is a dot segment)"
    return None


CONSUMER = Obj({
    "username": Field(Str(_dot_segment, pattern=r"[A-Za-z0-9_.-]{1,100}"), required=True),
    "credentials": Field(List(_Credential()), default=[]),
}, check=_credential_ids)

ROOT = Obj({
    "services": Field(List(SERVICE, unique_by="name"), default=[]),
    "consumers": Field(List(CONSUMER, unique_by="username"), default=[]),
})


def _credential_path(ci: int, ki: int, field: str) -> str:
    return f"consumers[{ci}].credentials[{ki}].{field}"


def _cross_checks(conf: dict, errors: Errors) -> None:
    """Rules that span objects: credential ids are unique, and so is a credential's key
    among the credentials of its type; services sharing a node agree on its pool."""
    _shared_pools(conf["services"], errors)
    consumers = conf["consumers"]
    usernames = {c["username"] for c in consumers}
    ids = [cred["id"] for c in consumers for cred in c["credentials"]]
    if len(set(ids)) < len(ids):  # rare: only then find where, for the message
        _duplicates(consumers, "id", None, errors)
    keys = [(cred["type"], cred["key"]) for c in consumers for cred in c["credentials"]]
    if len(set(keys)) < len(keys):
        for kind in CREDENTIAL_TYPES:
            _duplicates(consumers, "key", kind, errors)
    for si, service in enumerate(conf["services"]):
        sp = join("services", si)
        places = [(join(sp, "plugins"), service["plugins"])]
        places += [(join(join(join(sp, "routes"), ri), "plugins"), r["plugins"])
                   for ri, r in enumerate(service["routes"])]
        for where, plugins in places:
            for name, plugin_conf in plugins.items():
                for field, message in PLUGINS[name].cross_check(plugin_conf, usernames):
                    errors.append((join(join(where, name), field), message))


def _shared_pools(services: list[dict], errors: Errors) -> None:
    """A node (scheme, host, port, TLS settings) has one pool: every service using it must
    set the pool's settings alike, or the last one compiled would silently win."""
    first: dict[tuple, int] = {}  # node -> index of the first service using it
    for si, service in enumerate(services):
        up = service["upstream"]
        scheme, default_port, specs, _ = upstream_nodes(up)
        for spec in specs:
            key = node_key(scheme, spec["host"], spec["port"], up["tls"])
            fi = first.setdefault(key, si)
            other = services[fi]["upstream"]
            differ = [field for field in POOL_SETTINGS if up[field] != other[field]]
            if not differ:
                continue
            host = f"[{spec['host']}]" if ":" in spec["host"] else spec["host"]
            for field in differ:
                errors.append((f"services[{si}].upstream.{field}",
                               f"service {service['name']!r} and service "
                               f"{services[fi]['name']!r} (services[{fi}].upstream.{field}) "
                               f"use node {scheme}://{host}:{spec['port']} with different "
                               f"{field}; a node has one pool, so they must agree"))
            break  # one report per service, at its first such node


def _duplicates(consumers: list[dict], field: str, kind: str | None, errors: Errors) -> None:
    """The second and later credentials (of type `kind`, or any) with a value of `field`
    seen before; a secret's value is not repeated in the message."""
    secret = kind is not None and field in CREDENTIAL_TYPES[kind].SECRET_FIELDS
    first: dict[str, tuple[int, int]] = {}  # value -> (consumer, credential) index
    for ci, consumer in enumerate(consumers):
        for ki, cred in enumerate(consumer["credentials"]):
            if kind is not None and cred["type"] != kind:
                continue
            value = cred[field]
            if value in first:
                shown = f"duplicate {field}" if secret else f"duplicate {field} {value!r}"
                errors.append((_credential_path(ci, ki, field), f"{shown} (also at "
                               f"{_credential_path(*first[value], field)})"))
            else:
                first[value] = (ci, ki)


def validate(raw: object) -> dict:
    """The normalised configuration, or ConfigError listing every fault with its path."""
    errors: Errors = []
    if raw is None:
        raw = {}
    conf = ROOT.load(raw, "", errors)
    if not errors:
        _cross_checks(conf, errors)
    _raise(errors)
    return conf


# The configuration's sections: each item's schema and the field that names it.
SECTIONS = {"services": (SERVICE, "name"), "consumers": (CONSUMER, "username")}


def validate_item(section: str, raw: object) -> dict:
    """One service or consumer, normalised; error paths are relative to the item."""
    errors: Errors = []
    item = SECTIONS[section][0].load(raw, "", errors)
    _raise(errors)
    return item


def check_whole(conf: dict) -> None:
    """The rules that span items, for a configuration assembled from validated items."""
    errors: Errors = []
    _cross_checks(conf, errors)
    _raise(errors)


def _raise(errors: Errors) -> None:
    if errors:
        if errors[0][0] == "":
            errors = [("(top level)", msg) for _, msg in errors]
        raise ConfigError(errors)
