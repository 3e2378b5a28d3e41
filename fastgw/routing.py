"""The routing table: host -> candidate services -> route, compiled once per configuration.

Precedence (SPEC section 3): hosts are tried exact name first, then wildcard
patterns (longest suffix first), then services with no hosts; within a host tier,
an exact path beats a prefix path, a longer prefix beats a shorter one, then the
higher `priority` wins; the method must be allowed. Everything is dict lookups
and a few slices at request time; the ordering work is done in `RouteTable.build`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from . import responses
from .responses import Fault


class Route:
    """A route as requests see it: where it goes and what runs before it goes there."""

    __slots__ = ("service", "name", "methods", "priority", "strip", "upstream", "plugins",
                 "order", "stats")

    def __init__(self, service: str, name: str, methods: Iterable[str], priority: int,
                 strip: int, upstream, plugins: tuple):
        self.service, self.name = service, name
        self.methods = frozenset(m.encode() for m in methods) or None  # None: any method
        self.priority = priority
        self.strip = strip  # bytes of path prefix removed before going upstream
        self.upstream = upstream
        self.plugins = plugins
        self.order = 0  # declaration order, the last tie-breaker
        self.stats: list = []  # where its requests are recorded (metrics.WorkerStats.bind)

    def upstream_path(self, path: bytes) -> bytes:
        """The path sent upstream: base path + path without the service's prefix."""
        rest = path[self.strip:]
        if not rest or rest[0] != 47:  # "/"
            rest = b"/" + rest
        return self.upstream.base_path + rest


class PathTable:
    """Routes of one host tier: exact paths in a dict, prefixes by length."""

    __slots__ = ("exact", "prefixes", "prefix_lengths")

    def __init__(self):
        self.exact: dict[bytes, list[Route]] = defaultdict(list)
        self.prefixes: dict[bytes, list[Route]] = defaultdict(list)
        self.prefix_lengths: tuple[int, ...] = ()

    def add(self, path: bytes, route: Route) -> None:
        if path.endswith(b"*"):
            self.prefixes[path[:-1]].append(route)
        else:
            self.exact[path].append(route)

    def freeze(self) -> None:
        def rank(r: Route):
            return (-r.priority, r.order)
        self.exact = dict(self.exact)
        self.prefixes = dict(self.prefixes)
        for routes in (*self.exact.values(), *self.prefixes.values()):
            routes.sort(key=rank)
        self.prefix_lengths = tuple(sorted({len(p) for p in self.prefixes}, reverse=True))

    def match(self, path: bytes, method: bytes) -> Route | None:
        routes = self.exact.get(path)
        if routes is not None:
            for route in routes:
                if route.methods is None or method in route.methods:
                    return route
        n = len(path)
        prefixes = self.prefixes
        for length in self.prefix_lengths:
            if length <= n:
                routes = prefixes.get(path[:length])
                if routes is not None:
                    for route in routes:
                        if route.methods is None or method in route.methods:
                            return route
        return None


class RouteTable:
    """The routes of one configuration. `resolve` is the whole decision for a request's
    Host, path and method; its result is remembered in `memo`, so that a request like
    one seen before costs one dict look-up."""

    __slots__ = ("exact_hosts", "wildcard_hosts", "any_host", "has_wildcards", "routes", "memo")

    MEMO_SIZE = 8192  # entries; the memo is emptied when full (a flood of new paths)
    MEMO_PATH = 512  # longer paths are resolved every time, never kept

    def __init__(self):
        self.exact_hosts: dict[bytes, PathTable] = {}
        self.wildcard_hosts: dict[bytes, PathTable] = {}  # ".example.com" for "*.example.com"
        self.any_host = PathTable()
        self.has_wildcards = False
        self.routes: list[Route] = []
        # (Host field, path, method) -> (route, upstream path, Host to forward), or
        # (None, 404 response, Host) when no route takes it
        self.memo: dict[tuple, tuple] = {}

    @classmethod
    def build(cls, entries: Iterable[tuple[list[str], str, Route]]) -> "RouteTable":
        """entries: (service hosts, full path, route), in declaration order."""
        table = cls()
        for order, (hosts, path, route) in enumerate(entries):
            route.order = order
            if route not in table.routes:
                table.routes.append(route)
            if not hosts:
                table.any_host.add(path.encode(), route)
            for host in hosts:
                host = host.lower()
                if host.startswith("*."):
                    tier = table.wildcard_hosts.setdefault(host[1:].encode(), PathTable())
                else:
                    tier = table.exact_hosts.setdefault(host.encode(), PathTable())
                tier.add(path.encode(), route)
        for tier in (*table.exact_hosts.values(), *table.wildcard_hosts.values(), table.any_host):
            tier.freeze()
        table.has_wildcards = bool(table.wildcard_hosts)
        return table

    def match(self, host: bytes, path: bytes, method: bytes) -> Route | None:
        """`host` lower-case without port; `path` without query."""
        tier = self.exact_hosts.get(host)
        if tier is not None:
            route = tier.match(path, method)
            if route is not None:
                return route
        if self.has_wildcards:
            dot = host.find(b".")
            while dot != -1:
                tier = self.wildcard_hosts.get(host[dot:])
                if tier is not None:
                    route = tier.match(path, method)
                    if route is not None:
                        return route
                dot = host.find(b".", dot + 1)
        return self.any_host.match(path, method)

    def resolve(self, host_field: bytes | None, path: bytes, method: bytes, http11: bool):
        """(route, upstream path, Host to forward) for a request, or (None, 404, Host);
        Fault(400) for a Host or path fastgw refuses. `path` is the request-target
        without its query (an absolute-form one included)."""
        memo = True
        if path[:1] != b"/":
            parts = absolute_form(path)
            if parts is None:
                if path == b"*" and method == b"OPTIONS" and (host_field is not None
                                                              or not http11):
                    # asterisk-form (RFC 9112 3.2.4): a valid request, for the server as a
                    # whole (RFC 9110 9.3.7), that no route's path can match
                    return None, responses.NOT_FOUND, b""
                raise Fault(responses.BAD_REQUEST)
            if host_field is None and http11:
                raise Fault(responses.BAD_REQUEST)  # RFC 9112 3.2: even with absolute-form
            target, forwarded, host = parts
            memo = False
        elif host_field is None:
            if http11:
                raise Fault(responses.BAD_REQUEST)  # RFC 9112 3.2: HTTP/1.1 requires Host
            target, forwarded, host = path, b"", b""
            memo = False
        else:
            parts = HOST_NAMES[host_field]
            if not parts:
                raise Fault(responses.BAD_REQUEST)  # RFC 9112 3.2: not host[:port]
            target = path
            forwarded, host = parts
        if NEEDS_NORMALIZING(target):
            target = normalize_path(target)
            if target is None:
                raise Fault(responses.BAD_REQUEST)  # a backslash or a fragment
            route = self.match(host, target, method)
            for reading in lenient_readings(target):
                if self.match(host, reading, method) is not route:
                    raise Fault(responses.BAD_REQUEST)  # another route to some servers behind
        else:
            route = self.match(host, target, method)
        found = ((None, responses.NOT_FOUND, forwarded) if route is None else
                 (route, route.upstream_path(target), forwarded))
        if memo and len(path) <= self.MEMO_PATH:
            if len(self.memo) >= self.MEMO_SIZE:
                self.memo.clear()
            self.memo[host_field, path, method] = found
        return found


# RFC 9112 3.2 and RFC 3986 3.2.2: Host is uri-host [":" port]. fastgw takes a name of
# letters, digits, "-", "." and "_", or a bracketed IPv6 literal, and a port of 1-5 digits:
# no userinfo, no list, no percent-encoding, nothing an upstream could read as another host.
_HOST_MAX = 300  # a DNS name has at most 253 characters; a port, brackets and spaces fit too
_HOST = re.compile(rb"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?")


def parse_host(value: bytes) -> tuple[bytes, bytes] | tuple[()]:
    """(the Host to forward, the name to route on), or () when `value` is not host[:port]
    (an empty Host too: an http URI always has an authority, RFC 9110 4.2.1).

    Trailing whitespace is not part of a field value (RFC 9110 5.5; llhttp keeps it), and
    "example.com." names example.com to every resolver, so both are dropped from the
    forwarded value too: the host routed on is the host the upstream is told."""
    if len(value) > _HOST_MAX:
        return ()
    match = _HOST.fullmatch(value.rstrip(b" \t"))
    if match is None:
        return ()
    name, port = match.groups()
    if port is not None and int(port) > 65535:
        return ()
    if name[:1] == b"[":
        routed = name[1:-1]
    else:
        name = name.rstrip(b".")
        if not name:
            return ()
        routed = name
    return (name if port is None else name + b":" + port), routed.lower()


class HostNames(dict):
    """Host value -> parse_host(value), remembered: a gateway sees a handful of distinct
    Host values, so the usual cost is one dict look-up. Bounded against a flood of new ones."""

    MAX = 4096

    def __missing__(self, value: bytes) -> tuple[bytes, bytes] | tuple[()]:
        parts = parse_host(value)
        if len(value) > _HOST_MAX:
            return parts  # refused, and not kept: a flood of long ones holds no memory
        if len(self) >= self.MAX:
            self.clear()
        self[value] = parts
        return parts


HOST_NAMES = HostNames()


def absolute_form(target: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(origin-form target, Host to forward, name to route on) of an absolute-form target
    ("http://host/path"), accepted as RFC 9112 3.2.2 requires: its authority, held to the
    same rule as Host, replaces the Host header. Anything else (authority-form, "*") is
    not for a gateway: None."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if at != -1 and at < end:
            end = at
    parts = HOST_NAMES[rest[:end]]
    if not parts:
        return None
    path = rest[end:]
    return (path if path[:1] == b"/" else b"/" + path), parts[0], parts[1]


# A path holding none of these is in normal form already (the usual case: one C call).
NEEDS_NORMALIZING = re.compile(rb"/\.|%|\\|//|;|#").search

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(rb"//+")
# What some upstream servers read as "/" although a URI does not: an encoded slash or
# backslash (servers that decode before they split the path).
_ENCODED_SEPARATOR = re.compile(rb"%2F|%5C")


def _percent(match: re.Match) -> bytes:
    byte = int(match[1], 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + match[1].upper()


def normalize_path(path: bytes) -> bytes | None:
    """`path` in normal form, routed and sent upstream as such, or None when it cannot be:
    a backslash (no URI character, RFC 3986 2, and a separator to Windows servers), or a
    "#" (a fragment, which no request-target has, RFC 9112 3.2: servers that end the path
    there would serve "/admin#x" as "/admin", whatever route "/admin#x" took here).

    Percent-encoded unreserved characters are decoded and other escapes upper-cased
    (RFC 3986 6.2.2: "/%61dmin" is "/admin" to any server), runs of "/" are one (as nginx
    routes), and "." and ".." segments are resolved (5.2.4), so that "/public/../private"
    is "/private"."""
    if b"\\" in path or b"#" in path:
        return None
    if b"%" in path:
        path = _PERCENT.sub(_percent, path)
    return _remove_dot_segments(_SLASHES.sub(b"/", path))


def lenient_readings(path: bytes) -> set[bytes]:
    """How the most lenient servers may read a normalized path: %2F and %5C as "/" (the
    ".." segments that makes then kept as names, as servers that decode after they
    normalize have them, or resolved, as those that decode first do), and what follows
    ";" in a segment dropped (servlet containers' path parameters; the dot segments that
    leaves kept, or resolved, as they do). A request any of whose readings takes another route than its path is
    refused: the server behind might serve the other route's path with this route's
    checks ("/private%2F..%2Fx" is "/x" here and "/private/../x" to a WSGI app)."""
    readings = set()
    if b"%" in path:
        decoded = _SLASHES.sub(b"/", _ENCODED_SEPARATOR.sub(b"/", path))
        readings |= {decoded, _remove_dot_segments(decoded)}
        path = decoded
    if b";" in path:
        path = _SLASHES.sub(b"/", b"/".join(segment.partition(b";")[0]
                                            for segment in path.split(b"/")))
        readings |= {path, _remove_dot_segments(path)}
    return readings


def _remove_dot_segments(path: bytes) -> bytes:
    if b"/." not in path:
        return path
    out: list[bytes] = []
    segments = path.split(b"/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == b".":
            if last:
                out.append(b"")
        elif seg == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(seg)
    return b"/" + b"/".join(out)
