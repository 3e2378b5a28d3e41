"""Cluster mode: gateway nodes sharing a configuration in a real etcd."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import jwt as pyjwt
import pytest
import yaml

from conftest import ROOT, free_port, service
from etcd import EtcdServer, TcpRelay, etcd_cluster
from test_admin import KEY, admin
from test_metrics import scrape, value

SECRET = "cluster-test-secret-" + "0123456789abcdef" * 3
PREFIX = "/fastgw"


@pytest.fixture
def etcd(tmp_path):
    server = EtcdServer(tmp_path / "etcd-data").start()
    yield server
    server.kill()


@pytest.fixture
def base_config(upstream) -> dict:
    return {
        "services": [service(upstream.url, [{"name": "r", "paths": ["/*"],
                                             "plugins": {"jwt-auth": {}}}], name="api")],
        "consumers": [{"username": "jack", "credentials": [
            {"id": "jack-jwt", "key": "jack-key", "secret": SECRET}]}],
    }


def fastgw(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env)


def push(tmp_path, etcd_endpoint: str, conf: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"push-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return fastgw("config", "push", str(path), "--etcd", etcd_endpoint)


@pytest.fixture
def start_node(tmp_path, gateway_factory):
    """A gateway node on `endpoint` with an admin API, its snapshot in its own folder."""
    def start(endpoint: str, name: str = "a", start: bool = True, **env):
        admin_port = free_port()
        gw = gateway_factory({}, env={
            "FASTGW_ETCD": endpoint, "FASTGW_ETCD_CACHE": str(tmp_path / f"{name}.json"),
            "FASTGW_ADMIN_KEY": KEY, "FASTGW_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "FASTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}", **env}, start=start)
        gw.admin_port = admin_port
        gw.metrics_port = int(gw.env["FASTGW_METRICS_LISTEN"].rsplit(":", 1)[1])
        return gw
    return start


@pytest.fixture
def cluster(tmp_path, etcd, base_config, start_node):
    """Two nodes on one etcd holding the base configuration; b's first endpoint is dead."""
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    return (start_node(etcd.endpoint, "a"),
            start_node(f"127.0.0.1:{free_port()},http://{etcd.endpoint}", "b"))


def token(key: str = "jack-key", secret: str = SECRET) -> str:
    return pyjwt.encode({"key": key, "exp": int(time.time()) + 600}, secret)


def status_of(gw, tok: str | None) -> int:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return gw.request("GET", "/json", headers=headers)[0]


def wait_status(gw, tok: str | None, expected: int, within: float) -> float:
    """Seconds until `gw` answers `expected` for the token (fails after `within`)."""
    start = time.monotonic()
    while (got := status_of(gw, tok)) != expected:
        assert time.monotonic() - start < within, f"still {got}, wanted {expected}"
        time.sleep(0.02)
    return time.monotonic() - start


# ---------------------------------------------------------------- push and pull

def test_push_writes_one_key_per_object_and_pull_reads_it_back(tmp_path, etcd, base_config):
    result = push(tmp_path, etcd.endpoint, base_config)
    assert result.returncode == 0, result.stderr
    assert "2 keys written" in result.stdout
    assert sorted(etcd.keys(PREFIX + "/")) == [f"{PREFIX}/changed",  # (the writes' guard)
                                               f"{PREFIX}/consumers/jack",
                                               f"{PREFIX}/services/api"]
    assert etcd.get(f"{PREFIX}/consumers/jack")["credentials"][0]["secret"] == SECRET

    pulled = fastgw("config", "pull", "--etcd", etcd.endpoint)
    assert pulled.returncode == 0, pulled.stderr
    conf = yaml.safe_load(pulled.stdout)
    assert [s["name"] for s in conf["services"]] == ["api"]
    assert conf["consumers"][0]["credentials"][0]["secret"] == SECRET

    again = push(tmp_path, etcd.endpoint, base_config)
    assert again.returncode == 0 and "0 keys written" in again.stdout

    etcd.put(f"{PREFIX}/consumers/jack", b"{not json")  # damaged by hand: pushed over
    repaired = push(tmp_path, etcd.endpoint, base_config)
    assert repaired.returncode == 0 and "1 keys written" in repaired.stdout, repaired.stderr
    assert etcd.get(f"{PREFIX}/consumers/jack")["credentials"][0]["secret"] == SECRET

    smaller = {**base_config, "consumers": []}
    assert push(tmp_path, etcd.endpoint, smaller).returncode == 0
    assert etcd.keys(PREFIX + "/") == [f"{PREFIX}/changed", f"{PREFIX}/services/api"]


def test_push_refuses_an_invalid_file_and_writes_nothing(tmp_path, etcd, base_config):
    bad = {**base_config, "services": [{**base_config["services"][0], "path_prefix": "v1"}]}
    result = push(tmp_path, etcd.endpoint, bad)
    assert result.returncode == 1
    assert "services[0].path_prefix: must start with" in result.stderr
    assert etcd.keys(PREFIX + "/") == []


def test_a_change_bigger_than_one_etcd_transaction_is_refused_clearly(
        tmp_path, etcd, base_config, cluster):
    crowd = [{"username": f"user{i}"} for i in range(140)]  # etcd allows 128 operations
    big = {**base_config, "consumers": base_config["consumers"] + crowd}
    result = push(tmp_path, etcd.endpoint, big)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "etcd refused the transaction" in result.stderr and "--max-txn-ops" in result.stderr
    a, _ = cluster
    status, body = admin(a, "PUT", "/admin/config", big)
    assert status == 400 and "--max-txn-ops" in body["error_msg"]
    assert len(etcd.keys(PREFIX + "/consumers/")) == 1  # nothing was written
    # more bytes than etcd's gRPC server takes (2 MiB): 400 too, not "etcd is unavailable"
    heavy = {**base_config, "consumers": base_config["consumers"] + [
        {"username": f"heavy{i}", "credentials": [
            {"id": f"c{i}-{j}", "type": "key-auth", "key": f"key-{i}-{j}-" + "k" * 40}
            for j in range(300)]} for i in range(100)]}
    status, body = admin(a, "PUT", "/admin/config", heavy)
    assert status == 400 and "--max-request-bytes" in body["error_msg"], body
    assert len(etcd.keys(PREFIX + "/consumers/")) == 1


def test_push_and_pull_need_etcd_named_and_reachable(tmp_path, base_config):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(base_config))
    result = fastgw("config", "push", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "FASTGW_ETCD" in result.stderr
    result = fastgw("config", "pull", "--etcd", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot reach etcd" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        result = fastgw("config", "pull", "--etcd", "127.0.0.1:%d" % silent.getsockname()[1])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot reach etcd" in result.stderr and "Deadline Exceeded" in result.stderr


# ---------------------------------------------------------------- shared live

def test_consumer_added_on_one_node_works_on_the_other_within_a_second(cluster, etcd):
    a, b = cluster
    jill = token("jill-key", "j" * 40)
    assert status_of(b, jill) == 401
    status, _ = admin(a, "PUT", "/admin/consumers/jill", {
        "credentials": [{"id": "jill-jwt", "key": "jill-key", "secret": "j" * 40}]})
    assert status == 200
    assert etcd.get(f"{PREFIX}/consumers/jill")["username"] == "jill"
    wait_status(b, jill, 200, within=1.0)


def test_consumer_deleted_on_one_node_is_refused_by_the_other_cached_token_too(cluster):
    a, b = cluster
    jack = token()
    assert status_of(a, jack) == 200  # now in a's verified-token cache
    assert admin(b, "DELETE", "/admin/consumers/jack")[0] == 200
    wait_status(a, jack, 401, within=1.0)


def test_status_and_metrics_show_the_etcd_revision(cluster, etcd):
    a, _ = cluster
    status, body = admin(a, "GET", "/admin/status")
    assert status == 200 and body["config_source"] == f"etcd {etcd.endpoint} {PREFIX}"
    assert body["etcd_connected"] is True and body["revision"] == etcd.revision()
    admin(a, "PUT", "/admin/consumers/jill", {
        "credentials": [{"key": "jill-key", "secret": "j" * 40}]})
    revision = etcd.revision()
    assert admin(a, "GET", "/admin/status")[1]["revision"] == revision
    assert value(scrape(a), "fastgw_config_revision") == revision
    a.signal(signal.SIGHUP)  # reads everything again
    assert f"from etcd {etcd.endpoint} {PREFIX} (revision {revision})" in a.wait_for_log(
        "configuration reloaded")


def test_concurrent_writes_never_lose_one_the_loser_gets_409(cluster):
    """Writers add credentials to one consumer through both nodes at once. Each PUT
    rewrites the whole consumer, so an unguarded write would drop another's credential."""
    nodes = cluster
    conflicts = 0
    for round_ in range(20):
        barrier = threading.Barrier(4)
        results: dict[str, int] = {}

        def add(node, cred_id: str) -> None:
            barrier.wait()
            results[cred_id] = admin(node, "PUT", f"/admin/consumers/jack/credentials/{cred_id}",
                                     {"key": cred_id, "secret": "s" * 40})[0]

        threads = [threading.Thread(target=add, args=(nodes[i % 2], f"r{round_}-{i}"))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert set(results.values()) <= {200, 409}, results
        conflicts += list(results.values()).count(409)
        for node in nodes:  # every acknowledged credential is there, on both nodes
            deadline = time.monotonic() + 2
            while True:
                creds = {c["id"] for c in admin(node, "GET", "/admin/consumers/jack")[1][
                    "credentials"]}
                won = {i for i, s in results.items() if s == 200}
                if won <= creds or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert won <= creds, (results, creds)
            assert not {i for i, s in results.items() if s == 409} & creds
        if conflicts:
            break
    assert conflicts, "no round produced a conflict"


def test_changes_to_different_objects_at_once_through_two_nodes_leave_them_agreeing(cluster):
    """Two services sharing one node with different pools, each valid alone, through each
    node at once: both were stored, and each node served only its own (the other skipped),
    or a PUT stored in etcd was answered 404."""
    nodes = cluster
    outcomes = set()
    shared = f"http://127.0.0.1:{free_port()}"  # a node of their own (never asked)
    for round_ in range(10):
        barrier = threading.Barrier(2)
        results: dict[int, int] = {}

        def put(i: int) -> None:
            barrier.wait()
            results[i] = admin(nodes[i], "PUT", f"/admin/services/s{round_}-{i}", {
                "upstream": {"url": shared, "max_connections": 10 + i},
                "routes": [{"name": "r", "paths": [f"/s{round_}-{i}"]}]})[0]

        threads = [threading.Thread(target=put, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results.values()) in ([200, 400], [200, 409]), results
        outcomes.add(tuple(sorted(results.values())))
        won = next(f"s{round_}-{i}" for i, status in results.items() if status == 200)
        for node in nodes:  # the change that won is in force on both, the other nowhere
            deadline = time.monotonic() + 5
            while True:
                names = {s["name"] for s in admin(node, "GET", "/admin/services")[1]}
                if won in names or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert {n for n in names if n.startswith(f"s{round_}-")} == {won}, names
        # (the next round's services share the node too: this one's goes first)
        assert admin(nodes[0], "DELETE", f"/admin/services/{won}")[0] == 200
    assert (200, 409) in outcomes, "no round had both changes made at once"
    assert not [line for node in nodes for line in node.log if "skipped" in line]


# ---------------------------------------------------------------- faults

def test_an_etcd_replaced_by_a_new_one_is_read_whole(tmp_path, etcd, base_config, start_node):
    """A new (or restored) etcd starts again from revision 1: every event was taken for one
    already seen, so the node said it was connected and followed nothing, and a PUT of an
    object it knew got 409 forever."""
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    for i in range(5):  # this node's revision goes past what the new etcd will have
        etcd.put(f"{PREFIX}/services/old{i}", {**base_config["services"][0], "name": f"old{i}",
                                              "routes": []})
    a = start_node(etcd.endpoint, "a")
    etcd.kill()
    a.wait_for_log("etcd lost")
    fresh = EtcdServer(tmp_path / "fresh")
    fresh.port, fresh.peer_port = etcd.port, etcd.peer_port
    fresh.start()
    try:
        fresh.put(f"{PREFIX}/services/api", base_config["services"][0])
        a.wait_for_log("etcd reachable again", timeout=10)
        deadline = time.monotonic() + 5
        while [s["name"] for s in admin(a, "GET", "/admin/services")[1]] != ["api"]:
            assert time.monotonic() < deadline, admin(a, "GET", "/admin/services")[1]
            time.sleep(0.05)
        assert any("reading the whole configuration again" in line for line in a.log)
        assert admin(a, "GET", "/admin/consumers")[1] == []  # what the new etcd holds
        status, _ = admin(a, "PUT", "/admin/services/api", base_config["services"][0])
        assert status == 200
    finally:
        fresh.kill()


def test_both_nodes_keep_serving_without_etcd_and_follow_it_when_it_returns(cluster, etcd):
    a, b = cluster
    jack = token()
    etcd.kill()
    for node in cluster:
        node.wait_for_log("etcd lost")
        assert status_of(node, jack) == 200 and status_of(node, None) == 401
    status, body = admin(a, "PUT", "/admin/consumers/jill", {
        "credentials": [{"key": "jill-key", "secret": "j" * 40}]})
    assert status == 503 and "etcd" in body["error_msg"]
    assert admin(a, "GET", "/admin/status")[1]["etcd_connected"] is False

    etcd.start()
    for node in cluster:
        node.wait_for_log("etcd reachable again", timeout=10)
    assert admin(a, "DELETE", "/admin/consumers/jack")[0] == 200
    wait_status(b, jack, 401, within=1.0)
    assert sum("etcd lost" in line for line in b.log) == 1  # once per state change


@pytest.fixture
def cut_off(tmp_path, etcd, base_config, start_node):
    """Node a (through a relay) cut off from etcd while node b adds jill and deletes jack."""
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    relay = TcpRelay(etcd.port).start()
    a = start_node(relay.endpoint, "a")
    b = start_node(etcd.endpoint, "b")
    relay.cut()
    a.wait_for_log("etcd lost")
    assert admin(b, "PUT", "/admin/consumers/jill", {
        "credentials": [{"key": "jill-key", "secret": "j" * 40}]})[0] == 200
    assert admin(b, "DELETE", "/admin/consumers/jack")[0] == 200
    return a, relay


def test_changes_made_while_a_node_was_cut_off_arrive_when_it_reconnects(cut_off):
    a, relay = cut_off
    jack, jill = token(), token("jill-key", "j" * 40)
    assert status_of(a, jack) == 200 and status_of(a, jill) == 401  # a has not heard yet
    relay.restore()
    a.wait_for_log("etcd reachable again", timeout=10)
    wait_status(a, jill, 200, within=2)
    wait_status(a, jack, 401, within=2)
    assert not any("compacted" in line for line in a.log)  # resumed, not read again


def test_compaction_past_a_nodes_revision_makes_it_read_everything(cut_off, etcd):
    a, relay = cut_off
    etcd.compact()
    relay.restore()
    a.wait_for_log("etcd compacted its history", timeout=10)
    wait_status(a, token("jill-key", "j" * 40), 200, within=2)
    wait_status(a, token(), 401, within=2)
    assert admin(a, "GET", "/admin/status")[1]["revision"] == etcd.revision()


def test_start_with_etcd_down_serves_the_saved_snapshot(cluster, etcd, start_node):
    a, _ = cluster
    a.stop()
    etcd.kill()
    again = start_node(etcd.endpoint, "a")  # the same snapshot file as `a`
    again.wait_for_log("serving the snapshot of revision")
    assert status_of(again, token()) == 200 and status_of(again, None) == 401

    etcd.start()
    again.wait_for_log("etcd reachable again", timeout=10)
    assert admin(again, "DELETE", "/admin/consumers/jack")[0] == 200
    wait_status(again, token(), 401, within=1.0)


def test_start_with_etcd_down_and_no_snapshot_is_exit_2_in_one_line(start_node):
    gw = start_node(f"127.0.0.1:{free_port()}", "lonely", start=False)
    result = subprocess.run([sys.executable, "-m", "fastgw"], env=gw.env, capture_output=True,
                            text=True, timeout=30, cwd=gw.config_path.parent)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot reach etcd" in result.stderr and "no snapshot" in result.stderr


def test_pull_with_a_value_left_out_says_a_push_would_delete_it_and_exits_1(tmp_path, etcd,
                                                                            base_config):
    """`pull > backup.yaml` exited 0 without an object written into etcd by hand that does
    not validate; pushing that backup back deleted it."""
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    etcd.put(f"{PREFIX}/services/beta", {"name": "beta", "upstream": {"url": "ftp://x"}})
    pulled = fastgw("config", "pull", "--etcd", etcd.endpoint)
    assert pulled.returncode == 1
    assert [s["name"] for s in yaml.safe_load(pulled.stdout)["services"]] == ["api"]
    assert f"etcd key {PREFIX}/services/beta skipped" in pulled.stderr
    assert pulled.stderr.rstrip().endswith("pushing this output back would delete them")


def test_invalid_values_are_skipped_named_in_the_log_and_the_last_good_kept(cluster, etcd):
    a, b = cluster
    jack = token()
    broken = {"username": "jack", "credentials": [
        {"key": "jack-key", "secret": SECRET, "algorithm": "HS999"}]}
    etcd.put(f"{PREFIX}/consumers/jack", broken)
    for node in cluster:
        line = node.wait_for_log(f"etcd key {PREFIX}/consumers/jack skipped")
        assert "credentials[0].algorithm" in line and "keeping its last good version" in line
        assert SECRET not in line
    assert status_of(a, jack) == 200 and status_of(b, jack) == 200

    etcd.put(f"{PREFIX}/consumers/mallory", {"credentials": [
        {"key": "jack-key", "secret": "m" * 40}]})  # jack's key, taken again
    line = a.wait_for_log(f"etcd key {PREFIX}/consumers/mallory skipped")
    assert "credentials[0].key: duplicate key 'jack-key'" in line
    etcd.put(f"{PREFIX}/services/junk", b"{not json")
    assert "is not JSON" in a.wait_for_log(f"etcd key {PREFIX}/services/junk skipped")
    assert status_of(a, jack) == 200 and status_of(a, token("jack-key", "m" * 40)) == 401

    etcd.put(f"{PREFIX}/consumers/jack", {"credentials": [
        {"key": "jack-key", "secret": "n" * 40}]})  # a good value again
    wait_status(a, token("jack-key", "n" * 40), 200, within=1.0)
    assert status_of(a, jack) == 401
    # the admin API can still write a key whose last value was skipped
    assert admin(b, "PUT", "/admin/services/junk", {
        "upstream": {"url": "http://127.0.0.1:1"}, "routes": []})[0] == 200


# a value whose validation once raised past the schema (ssl's ValueError for a NUL in a path)
BAD_CA_FILE = {"name": "bad", "routes": [],
               "upstream": {"url": "https://127.0.0.1:1", "tls": {"ca_file": "/etc/ssl\u0000x"}}}


def test_a_node_starts_though_etcd_holds_a_value_that_cannot_be_valid(
        tmp_path, etcd, base_config, start_node):
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    etcd.put(f"{PREFIX}/services/bad", BAD_CA_FILE)
    gw = start_node(etcd.endpoint, "a")
    line = gw.wait_for_log(f"etcd key {PREFIX}/services/bad skipped")
    assert "upstream.tls.ca_file: cannot be read as CA certificates" in line
    assert status_of(gw, token()) == 200
    assert "Traceback" not in "".join(gw.log)


def test_a_change_beside_a_value_that_cannot_be_valid_is_in_force(tmp_path, etcd, base_config,
                                                                   start_node):
    """In one transaction: consumer jill and that service. The batch raised in the watch's
    callback, and jill, seen already, was lost on the node until it restarted."""
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    a = start_node(etcd.endpoint, "a")
    jill = token("jill-key", "j" * 40)
    assert status_of(a, jill) == 401
    etcd.put_all({f"{PREFIX}/consumers/jill": {"username": "jill", "credentials": [
        {"key": "jill-key", "secret": "j" * 40}]}, f"{PREFIX}/services/bad": BAD_CA_FILE})
    wait_status(a, jill, 200, within=1.0)
    assert "Traceback" not in "".join(a.log)


def test_deleting_a_consumer_a_service_still_names_keeps_it_with_a_log_line(
        tmp_path, etcd, base_config, start_node):
    base_config["services"][0]["routes"][0]["plugins"]["jwt-auth"] = {
        "anonymous_consumer": "guest"}
    base_config["consumers"].append({"username": "guest"})
    assert push(tmp_path, etcd.endpoint, base_config).returncode == 0
    a = start_node(etcd.endpoint, "a")
    assert status_of(a, None) == 200  # the anonymous consumer
    etcd.delete(f"{PREFIX}/consumers/guest")
    line = a.wait_for_log(f"etcd key {PREFIX}/consumers/guest was deleted")
    assert f"{PREFIX}/services/api still uses it" in line
    assert status_of(a, None) == 200
    # once nothing uses it, the deletion is made: it was kept for good, where a node started
    # since had none
    service = base_config["services"][0]
    service["routes"][0]["plugins"]["jwt-auth"] = {}
    start = len(a.log)
    etcd.put(f"{PREFIX}/services/api", service)
    a.wait_for_log("configuration revision", start=start)  # read: the workers follow
    wait_status(a, None, 401, within=5)
    assert [c["username"] for c in admin(a, "GET", "/admin/consumers")[1]] == ["jack"]
    assert len([line for line in a.log if "was deleted but" in line]) == 1


def test_a_node_on_a_member_without_a_leader_says_it_is_cut_off_and_catches_up(
        tmp_path, base_config, start_node):
    """Its member is up but has lost its cluster (here: the two others are down): the node
    watches with etcd's "require leader", so the member ends the watch and the node says
    it is cut off and tries again (it kept a silent watch, and said it was connected, for
    as long as the member had no leader), then catches up once there is a leader."""
    members = etcd_cluster(tmp_path / "etcd")
    try:
        first, second, third = members
        assert push(tmp_path, first.endpoint, base_config).returncode == 0
        node = start_node(third.endpoint, "c")
        assert admin(node, "GET", "/admin/status")[1]["etcd_connected"] is True
        first.kill()
        second.kill()
        node.wait_for_log("etcd lost", timeout=30)
        assert admin(node, "GET", "/admin/status")[1]["etcd_connected"] is False
        for member in (first, second):
            member.start(wait=False)
        for member in (first, second):
            member.wait_ready()
        node.wait_for_log("etcd reachable again", timeout=30)
        changed = {**base_config, "consumers": [*base_config["consumers"], {"username": "jill"}]}
        assert push(tmp_path, first.endpoint, changed).returncode == 0
        deadline = time.monotonic() + 5
        while "jill" not in [c["username"] for c in admin(node, "GET", "/admin/consumers")[1]]:
            assert time.monotonic() < deadline, "the node did not catch up"
            time.sleep(0.05)
    finally:
        for member in members:
            member.kill()
