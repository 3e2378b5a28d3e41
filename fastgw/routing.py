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


class Route:
    """A route as requests see it: where it goes and what runs before it goes there."""

    __slots__ = ("service", "name", "metrics_key", "methods", "priority", "strip", "upstream",
                 "plugins", "order")

    def __init__(self, service: str, name: str, methods: Iterable[str], priority: int,
                 strip: int, upstream, plugins: tuple):
        self.service, self.name = service, name
        self.metrics_key = (service, name)  # labels of its request counters, built once
        self.methods = frozenset(m.encode() for m in methods) or None  # None: any method
        self.priority = priority
        self.strip = strip  # bytes of path prefix removed before going upstream
        self.upstream = upstream
        self.plugins = plugins
        self.order = 0  # declaration order, the last tie-breaker

    def upstream_target(self, target: bytes) -> bytes:
        """The request-target sent upstream: base path + path without prefix + query."""
        rest = target[self.strip:]
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
    __slots__ = ("exact_hosts", "wildcard_hosts", "any_host", "has_wildcards")

    def __init__(self):
        self.exact_hosts: dict[bytes, PathTable] = {}
        self.wildcard_hosts: dict[bytes, PathTable] = {}  # ".example.com" for "*.example.com"
        self.any_host = PathTable()
        self.has_wildcards = False

    @classmethod
    def build(cls, entries: Iterable[tuple[list[str], str, Route]]) -> "RouteTable":
        """entries: (service hosts, full path, route), in declaration order."""
        table = cls()
        for order, (hosts, path, route) in enumerate(entries):
            route.order = order
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


# RFC 9112 3.2 and RFC 3986 3.2.2: Host is uri-host [":" port]. fastgw takes a name of
# letters, digits, "-", "." and "_", or a bracketed IPv6 literal, and a port of 1-5 digits:
# no userinfo, no list, no percent-encoding, nothing an upstream could read as another host.
_HOST = re.compile(rb"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?")


def parse_host(value: bytes) -> tuple[bytes, bytes] | tuple[()]:
    """(the Host to forward, the name to route on), or () when `value` is not host[:port]
    (an empty Host too: an http URI always has an authority, RFC 9110 4.2.1).

    Trailing whitespace is not part of a field value (RFC 9110 5.5; llhttp keeps it), and
    "example.com." names example.com to every resolver, so both are dropped from the
    forwarded value too: the host routed on is the host the upstream is told."""
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
        if len(self) >= self.MAX:
            self.clear()
        self[value] = parts
        return parts


HOST_NAMES = HostNames()


def needs_normalizing(path: bytes) -> bool:
    """Whether normalize_path could change `path` or refuse it: cheap tests only, since
    every request asks (the server inlines the same three)."""
    return b"/." in path or b"%" in path or b"\\" in path


# What some upstream servers read as "/" although a URI does not: an encoded slash or
# backslash (servers that decode before resolving dot segments), a backslash (Windows
# servers), and what follows ";" in a segment (servlet containers drop path parameters).
_SEPARATOR_LOOKALIKE = re.compile(rb"%2[fF]|%5[cC]|\\")


def _dot_segments(segments: list[bytes]) -> int:
    return sum(seg == b"." or seg == b".." for seg in segments)


def normalize_path(path: bytes) -> bytes | None:
    """Resolve "." and ".." segments (RFC 3986 section 5.2.4), "%2e" counting as ".",
    so that "/public/../private" is routed, and sent upstream, as "/private".

    None when a segment is a dot segment only to a server that reads more separators
    than RFC 3986 does ("/public/..%2fprivate", "/public/..\\private", "/public/..;/private"):
    fastgw would route one path and such an upstream serve another, so it is refused."""
    path = path.replace(b"%2e", b".").replace(b"%2E", b".")
    if b";" in path or _SEPARATOR_LOOKALIKE.search(path):
        lenient = [seg.partition(b";")[0]
                   for seg in _SEPARATOR_LOOKALIKE.sub(b"/", path).split(b"/")]
        if _dot_segments(lenient) != _dot_segments(path.split(b"/")):
            return None
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
