"""Metrics: plain counters in each worker, summed by the master into Prometheus text.

A worker's request path appends one tuple (status, seconds, upstream seconds) to its
route's list, bound to the route when the configuration is compiled; `fold` (every
tick, more often under load: server.Gateway.fold; and before a scrape) counts the lists
into counters and histogram buckets with C loops (Counter, map, bisect). Nothing is
formatted until a scrape, when the master asks every worker for its counters (over the
same pipe as configurations) and renders them with prometheus-client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from functools import partial
from operator import is_not, itemgetter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from .plugins import COUNTERS, counter_values

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe_all(self, seconds) -> None:
        for bucket, n in Counter(map(_BUCKET, seconds)).items():
            self.counts[bucket] += n
        self.sum += sum(seconds)


_BUCKET = partial(bisect_left, BUCKETS)
_NOT_NONE = partial(is_not, None)  # in C: the gateway's own answers have no upstream time
_HAS_LOG = itemgetter(1)  # (labels, log) -> log, true when it holds requests
_UNROUTED = ("", "")  # labels of requests no route took (404, 400, ...)


class WorkerStats:
    """One worker's counters; `snapshot` is what it sends to the master."""

    def __init__(self):
        self.requests: dict[tuple[str, str, int], int] = {}
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.upstream = Histogram()
        self.auth_failures: dict[str, int] = {}
        self.tls_handshake_failures = 0  # bumped by tls.TLSListener
        # labels -> (status, seconds, upstream seconds or None) of requests not yet folded;
        # kept across configurations, so that counters only go up
        self.pending: dict[tuple[str, str], list[tuple]] = {}
        self.unrouted = self.pending[_UNROUTED] = []

    def bind(self, routes) -> None:
        """Give each route of a new configuration the list its requests go to."""
        for route in routes:
            key = (route.service, route.name)
            log = self.pending.get(key)
            if log is None:
                log = self.pending[key] = []
            route.stats = log

    def auth_failed(self, reason: str) -> None:
        self.auth_failures[reason] = self.auth_failures.get(reason, 0) + 1

    def fold(self) -> int:
        """Count the requests recorded since the last fold; returns how many there were.
        (Routes with none are skipped in C: a configuration may have thousands.)"""
        requests = self.requests
        folded = 0
        for key, log in filter(_HAS_LOG, self.pending.items()):
            folded += len(log)
            statuses, seconds, upstream = zip(*log)
            log.clear()
            for status, n in Counter(statuses).items():
                rkey = (*key, status)
                requests[rkey] = requests.get(rkey, 0) + n
            hist = self.durations.get(key)
            if hist is None:
                hist = self.durations[key] = Histogram()
            hist.observe_all(seconds)
            self.upstream.observe_all(list(filter(_NOT_NONE, upstream)))
        return folded

    def snapshot(self, gateway) -> dict:
        self.fold()
        counts = gateway.pools.counts  # over every pool this worker had: only goes up
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "durations": [[*k, h.counts, h.sum] for k, h in self.durations.items()],
            "upstream": [self.upstream.counts, self.upstream.sum],
            "auth_failures": self.auth_failures,
            "plugins": counter_values(gateway.snapshot.state),
            "upstream_connections": {"opened": counts.opened,
                                     "reused": gateway.pools.reused()},
            "upstream_queue": {"queued": counts.queued, "timeouts": counts.queue_timeouts},
            "tls_handshake_failures": self.tls_handshake_failures,
        }


def _cumulative(counts: list[int]) -> list[tuple[str, int]]:
    out, total = [], 0
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts):
        total += count
        out.append((bound, total))
    return out


def _add(into: list[int], counts: list[int]) -> None:
    for i, c in enumerate(counts):
        into[i] += c


def merge(snapshots: list[dict]) -> dict:
    """Worker snapshots (WorkerStats.snapshot) summed into one of the same form: those of
    the workers running, and what workers gone had counted (Master.departed)."""
    requests: dict[tuple, int] = {}
    durations: dict[tuple, list] = {}
    up_counts, up_total = [0] * (len(BUCKETS) + 1), 0.0
    failures: dict[str, int] = {}
    plugins = dict.fromkeys(COUNTERS, 0)
    conns = {"opened": 0, "reused": 0}
    queue = {"queued": 0, "timeouts": 0}
    tls_failures = 0
    for snap in snapshots:
        for service, route, status, n in snap["requests"]:
            key = (service, route, status)
            requests[key] = requests.get(key, 0) + n
        for service, route, counts, total in snap["durations"]:
            entry = durations.setdefault((service, route), [[0] * len(counts), 0.0])
            _add(entry[0], counts)
            entry[1] += total
        _add(up_counts, snap["upstream"][0])
        up_total += snap["upstream"][1]
        for reason, n in snap["auth_failures"].items():
            failures[reason] = failures.get(reason, 0) + n
        for name in plugins:
            plugins[name] += snap["plugins"][name]
        for name in conns:
            conns[name] += snap["upstream_connections"][name]
        for name in queue:
            queue[name] += snap["upstream_queue"][name]
        tls_failures += snap["tls_handshake_failures"]
    return {"requests": [[*key, n] for key, n in requests.items()],
            "durations": [[*key, counts, total] for key, (counts, total) in durations.items()],
            "upstream": [up_counts, up_total], "auth_failures": failures, "plugins": plugins,
            "upstream_connections": conns, "upstream_queue": queue,
            "tls_handshake_failures": tls_failures}


class _Collector:
    def __init__(self, snapshots: list[dict], revision: int, restarts: int, workers: int,
                 key_sets: list[dict] = (), revocations: int = 0):
        self.snapshots, self.revision = snapshots, revision
        self.restarts, self.workers = restarts, workers
        self.key_sets = key_sets
        self.revocations = revocations  # entries in force (the master's count)

    def collect(self):
        requests = CounterMetricFamily("fastgw_requests", "Requests answered",
                                       labels=["service", "route", "status"])
        durations = HistogramMetricFamily("fastgw_request_duration_seconds",
                                          "Time from request head to response end",
                                          labels=["service", "route"])
        upstream = HistogramMetricFamily("fastgw_upstream_duration_seconds",
                                         "Time from request sent upstream to response head")
        failures = CounterMetricFamily("fastgw_auth_failures",
                                       "Requests refused by an authentication plugin",
                                       labels=["reason"])
        conns = CounterMetricFamily("fastgw_upstream_connections", "Upstream connections",
                                    labels=["outcome"])
        total = merge(self.snapshots)
        for service, route, status, n in total["requests"]:
            requests.add_metric([service, route, str(status)], n)
        for service, route, counts, seconds in total["durations"]:
            durations.add_metric([service, route], _cumulative(counts), seconds)
        upstream.add_metric([], _cumulative(total["upstream"][0]), total["upstream"][1])
        fail_sum = total["auth_failures"]
        for reason, n in fail_sum.items():
            failures.add_metric([reason], n)
        for name, n in total["upstream_connections"].items():
            conns.add_metric([name], n)
        yield from (requests, durations, upstream, failures)
        for name, (help_text, _) in COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=total["plugins"][name])
        yield conns
        yield CounterMetricFamily("fastgw_upstream_queued",
                                  "Requests that waited for a node at max_connections",
                                  value=total["upstream_queue"]["queued"])
        yield CounterMetricFamily("fastgw_upstream_queue_timeouts",
                                  "Requests answered 503: their node stayed at max_connections",
                                  value=total["upstream_queue"]["timeouts"])
        yield CounterMetricFamily("fastgw_tls_handshake_failures",
                                  "TLS handshakes that failed or timed out (never a request)",
                                  value=total["tls_handshake_failures"])
        yield CounterMetricFamily("fastgw_worker_restarts", "Workers replaced",
                                  value=self.restarts)
        yield GaugeMetricFamily("fastgw_workers", "Workers running", value=self.workers)
        yield GaugeMetricFamily("fastgw_config_revision", "Configuration revision in force",
                                value=self.revision)
        # revocation (SPEC section 9): refusals are the auth failures of reason "revoked"
        yield CounterMetricFamily("fastgw_revoked", "Requests refused with a revoked token",
                                  value=fail_sum.get("revoked", 0))
        yield GaugeMetricFamily("fastgw_revocations", "Revocation entries in force",
                                value=self.revocations)
        if self.key_sets:
            yield from self._key_sets()

    def _key_sets(self):
        """The master's key-set fetchers (jwks.KeySetFetchers.metrics), one series per URL."""
        fetches = CounterMetricFamily("fastgw_jwks_fetches", "Key-set fetches by outcome",
                                      labels=["uri", "outcome"])
        keys = GaugeMetricFamily("fastgw_jwks_keys", "Keys in the key set served",
                                 labels=["uri"])
        stale = GaugeMetricFamily("fastgw_jwks_stale",
                                  "1 while a key set's refreshes fail and its last keys serve",
                                  labels=["uri"])
        for item in self.key_sets:
            for outcome, n in item["fetches"].items():
                fetches.add_metric([item["uri"], outcome], n)
            keys.add_metric([item["uri"]], item["keys"])
            stale.add_metric([item["uri"]], item["stale"])
        yield from (fetches, keys, stale)


def render(snapshots: list[dict], revision: int, restarts: int, workers: int,
           key_sets: list[dict] = (), revocations: int = 0) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Collector(snapshots, revision, restarts, workers, key_sets,
                                 revocations))
    return generate_latest(registry)
