"""Prometheus metrics summed over the workers, and /healthz."""

from __future__ import annotations

import http.client
import json
import os
import signal

import jwt as pyjwt
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, service
from upstream import UpstreamServer

SECRET = "metrics-secret-" + "0123456789abcdef" * 3


def scrape(gw) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", gw.metrics_port, timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.read().decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_move_with_requests(upstream, gateway_factory):
    port = free_port()
    gw = gateway_factory({
        "services": [service(upstream.url, [
            {"name": "open", "paths": ["/open/*"]},
            {"name": "closed", "paths": ["/closed/*"], "plugins": {"jwt-auth": {}}}])],
        "consumers": [{"username": "u", "credentials": [{"key": "k", "secret": SECRET}]}],
    }, env={"FASTGW_WORKERS": "2", "FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}"})
    gw.metrics_port = port
    before = scrape(gw)
    token = pyjwt.encode({"key": "k"}, SECRET)
    for _ in range(10):
        assert gw.request("GET", "/open/x")[0] == 200
        assert gw.request("GET", "/closed/x", headers={"Authorization": token})[0] == 200
    for _ in range(3):
        assert gw.request("GET", "/closed/x")[0] == 401
        assert gw.request("GET", "/closed/x", headers={"Authorization": "bad"})[0] == 401
    assert gw.request("GET", "/nowhere")[0] == 404
    after = scrape(gw)
    assert value(after, "fastgw_requests_total", service="svc", route="open", status="200") \
        - value(before, "fastgw_requests_total", service="svc", route="open", status="200") == 10
    assert value(after, "fastgw_requests_total", service="svc", route="closed", status="401") == 6
    assert value(after, "fastgw_requests_total", service="", route="", status="404") == 1
    assert value(after, "fastgw_auth_failures_total", reason="missing_token") == 3
    assert value(after, "fastgw_auth_failures_total", reason="invalid_token") == 3
    assert value(after, "fastgw_jwt_cache_hits_total") + value(
        after, "fastgw_jwt_cache_misses_total") == 13  # 10 good tokens, 3 garbled
    assert value(after, "fastgw_request_duration_seconds_count", service="svc",
                 route="open") == 10
    assert value(after, "fastgw_upstream_duration_seconds_count") == 20  # the 200s above
    opened = value(after, "fastgw_upstream_connections_total", outcome="opened")
    reused = value(after, "fastgw_upstream_connections_total", outcome="reused")
    assert opened + reused == 20 and opened <= 2  # at most one per worker, then kept alive
    assert value(after, "fastgw_config_revision") == 1
    assert value(after, "fastgw_workers") == 2


def _metered(gateway_factory, upstream_url: str):
    """A gateway with one catch-all route to `upstream_url` and its metrics port."""
    port = free_port()
    gw = gateway_factory({"services": [service(upstream_url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}"})
    gw.metrics_port = port
    return gw


def test_connection_counters_only_go_up_when_a_reload_drops_a_pool(upstream, gateway_factory):
    gw = _metered(gateway_factory, upstream.url)
    for _ in range(3):
        assert gw.request("GET", "/before")[0] == 200
    before = scrape(gw)
    assert value(before, "fastgw_upstream_connections_total", outcome="opened") == 1
    assert value(before, "fastgw_upstream_connections_total", outcome="reused") == 2
    other = UpstreamServer().start()
    try:
        gw.write_config({"services": [service(other.url, [{"name": "a", "paths": ["/*"]}])]})
        gw.signal(signal.SIGHUP)
        gw.wait_for_log("configuration reloaded")  # the first upstream's pool is gone
        assert gw.request("GET", "/after")[0] == 200
        after = scrape(gw)
    finally:
        other.stop()
    assert value(after, "fastgw_upstream_connections_total", outcome="opened") == 2
    assert value(after, "fastgw_upstream_connections_total", outcome="reused") == 2


def test_healthz(upstream, gateway_factory):
    port = free_port()
    gateway_factory({"services": []}, env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
    for path in ("/healthz", "/metrics"):  # as load balancers' checks send it (it was 404)
        conn.request("HEAD", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and int(resp.getheader(
            "content-length")) > 0


def test_a_scrape_a_worker_answered_too_late_for_leaves_the_next_ones_and_supervision(
        upstream, gateway_factory):
    """The stats a stopped worker sends after the scrape gave up on it (503) are dropped:
    they ended the master's supervision of that worker, so every later scrape got 503 and
    a worker that died was not replaced."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]},
                         env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}"})
    gw.metrics_port = int(gw.env["FASTGW_METRICS_LISTEN"].rsplit(":", 1)[1])
    [worker] = gw.worker_pids()
    os.kill(worker, signal.SIGSTOP)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gw.metrics_port, timeout=15)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 503  # after the 5 s it waits for workers
    finally:
        os.kill(worker, signal.SIGCONT)
    assert value(scrape(gw), "fastgw_worker_restarts_total") == 0
    start = len(gw.log)
    os.kill(worker, signal.SIGKILL)
    gw.wait_for_log("starting a new one", start=start)
    assert value(scrape(gw), "fastgw_worker_restarts_total") == 1
    assert gw.request("GET", "/x")[0] == 200


def test_counters_do_not_go_down_when_a_worker_is_replaced(upstream, gateway_factory):
    """What a worker that died had counted, as of the last scrape, stays in the sums (they
    fell by it, which Prometheus reads as a counter reset: rate() jumps)."""
    port = free_port()
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                         env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}",
                              "FASTGW_WORKERS": "1"})
    gw.metrics_port = port
    for _ in range(5):
        assert gw.request("GET", "/counted")[0] == 200
    assert gw.request("GET", "/counted", headers={"Connection": "close"})[0] == 200
    before = scrape(gw)
    requests = value(before, "fastgw_requests_total", service="svc", route="a", status="200")
    assert requests == 6
    start = len(gw.log)
    os.kill(gw.worker_pids()[0], signal.SIGKILL)
    gw.wait_for_log("starting a new one", start=start)
    assert gw.request("GET", "/counted")[0] == 200
    after = scrape(gw)
    assert value(after, "fastgw_requests_total", service="svc", route="a", status="200") == 7
    for name, labels in before:
        if name.endswith(("_total", "_count", "_bucket", "_sum")):
            assert after.get((name, labels), 0) >= before[(name, labels)], (name, labels)


# README: "fastgw_upstream_connections_total{outcome} (opened, reused)". A connect the
# upstream refuses opens no connection (each was counted as opened).
def test_a_refused_connect_is_not_counted_as_an_opened_connection(gateway_factory):
    gw = _metered(gateway_factory, f"http://127.0.0.1:{free_port()}")  # refused: nobody there
    for _ in range(3):
        assert gw.request("GET", "/x")[0] == 502
    after = scrape(gw)
    assert value(after, "fastgw_upstream_connections_total", outcome="opened") == 0
