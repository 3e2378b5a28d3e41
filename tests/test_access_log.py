"""The access log: a line per request, no query (no tokens), reopened on SIGUSR1."""

from __future__ import annotations

import signal
import time

import jwt as pyjwt

from conftest import service

SECRET = "access-log-secret-" + "0123456789abcdef" * 3


def wait_for_lines(path, count, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the log is flushed every 0.1 s by design
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} lines in {path}")


def test_lines_appear_and_survive_rotation(upstream, gateway_factory, tmp_path):
    log = tmp_path / "access.log"
    gw = gateway_factory({
        "services": [service(upstream.url, [{"name": "r", "paths": ["/*"],
                                             "plugins": {"jwt-auth": {}}}], name="api")],
        "consumers": [{"username": "jack", "credentials": [{"key": "k", "secret": SECRET}]}],
    }, env={"FASTGW_ACCESS_LOG": str(log), "FASTGW_WORKERS": "2"})
    token = pyjwt.encode({"key": "k"}, SECRET)
    assert gw.request("GET", f"/a/b?jwt={token}")[0] == 200
    assert gw.request("GET", "/denied")[0] == 401
    # two workers flush their own batches, so the lines may come in either order
    lines = {line.split()[3]: line.split() for line in wait_for_lines(log, 2)}
    fields = lines["/a/b"]
    assert fields[1] == "127.0.0.1" and fields[2] == "GET"
    assert fields[4] == "200" and int(fields[5]) > 0
    assert fields[8:] == ["api", "r", "jack"]
    assert token not in log.read_text()
    assert lines["/denied"][4] == "401" and lines["/denied"][10] == "-"
    rotated = tmp_path / "access.log.1"
    log.rename(rotated)
    gw.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not log.exists():  # each worker reopens the path on the signal
        assert gw.request("GET", "/after-rotation")[0] == 401
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(4):
        gw.request("GET", "/after-rotation")
    assert "/after-rotation" in wait_for_lines(log, 1)[-1]
    assert len(rotated.read_text().splitlines()) >= 2


def test_unwritable_access_log_is_exit_2(tmp_path):
    import os
    import subprocess
    import sys
    config = tmp_path / "fastgw.yaml"
    config.write_text("services: []\n")
    result = subprocess.run([sys.executable, "-m", "fastgw", "serve"], capture_output=True,
                            text=True, timeout=20,
                            env={**os.environ, "FASTGW_ACCESS_LOG": "/nonexistent/dir/a.log",
                                 "FASTGW_CONFIG": str(config)})
    assert result.returncode == 2
    assert result.stderr.startswith("fastgw: FASTGW_ACCESS_LOG: cannot open")


def test_an_access_log_that_cannot_be_written_drops_lines_and_time_outs_still_run(
        upstream, gateway_factory):
    """/dev/full: every write fails (ENOSPC), as on a full disk. The lines are dropped
    with one log line; the 408 after a stalled head still comes (a failed write stopped
    the worker's clock for good: no time-out ever again)."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}])]},
                         env={"FASTGW_ACCESS_LOG": "/dev/full", "FASTGW_WORKERS": "1",
                              "FASTGW_HEADER_TIMEOUT": "1"})
    for _ in range(3):
        assert gw.request("GET", "/a")[0] == 200
    gw.wait_for_log("access log: cannot write to /dev/full")
    with gw.raw(timeout=10) as conn:
        started = time.monotonic()
        conn.send(b"GET /a HTTP/1.1\r\nHost: a\r\n")  # and never the rest
        status, _, _ = conn.response()
        assert status == 408 and time.monotonic() - started < 5
    assert gw.request("GET", "/a")[0] == 200
    assert sum("access log: cannot write" in line for line in gw.log) == 1


def test_a_stdout_nobody_reads_never_stops_serving(upstream, gateway_factory):
    """FASTGW_ACCESS_LOG=stdout into a pipe whose reader has stopped (a stalled `| tee`, a
    logging driver): the writer thread waits on it, requests do not (after a pipe's worth
    of lines, about 200 requests, every request waited with the worker)."""
    import http.client
    import subprocess
    import sys
    import threading
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}])]},
                         env={"FASTGW_ACCESS_LOG": "stdout"}, start=False)
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve"], env=gw.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=gw.config_path.parent)  # its stdout: never read
    try:
        ready = threading.Event()

        def read_errors():
            for line in proc.stderr:
                if "serving on" in line:
                    ready.set()
        threading.Thread(target=read_errors, daemon=True).start()
        assert ready.wait(15)
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        long_path = "/" + "x" * 2000  # a line of 2 KiB: the pipe is full after 32 of them
        for _ in range(300):
            conn.request("GET", long_path)
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
        conn.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_a_worker_whose_log_cannot_be_opened_serves_and_opens_it_on_sigusr1(
        upstream, gateway_factory, tmp_path):
    """Its folder gone when a worker starts (the master checked the file at start): the
    worker serves without the log (it exited, and was started again without end), and
    the next SIGUSR1 opens it."""
    import os
    import signal as signals
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "access.log"
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}])]},
                         env={"FASTGW_ACCESS_LOG": str(log)})
    log.unlink()
    folder.rmdir()
    start = len(gw.log)
    os.kill(gw.worker_pids()[0], signals.SIGKILL)
    gw.wait_for_log("lines are dropped until a SIGUSR1 opens it", start=start)
    assert gw.request("GET", "/served-anyway")[0] == 200
    folder.mkdir()
    gw.signal(signals.SIGUSR1)
    deadline = time.monotonic() + 5
    while not (log.exists() and "/after" in log.read_text()):
        assert gw.request("GET", "/after")[0] == 200
        assert time.monotonic() < deadline, "the log was not opened on SIGUSR1"
        time.sleep(0.1)
    assert not any("before it was ready" in line for line in gw.log)


def test_a_gateway_started_with_stdout_closed_serves(upstream, gateway_factory):
    """`fastgw serve >&-`: its fd 1 went to the first socket or pipe made, and libuv
    aborted (uv__close: Assertion `fd > STDERR_FILENO'). It serves, logs to stderr and
    drops the access log's lines to stdout."""
    import signal
    import subprocess
    import sys
    import threading
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "r", "paths": ["/*"]}])]},
                         env={"FASTGW_ACCESS_LOG": "stdout"}, start=False)
    proc = subprocess.Popen(["sh", "-c", 'exec "$0" -m fastgw serve >&- <&-', sys.executable],
                            env=gw.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=gw.config_path.parent)
    try:
        ready, lines = threading.Event(), []

        def read_errors():
            for line in proc.stderr:
                lines.append(line)
                if "serving on" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=read_errors, daemon=True).start()
        assert ready.wait(15) and proc.poll() is None, "".join(lines)
        for _ in range(3):
            assert gw.request("GET", "/a")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, "".join(lines)
    finally:
        proc.kill()
        proc.wait(10)
