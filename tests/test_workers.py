"""Master and workers: several workers serve, a dead one is replaced, shutdown drains."""

from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, service


def socket_owner_pids(gw, sockets: list[socket.socket]) -> list[int]:
    """The worker pid holding the server side of each client socket."""
    client_ports = {s.getsockname()[1] for s in sockets}
    server_inodes = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            if local_port == gw.port and remote_port in client_ports:
                server_inodes[fields[9]] = remote_port
    owners = {}
    for pid in gw.worker_pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in server_inodes:
                owners[server_inodes[target[8:-1]]] = pid
    return [owners.get(s.getsockname()[1]) for s in sockets]


def open_connections(gw, n: int,
                     request: bytes = b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n"
                     ) -> list[socket.socket]:
    """n connections, all open at once, each having had one request answered 200."""
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(request)
        conns.append(s)
    for s in conns:
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    return conns


def connections_on_both_workers(gw, request: bytes = b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n"
                                ) -> tuple[list[socket.socket], list[int]]:
    """Open connections in small bursts, each having had `request` answered 200, until
    each of the two workers holds some; which worker accepts a connection is the kernel's
    and the workers' race (a loaded machine can give one worker 30 in a row)."""
    conns, owners = [], []
    deadline = time.monotonic() + 10
    while len(set(owners)) < 2:
        assert time.monotonic() < deadline, f"one worker took every connection: {owners}"
        burst = open_connections(gw, 5, request)
        conns += burst
        owners += socket_owner_pids(gw, burst)
    return conns, owners


def two_worker_gateway(upstream, gateway_factory, **env):
    return gateway_factory({"services": [service(upstream.url, [{"name": "a", "paths": ["/*"]}])]},
                           env={"FASTGW_WORKERS": "2", **env})


def test_two_workers_both_serve(upstream, gateway_factory):
    gw = two_worker_gateway(upstream, gateway_factory)
    assert len(gw.worker_pids()) == 2
    conns, owners = connections_on_both_workers(gw)
    try:
        assert set(owners) == set(gw.worker_pids())
    finally:
        for s in conns:
            s.close()


def test_killed_worker_is_replaced_and_the_other_never_notices(upstream, gateway_factory):
    gw = two_worker_gateway(upstream, gateway_factory)
    conns, owners = connections_on_both_workers(gw)
    victim = owners[0]
    survivors = [s for s, pid in zip(conns, owners) if pid != victim]
    failures = []
    stop = threading.Event()

    def load():  # keep the surviving worker's connections busy meanwhile
        while not stop.is_set():
            for s in survivors:
                try:
                    s.sendall(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
                    if not s.recv(65536).startswith(b"HTTP/1.1 200"):
                        failures.append("bad answer")
                except OSError as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=load)
    thread.start()
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    gw.wait_for_log("starting a new one", timeout=5)
    while len(gw.worker_pids()) < 2 or victim in gw.worker_pids():
        assert time.monotonic() - started < 1.0, "no replacement worker within one second"
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert failures == []
    for s in conns:
        s.close()
    for _ in range(20):  # new connections are served (by whichever worker)
        assert gw.request("GET", "/json")[0] == 200


def _processes_listening_as(port: int) -> list[int]:
    """Processes (the master and its workers) started for the gateway on `port`."""
    mark = f"FASTGW_LISTEN=127.0.0.1:{port}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


@pytest.mark.parametrize("delay", [0.001, 0.002, 0.003, 0.004, 0.006, 0.008])
def test_a_stop_while_a_worker_is_being_replaced_stops_the_replacement(upstream, gateway_factory,
                                                                         delay):
    """A SIGTERM that comes while the master starts a replacement for a dead worker: the
    replacement is stopped and waited for too (it was left running, its master gone, and
    died of a broken pipe with a traceback)."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]})
    os.kill(gw.worker_pids()[0], signal.SIGKILL)
    time.sleep(delay)  # the stimulus: the stop lands while the replacement starts, or near
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert _processes_listening_as(gw.port) == []
    with gw._lines:  # everything the processes wrote, to the end of their output
        assert gw._lines.wait_for(lambda: gw.exited, 10)
    assert not any("Traceback" in line for line in gw.log), "".join(gw.log)


def _signal_masks(pid: int) -> dict[str, int]:
    """The signal masks of a process's main thread: SigBlk (blocked), SigCgt (caught), ..."""
    with open(f"/proc/{pid}/status") as f:
        return {name: int(value, 16) for name, _, value in (line.partition(":") for line in f)
                if name in ("SigPnd", "SigBlk", "SigIgn", "SigCgt")}


def _start_reached(pid: int, moment: str, sig: int) -> bool:
    """Whether a starting master has come to `moment`, before its handlers are set (SIGTERM
    not caught yet): "own code" once fastgw's own code runs and holds `sig` blocked (the
    first thing it does; the interpreter's start before it is beyond any handling), "uvloop
    loaded" once it has its event loop's library (importing the master's modules)."""
    try:
        masks = _signal_masks(pid)
        if masks["SigCgt"] >> (signal.SIGTERM - 1) & 1:
            return False
        if moment == "own code":
            return bool(masks["SigBlk"] >> (sig - 1) & 1)
        with open(f"/proc/{pid}/maps") as f:
            return "/uvloop/loop." in f.read()
    except OSError:  # gone
        return False


@pytest.mark.parametrize("moment", ["own code", "uvloop loaded"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"])
def test_a_signal_early_in_the_start_waits_for_the_masters_handlers(upstream, gateway_factory,
                                                                     name, moment):
    """A signal sent while the master still imports its modules is handled once its handlers
    are set: SIGTERM and SIGINT stop it cleanly, SIGHUP reloads, SIGUSR1 reopens the logs
    (each one's default action ended it: -15, -1, -10, and SIGINT with a traceback)."""
    sig = getattr(signal, name)
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]},
                         start=False).launch()
    deadline = time.monotonic() + 5
    while not _start_reached(gw.proc.pid, moment, sig):
        assert gw.proc.poll() is None, "".join(gw.log)
        assert time.monotonic() < deadline, f"the master never came to {moment!r}"
        time.sleep(0.001)
    gw.signal(sig)
    if sig in (signal.SIGTERM, signal.SIGINT):
        assert gw.proc.wait(15) == 0, "".join(gw.log)
        assert _processes_listening_as(gw.port) == []  # no worker left behind
    else:
        gw.wait_for_log("serving on", timeout=15)
        assert gw.request("GET", "/json")[0] == 200
        assert gw.stop() == 0
    with gw._lines:  # everything the processes wrote, to the end of their output
        assert gw._lines.wait_for(lambda: gw.exited, 10)
    assert not any("Traceback" in line for line in gw.log), "".join(gw.log)


def _in_flight(gw, upstream, target: str):
    """GET `target` in a thread, returned once the upstream has it: (thread, result), with
    result["answer"] set when it is answered. `target` gets a query parameter of its own:
    the upstream serves the whole session, and another test's request must not count."""
    target += f"&in-flight={time.monotonic_ns()}"
    result = {}
    thread = threading.Thread(target=lambda: result.update(answer=gw.request("GET", target)))
    thread.start()
    deadline = time.monotonic() + 5
    while not any(r["target"] == target for r in upstream.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return thread, result


def test_sigterm_lets_in_flight_request_finish_and_exits_0(upstream, gateway_factory):
    gw = two_worker_gateway(upstream, gateway_factory)
    thread, result = _in_flight(gw, upstream, "/slow?delay=1")
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    thread.join(5)
    status, headers, body = result["answer"]
    assert status == 200 and body == b'{"slow": true}'
    assert headers["connection"] == "close"  # the client does not send another on it


def test_during_the_drain_new_connections_are_refused_not_left_waiting(upstream,
                                                                        gateway_factory):
    """The workers stop accepting and the master closes its copies of the listening
    sockets too (they kept the port open: connections queued for nobody, reset at exit)."""
    gw = two_worker_gateway(upstream, gateway_factory)
    thread, result = _in_flight(gw, upstream, "/slow?delay=3")
    gw.signal(signal.SIGTERM)
    gw.wait_for_log("draining in-flight requests")
    deadline = time.monotonic() + 1.5  # well before the in-flight request ends
    while True:
        try:
            socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "still accepting connections while draining"
        time.sleep(0.02)
    assert gw.proc.wait(10) == 0
    thread.join(5)
    assert result["answer"][0] == 200


def test_sigterm_closes_idle_keep_alive_connections(upstream, gateway_factory):
    gw = two_worker_gateway(upstream, gateway_factory)
    conns = open_connections(gw, 4)
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    for s in conns:
        assert s.recv(10) == b""
        s.close()


def test_shutdown_timeout_bounds_the_drain(upstream, gateway_factory):
    gw = two_worker_gateway(upstream, gateway_factory, FASTGW_SHUTDOWN_TIMEOUT="0.5")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"GET /slow?delay=5 HTTP/1.1\r\nHost: a\r\n\r\n")
    deadline = time.monotonic() + 5
    while not any(r["target"] == "/slow?delay=5" for r in upstream.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    s.close()


def test_the_open_file_limit_is_raised_to_the_hard_limit(upstream, gateway_factory):
    """Each proxied connection takes two descriptors; a soft limit of 1,024 would cap a
    worker near 500 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit is too low to tell")
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}])]},
                         start=False)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        gw.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    raised = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # the kernel's usual cap
    for pid in [gw.proc.pid, *gw.worker_pids()]:
        with open(f"/proc/{pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        assert int(line.split()[3]) == raised, line


def test_a_worker_that_cannot_start_is_tried_again_ever_more_slowly_and_healthz_says_so(
        upstream, gateway_factory, tmp_path):
    """While the mark exists, each new worker fails to compile the configuration and exits:
    they are started again after a pause that doubles (it was a tight loop, about four a
    second, while /healthz said ok); once the mark is gone, the next one serves."""
    mark = tmp_path / "cannot-start"
    metrics_port = free_port()
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "all", "paths": ["/*"]},
        {"name": "boom", "paths": ["/boom"], "plugins": {"explode": {"at_build_if": str(mark)}}}
    ])]},
        env={"FASTGW_WORKERS": "1", "FASTGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"},
        plugins=["faulty_plugin"])

    def healthz() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
            return r.status

    assert healthz() == 200
    mark.touch()
    os.kill(gw.worker_pids()[0], signal.SIGKILL)
    gw.wait_for_log("starting a new one in 0.4 s", timeout=10)  # the third in a row
    try:
        healthz()
        raise AssertionError("healthz answered 200 with no worker serving")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
    pauses = [line for line in gw.log if "before it was ready" in line]
    assert len(pauses) == 3 and "in 0.0 s" in pauses[0] and "in 0.2 s" in pauses[1]
    mark.unlink()
    deadline = time.monotonic() + 10
    while True:
        try:
            if healthz() == 200:
                break
        except urllib.error.HTTPError:
            pass
        assert time.monotonic() < deadline, "no worker serving again"
        time.sleep(0.05)
    assert gw.request("GET", "/json")[0] == 200


def test_serving_on_waits_for_a_worker_slow_to_start_and_the_wait_is_said(upstream,
                                                                            gateway_factory):
    """A worker that takes longer than the master's 5 s to be ready: the master says that no
    worker is ready yet, and "serving on" once one is (it said "serving on" at 5 s, while
    /healthz answered 503 and the port had nobody to answer)."""
    metrics_port = free_port()
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "all", "paths": ["/*"]},
        {"name": "slow", "paths": ["/slow-to-build"], "plugins": {"explode": {"build_delay": 6.5}}}
    ])]}, env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}, plugins=["faulty_plugin"],
        start=False).launch()
    gw.wait_for_log("serving on", timeout=20)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
        assert r.status == 200  # when it says so, a worker serves
    said = [i for i, line in enumerate(gw.log) if "no worker is ready after" in line]
    serving = [i for i, line in enumerate(gw.log) if "serving on" in line]
    assert said and said[0] < serving[0], "".join(gw.log)
    assert "with 1 workers" in gw.log[serving[0]]
    assert gw.request("GET", "/json")[0] == 200


def test_a_log_rotation_while_a_worker_starts_does_not_end_it(upstream, gateway_factory,
                                                               tmp_path):
    """SIGUSR1 (logrotate's postrotate) reached a replacement worker before it had a
    handler, and its default action ended it."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]},
                         env={"FASTGW_ACCESS_LOG": str(tmp_path / "access.log"),
                              "FASTGW_WORKERS": "1"})
    [victim] = gw.worker_pids()
    start = len(gw.log)
    os.kill(victim, signal.SIGKILL)
    gw.wait_for_log("starting a new one", start=start)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # the stimulus: rotations all through its start
        gw.signal(signal.SIGUSR1)
        time.sleep(0.01)
    assert gw.request("GET", "/json")[0] == 200
    assert not any("exited with status -10" in line for line in gw.log[start:]), gw.log[start:]
