"""The benchmark: fastgw against real peers, under wrk, on this machine.

    make bench                        # or: python bench/run.py [--duration 5] [--rounds 3]

Every proxy under test runs alone on CPU 1; wrk and the upstream (nginx, one worker,
serving a ~430-byte JSON document) share CPU 0. The client side saturates first on a
2-core machine, so the figure that compares proxies is the CPU time the proxy's
process tree spent per request (utime + stime from /proc), next to req/s and latency.
Capacity per core is 1e6 / (µs per request). Rounds are interleaved (A B C, A B C, ...)
and medians reported; each ratio is also given round by round (two figures of one round
were measured within a minute of each other), which shows how far a run's noise reaches.
Before measuring, each configuration must answer 200 with the upstream's body for a valid
token and 401 without one; a run with any non-2xx answer or socket error is reported as
failed.

Scenario 10 puts TLS in front: fastgw and HAProxy terminating it on the same ECDSA P-256
certificate, over keep-alive connections and with a new connection for every request
(`Connection: close`; wrk resumes the TLS session on each new connection, as a returning
client does: a TLS 1.3 PSK handshake with a fresh ECDHE exchange, no certificate sent).

Scenario 11 is an RS256 credential whose key comes from a key set (the upstream nginx serves
it at /certs; fastgw's master fetches it once): a hot token, and all-miss (2,000 tokens cycled
through a cache of 1,000), beside HAProxy verifying the same tokens with the PEM key.

Scenario 12 is the hot token again, on a second fastgw with 100,000 revocation entries
loaded (half by jti, half by sub; none of them the token's): what checking them costs a hit.

The bytecodes/request column (fastgw's rows in scenarios 1, 2 and 4, and the bare relay's) is
counted after the timed runs, in a process of its own for each configuration, started with
bench/bytecodes.py's counting hook (which slows it, so it is never the one timed) and sent
exactly 3,000 requests over 8 keep-alive connections after 2,000 to warm up; the upstream is the
same nginx. `--no-bytecodes` leaves it out.

Output: a Markdown table on stdout, the same as JSON in bench/results/latest.json, and a
chart (bench/results/latest.png) when matplotlib is installed (`pip install .[bench]`).
`--only` runs a subset (and starts only the processes it needs); its results go to
bench/results/only-<scenarios>.json and .png instead.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import platform
import re
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

import bytecodes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROXY_CPU, LOAD_CPU = "1", "0"
SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")

JSON_DOC = json.dumps({"slideshow": {
    "author": "Yours Truly", "date": "date of publication", "title": "Sample Slide Show",
    "slides": [{"title": "Wake up to WonderWidgets!", "type": "all"},
               {"items": ["Why <em>WonderWidgets</em> are great",
                          "Who <em>buys</em> WonderWidgets"],
                "title": "Overview", "type": "all"},
               {"title": "Ordering", "type": "all", "items": ["Online", "By phone"]}]}},
    indent=1)


free_port = bytecodes.free_port


def tree_cpu_seconds(root_pid: int) -> float:
    """utime + stime of a process and all its descendants, in seconds."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += int(stats[pid][11]) + int(stats[pid][12])
        todo.extend(children.get(pid, ()))
    return total / CLK_TCK


def tree_rss_mb(root_pid: int) -> float:
    pids = [root_pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(root_pid)], capture_output=True, text=True).stdout.split()]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


# ---------------------------------------------------------------- the processes

@dataclass
class Proc:
    name: str
    argv: list[str]
    port: int
    cpu: str = PROXY_CPU
    env: dict = field(default_factory=dict)
    ready_log: str | None = None
    popen: subprocess.Popen | None = None
    started_in: float = 0.0
    owner: "Proc | None" = None  # another listener of that process (its CPU is measured)
    scheme: str = "http"
    ca: Path | None = None  # for https: the CA that signed its certificate

    def start(self, workdir: Path) -> "Proc":
        log = open(workdir / f"{self.name}.log", "w")
        began = time.monotonic()
        self.popen = subprocess.Popen(["taskset", "-c", self.cpu, *self.argv], stdout=log,
                                      stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                      cwd=workdir, start_new_session=True)
        bytecodes.wait_ready(self.port, self.popen, 120)
        self.started_in = time.monotonic() - began
        return self

    @property
    def pid(self) -> int:
        return (self.owner or self).popen.pid

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            bytecodes.stop(self.popen)


def nginx_upstream(workdir: Path, port: int) -> Proc:
    (workdir / "big.json").write_text(json.dumps({"data": "x" * 102_380}))
    conf = workdir / "upstream-nginx.conf"
    conf.write_text(f"""
user root; worker_processes 1; daemon off; pid {workdir}/upstream.pid;
error_log {workdir}/upstream-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 75;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp;
  fastcgi_temp_path {workdir}/tmp; uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /json {{ default_type application/json; return 200 '{JSON_DOC}'; }}
    location = /big {{ default_type application/json; alias {workdir}/big.json; }}
    location = /certs {{ default_type application/json; alias {workdir}/jwks.json; }}
  }}
}}""")
    (workdir / "tmp").mkdir(exist_ok=True)
    return Proc("upstream", ["nginx", "-c", str(conf)], port, cpu=LOAD_CPU)


def nginx_proxy(workdir: Path, port: int, upstream: int) -> Proc:
    conf = workdir / "nginx-proxy.conf"
    conf.write_text(f"""
user root; worker_processes 1; daemon off; pid {workdir}/nginx-proxy.pid;
error_log {workdir}/nginx-proxy-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp;
  fastcgi_temp_path {workdir}/tmp; uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 320; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_buffering on; }}
  }}
}}""")
    return Proc("nginx", ["nginx", "-c", str(conf)], port)


def haproxy(workdir: Path, port: int, jwt_port: int, upstream: int,
            tls: tuple[int, Path] | None = None,
            rs256: tuple[int, Path] | None = None) -> Proc:
    """`tls` is (port, PEM file holding the certificate and its key); `rs256` is (port,
    PEM public key) for a frontend verifying RS256 tokens (HAProxy reads no key set)."""
    conf = workdir / "haproxy.cfg"
    tls_frontend = "" if tls is None else f"""frontend tls
  bind 127.0.0.1:{tls[0]} ssl crt {tls[1]} alpn http/1.1 ssl-min-ver TLSv1.2
  default_backend up
"""
    if rs256 is not None:
        tls_frontend += f"""frontend jwt_rs256
  bind 127.0.0.1:{rs256[0]}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{rs256[1]}") -m int 1 }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request set-path %[path,regsub(^/jwt/,/)]
  default_backend up
"""
    conf.write_text(f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend plain
  bind 127.0.0.1:{port}
  default_backend up
frontend jwt
  bind 127.0.0.1:{jwt_port}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str HS256 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{SECRET}") -m int 1 }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request set-path %[path,regsub(^/jwt/,/)]
  default_backend up
{tls_frontend}backend up
  http-reuse always
  server s1 127.0.0.1:{upstream}
""")
    return Proc("haproxy", ["haproxy", "-db", "-f", str(conf)], port)


def fastgw(workdir: Path, name: str, port: int, config: dict, cache_size: int = 65536,
           tls: tuple[int, Path, Path] | None = None, revocations: int = 0) -> Proc:
    """`tls` is (port, certificate file, key file) for an HTTPS listener; `revocations`
    the number of revocation entries loaded (half by jti, half by sub, none matching)."""
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    env = {"FASTGW_CONFIG": str(path), "FASTGW_LISTEN": f"127.0.0.1:{port}",
           "FASTGW_WORKERS": "1", "FASTGW_METRICS_LISTEN": "off",
           "FASTGW_JWT_CACHE_SIZE": str(cache_size), "FASTGW_LOG_LEVEL": "warning",
           "FASTGW_REVOCATIONS": str(workdir / f"{name}-revocations.json")}
    if revocations:
        expires = time.time() + 86400
        Path(env["FASTGW_REVOCATIONS"]).write_text(json.dumps({"revocations": [
            {"id": f"r{i}", "expires": expires,
             **({"jti": f"stolen-{i}"} if i % 2 else {"sub": f"gone-{i}", "issued_before": 1})}
            for i in range(revocations)]}))
    if tls is not None:
        env.update(FASTGW_TLS_LISTEN=f"127.0.0.1:{tls[0]}", FASTGW_TLS_CERT=str(tls[1]),
                   FASTGW_TLS_KEY=str(tls[2]))
    return Proc(name, [sys.executable, "-m", "fastgw", "serve"], port, env=env)


# The yardstick: a bare relay on fastgw's own stack (uvloop, httptools, PyJWT behind an
# LRU), kept beside the repository, not in it; its rows are left out when it is not there.
BARE_RELAY = HERE.parent.parent / "shared" / "perf" / "bare_relay.py"
BARE_RELAY_SECRET = "perf-secret-0123456789abcdef-0123456789"  # the one it verifies with


def bare_relay(name: str, port: int, upstream: int, jwt: bool) -> Proc:
    return Proc(name, [sys.executable, str(BARE_RELAY), str(port), *(() if jwt else ("nojwt",))],
                port, env={"BARE_RELAY_UPSTREAM": str(upstream)})


def naive(workdir: Path, port: int, upstream: int) -> Proc:
    return Proc("naive", [sys.executable, str(HERE / "naive_gateway.py"), str(port),
                          f"http://127.0.0.1:{upstream}", SECRET], port)


# ---------------------------------------------------------------- configurations

def pem_pair(key):
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def tls_files(workdir: Path) -> dict[str, Path]:
    """A CA and an ECDSA P-256 certificate it signed for 127.0.0.1: ca, cert, key, and
    both in one file for HAProxy."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgw bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca": ca.public_bytes(pem), "cert": cert.public_bytes(pem) + ca.public_bytes(pem),
             "key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())}
    files["both"] = files["cert"] + files["key"]
    paths = {}
    for name, data in files.items():
        paths[name] = workdir / f"tls-{name}.pem"
        paths[name].write_bytes(data)
    return paths


def signing_keys() -> dict[str, tuple[str, str]]:
    """algorithm -> (private, public) PEM pair, for the asymmetric credentials."""
    return {"RS256": pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ES256": pem_pair(ec.generate_private_key(ec.SECP256R1()))}


def gateway_config(upstream: int, keys: dict, routes: int = 0, consumers: int = 0) -> dict:
    # Idle upstream connections kept: enough for scenario 8's 1,000 clients (HAProxy keeps
    # every idle connection by default; with the default 320, fastgw would open and close
    # connections all through that scenario).
    up = {"url": f"http://127.0.0.1:{upstream}", "keepalive_pool": {"size": 1024}}
    url = up["url"]
    services = [
        {"name": "noauth", "path_prefix": "/noauth", "upstream": up,
         "routes": [{"name": "all", "paths": ["/*"]}]},
        {"name": "jwt", "path_prefix": "/jwt", "upstream": up,
         "routes": [{"name": "all", "paths": ["/*"], "plugins": {"jwt-auth": {}}}]},
        {"name": "keyset", "path_prefix": "/keyset", "upstream": up,
         "routes": [{"name": "all", "paths": ["/*"],
                     "plugins": {"jwt-auth": {"key_claim_name": "iss"}}}]},
    ]
    for s in range(routes // 100):
        # the same node, so the same pool settings (a node has one pool)
        services.append({"name": f"many-{s}", "path_prefix": f"/many{s}", "upstream": up,
                         "routes": [{"name": f"r{r}", "paths": [f"/r{r}"],
                                     "plugins": {"jwt-auth": {}}} for r in range(100)]})
    people = [
        {"username": "hs", "credentials": [{"key": "hs", "secret": SECRET}]},
        {"username": "rs", "credentials": [{"key": "rs", "algorithm": "RS256",
                                            "public_key": keys["RS256"][1]}]},
        {"username": "es", "credentials": [{"key": "es", "algorithm": "ES256",
                                            "public_key": keys["ES256"][1]}]},
        # the RS256 key again, published as a key set by the upstream nginx (/certs)
        {"username": "idp", "credentials": [{"key": KEY_SET_ISSUER, "issuer": KEY_SET_ISSUER,
                                             "jwks_uri": f"{url}/certs"}]},
    ]
    people += [{"username": f"user{i}", "credentials": [{"key": f"user{i}-key",
                                                         "secret": f"secret-{i:08d}-padding"}]}
               for i in range(consumers)]
    return {"services": services, "consumers": people}


def write_tokens(workdir: Path, name: str, count: int, alg: str, keys: dict,
                 secret: str = SECRET) -> Path:
    exp = int(time.time()) + 7 * 86400
    kid = {"HS256": "hs", "RS256": "rs", "ES256": "es"}[alg]
    key = secret if alg == "HS256" else keys[alg][0]
    path = workdir / f"tokens-{name}.txt"
    with open(path, "w") as f:
        for i in range(count):
            f.write(pyjwt.encode({"key": kid, "exp": exp, "n": i}, key, algorithm=alg) + "\n")
    return path


KEY_SET_ISSUER = "https://idp.bench.example"


def write_key_set(workdir: Path, keys: dict) -> None:
    """The RS256 public key as the key set nginx serves at /certs (kid "rs")."""
    public = serialization.load_pem_public_key(keys["RS256"][1].encode())
    jwk = {**RSAAlgorithm.to_jwk(public, as_dict=True), "kid": "rs", "use": "sig",
           "alg": "RS256"}
    (workdir / "jwks.json").write_text(json.dumps({"keys": [jwk]}))


def write_key_set_tokens(workdir: Path, name: str, count: int, keys: dict) -> Path:
    """RS256 tokens as a provider issues them: kid in the header, the issuer in iss."""
    exp = int(time.time()) + 7 * 86400
    path = workdir / f"tokens-{name}.txt"
    with open(path, "w") as f:
        for i in range(count):
            f.write(pyjwt.encode({"iss": KEY_SET_ISSUER, "exp": exp, "n": i}, keys["RS256"][0],
                                 algorithm="RS256", headers={"kid": "rs"}) + "\n")
    return path


# ---------------------------------------------------------------- runs

@dataclass
class Case:
    scenario: str
    label: str
    proc: Proc
    path: str
    tokens: Path | None = None
    method: str = "GET"
    body_bytes: int = 0
    connections: int = 50
    close: bool = False  # Connection: close, a new connection for every request
    results: list = field(default_factory=list)
    bytecodes: int | None = None  # per request, counted apart (count_bytecodes)

    @property
    def url(self) -> str:
        return f"{self.proc.scheme}://127.0.0.1:{self.proc.port}{self.path}"


def check(case: Case) -> None:
    """200 with the upstream's body for a valid token, 401 without one (where auth applies)."""
    url = case.url
    context = ssl.create_default_context(cafile=str(case.proc.ca)) if case.proc.ca else None
    headers = {"Connection": "close"} if case.close else {}
    if case.tokens:
        headers["Authorization"] = "Bearer " + case.tokens.read_text().split("\n", 1)[0]
    data = b"x" * case.body_bytes if case.body_bytes else None
    req = urllib.request.Request(url, data=data, headers=headers, method=case.method)
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        body = resp.read()
        if resp.status != 200 or not (body == JSON_DOC.encode() or len(body) > 100_000):
            raise RuntimeError(f"{case.label}: unexpected answer {resp.status} {body[:80]!r}")
    if case.tokens:
        for bad in ({}, {"Authorization": "Bearer wrong.token.here"}):
            try:
                urllib.request.urlopen(urllib.request.Request(url, headers=bad), timeout=10)
                raise RuntimeError(f"{case.label}: accepted a request without a valid token")
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    raise RuntimeError(f"{case.label}: answered {exc.code} to a bad token")


def run_wrk(case: Case, duration: float, measure: bool = True) -> dict | None:
    env = {**os.environ, "BENCH_TOKENS": str(case.tokens or ""), "BENCH_METHOD": case.method,
           "BENCH_BODY_BYTES": str(case.body_bytes),
           "BENCH_CONNECTION_CLOSE": "1" if case.close else ""}
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{case.connections}",
            f"-d{duration:g}s", "--timeout", "10s", "-s", str(HERE / "wrk" / "report.lua"),
            case.url]
    cpu_before = tree_cpu_seconds(case.proc.pid)
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 60)
    cpu = tree_cpu_seconds(case.proc.pid) - cpu_before
    if not measure:
        return None
    match = re.search(r"BENCH_JSON (\{.*\})", out.stdout)
    if not match:
        raise RuntimeError(f"wrk said: {out.stdout}{out.stderr}")
    r = json.loads(match.group(1))
    r["failed"] = bool(r["non2xx"] or r["socket_errors"])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["cpu_us_per_req"] = cpu * 1e6 / max(r["requests"], 1)
    r["rss_mb"] = tree_rss_mb(case.proc.pid)
    return r


COUNTED = ("1", "2", "4")  # scenarios whose bytecodes per request are counted


def count_bytecodes(cases: list[Case], counters: dict, workdir: Path) -> None:
    """Sets case.bytecodes for the cases whose process has a counter (id(proc) -> a function
    making a Proc like it on a given port) and whose scenario is COUNTED: one counting process
    per configuration, serving each of its scenarios in turn (bench/bytecodes.py)."""
    groups: dict[int, list[Case]] = {}
    for case in cases:
        if id(case.proc) in counters and case.scenario.split()[0] in COUNTED:
            groups.setdefault(id(case.proc), []).append(case)
    n = 3000
    for key, group in groups.items():
        port = free_port()
        proc = counters[key](port)
        plans, warm = {}, bytecodes.WARM
        for case in group:
            tokens = case.tokens.read_text().split() if case.tokens else []
            if len(tokens) >= warm + n:  # all-miss: counted on tokens never seen before
                plans[case.scenario] = (case.path, tokens[:warm], tokens[warm:])
            else:
                plans[case.scenario] = (case.path, tokens, tokens)
        try:
            results = bytecodes.measure(["taskset", "-c", proc.cpu, *proc.argv],
                                        {**os.environ, **proc.env}, port, plans, n,
                                        body=JSON_DOC.encode(),
                                        log=str(workdir / f"{proc.name}.log"))
        except RuntimeError as exc:
            print(f"bench: no bytecodes for {group[0].label}: {exc}", file=sys.stderr)
            continue
        for case in group:
            r = results[case.scenario]
            if r["good"] == r["requests"]:
                case.bytecodes = round(r["bytecodes"] / r["requests"])
            else:
                print(f"bench: {case.label} in {case.scenario}: {r['good']}/{r['requests']} "
                      "answered 200 while counting bytecodes; left out", file=sys.stderr)


def summarise(case: Case) -> dict:
    rs = case.results
    med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
    cpu = med("cpu_us_per_req")
    return {"scenario": case.scenario, "config": case.label, "rounds": len(rs),
            "failed": any(r["failed"] for r in rs), "rps": round(med("rps")),
            "cpu_us_per_req": round(cpu, 2), "bytecodes_per_req": case.bytecodes,
            "each_round": {"cpu_us_per_req": [round(r["cpu_us_per_req"], 2) for r in rs],
                           "p99_ms": [round(r["p99_us"] / 1000, 2) for r in rs]},
            "capacity_per_core": round(1e6 / cpu) if cpu else 0,
            "p50_ms": round(med("p50_us") / 1000, 2), "p99_ms": round(med("p99_us") / 1000, 2),
            "rss_mb": round(max(r["rss_mb"] for r in rs), 1),
            "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs)}


def main() -> int:
    parser = argparse.ArgumentParser(description="fastgw benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated scenario numbers")
    parser.add_argument("--no-bytecodes", action="store_true",
                        help="leave out the bytecodes/request column (counted after the runs)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "haproxy", "taskset"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    workdir = Path(tempfile.mkdtemp(prefix="fastgw-bench-"))
    keys = signing_keys()
    write_key_set(workdir, keys)
    up_port = free_port()
    upstream = nginx_upstream(workdir, up_port)
    tls = tls_files(workdir)
    gw_tls_port, ha_tls_port = free_port(), free_port()
    gw = fastgw(workdir, "fastgw", free_port(), gateway_config(up_port, keys),
                tls=(gw_tls_port, tls["cert"], tls["key"]))
    big = fastgw(workdir, "fastgw-big", free_port(),
                 gateway_config(up_port, keys, routes=10_000, consumers=100_000))
    # all-miss with RS256: 2,000 tokens cycled through a cache of 1,000
    gw_miss = fastgw(workdir, "fastgw-small-cache", free_port(), gateway_config(up_port, keys),
                     cache_size=1000)
    gw_revoked = fastgw(workdir, "fastgw-revocations", free_port(),
                        gateway_config(up_port, keys), revocations=100_000)
    ha_port, ha_jwt_port, ha_rs_port = free_port(), free_port(), free_port()
    rs_public = workdir / "rs256-public.pem"
    rs_public.write_text(keys["RS256"][1])
    ha = haproxy(workdir, ha_port, ha_jwt_port, up_port, tls=(ha_tls_port, tls["both"]),
                 rs256=(ha_rs_port, rs_public))
    ng = nginx_proxy(workdir, free_port(), up_port)
    nv = naive(workdir, free_port(), up_port)
    procs = [upstream, gw, big, gw_miss, gw_revoked, ha, ng, nv]
    bare = BARE_RELAY.is_file()
    if bare:
        bare_jwt = bare_relay("bare-relay", free_port(), up_port, jwt=True)
        bare_plain = bare_relay("bare-relay-nojwt", free_port(), up_port, jwt=False)
        procs += [bare_jwt, bare_plain]
    else:
        print(f"bench: no bare relay rows ({BARE_RELAY} is not there)", file=sys.stderr)
    # Makers of a process like a measured one, for counting its bytecodes apart.
    counters = {id(gw): lambda port: fastgw(workdir, "fastgw-count", port,
                                            gateway_config(up_port, keys))}
    if bare:
        counters[id(bare_jwt)] = lambda port: bare_relay("bare-relay-count", port, up_port, True)
        counters[id(bare_plain)] = lambda port: bare_relay("bare-relay-nojwt-count", port,
                                                           up_port, False)
    ha_jwt = Proc("haproxy-jwt", [], ha_jwt_port, owner=ha)
    ha_rs = Proc("haproxy-jwt-rs256", [], ha_rs_port, owner=ha)
    gw_tls = Proc("fastgw-tls", [], gw_tls_port, owner=gw, scheme="https", ca=tls["ca"])
    ha_tls = Proc("haproxy-tls", [], ha_tls_port, owner=ha, scheme="https", ca=tls["ca"])

    hot = write_tokens(workdir, "hot", 1, "HS256", keys)
    rot = write_tokens(workdir, "10k", 10_000, "HS256", keys)
    miss = write_tokens(workdir, "miss", 100_000, "HS256", keys)  # > the 65,536 cached
    rs_hot = write_tokens(workdir, "rs", 1, "RS256", keys)
    es_hot = write_tokens(workdir, "es", 1, "ES256", keys)
    bare_hot = write_tokens(workdir, "bare", 1, "HS256", keys, secret=BARE_RELAY_SECRET)
    ks_hot = write_key_set_tokens(workdir, "keyset-hot", 1, keys)
    ks_miss = write_key_set_tokens(workdir, "keyset-miss", 2000, keys)

    cases: list[Case] = []
    started: list[Proc] = []
    try:
        direct = upstream
        S = {
            "1 no-auth": [("fastgw", gw, "/noauth/json"), ("haproxy", ha, "/json"),
                          ("nginx", ng, "/json"), ("naive aiohttp", nv, "/noauth/json"),
                          ("direct", direct, "/json")],
            "2 jwt hot": [("fastgw", gw, "/jwt/json", hot), ("haproxy+jwt_verify", ha_jwt,
                                                              "/jwt/json", hot),
                          ("naive aiohttp+PyJWT", nv, "/jwt/json", hot)],
            "3 jwt 10k tokens": [("fastgw", gw, "/jwt/json", rot),
                                 ("haproxy+jwt_verify", ha_jwt, "/jwt/json", rot)],
            "4 jwt all-miss": [("fastgw", gw, "/jwt/json", miss),
                               ("haproxy+jwt_verify", ha_jwt, "/jwt/json", miss)],
            "5 RS256/ES256 hot": [("fastgw RS256", gw, "/jwt/json", rs_hot),
                                  ("fastgw ES256", gw, "/jwt/json", es_hot)],
            "6 POST 1 KB": [("fastgw", gw, "/noauth/json", None, "POST", 1024),
                            ("haproxy", ha, "/json", None, "POST", 1024),
                            ("direct", direct, "/json", None, "POST", 1024)],
            "7 100 KB responses": [("fastgw", gw, "/noauth/big"), ("haproxy", ha, "/big"),
                                   ("direct", direct, "/big")],
            "8 1000 connections": [("fastgw", gw, "/jwt/json", hot, "GET", 0, 1000),
                                   ("haproxy+jwt_verify", ha_jwt, "/jwt/json", hot, "GET", 0,
                                    1000)],
            "9 10k routes, 100k consumers": [("fastgw", big, "/jwt/json", hot)],
            # The plain rows with a new connection each tell the handshake's own cost.
            "10 TLS": [("fastgw https", gw_tls, "/noauth/json"),
                       ("haproxy https", ha_tls, "/json"),
                       ("fastgw https, new connection each", gw_tls, "/noauth/json", None,
                        "GET", 0, 50, True),
                       ("haproxy https, new connection each", ha_tls, "/json", None, "GET", 0,
                        50, True),
                       ("fastgw http, new connection each", gw, "/noauth/json", None, "GET", 0,
                        50, True),
                       ("haproxy http, new connection each", ha, "/json", None, "GET", 0, 50,
                        True)],
            # Keys from an identity provider's key set (fetched once by fastgw's master);
            # HAProxy reads no key set: its row verifies the same tokens with the PEM key,
            # and has no cache, so every request is a full verification there.
            "11 RS256 key set": [("fastgw key set, hot", gw, "/keyset/json", ks_hot),
                                 ("fastgw key set, all-miss", gw_miss, "/keyset/json",
                                  ks_miss),
                                 ("haproxy+jwt_verify RS256 (PEM)", ha_rs, "/jwt/json",
                                  ks_miss)],
            # SPEC 9: what 100,000 revocation entries (none of them the token's) cost a hit
            "12 revocations": [("fastgw jwt hot, no entries", gw, "/jwt/json", hot),
                               ("fastgw jwt hot, 100,000 entries", gw_revoked, "/jwt/json",
                                hot)],
        }
        if bare:
            S["1 no-auth"].append(("bare relay", bare_plain, "/json"))
            S["2 jwt hot"].append(("bare relay+PyJWT LRU", bare_jwt, "/json", bare_hot))
        only = set(args.only.split(",")) if args.only else None
        for scenario, rows in S.items():
            if only and scenario.split()[0] not in only:
                continue
            for row in rows:
                label, proc, path, *rest = row
                tokens = rest[0] if rest else None
                method = rest[1] if len(rest) > 1 else "GET"
                body = rest[2] if len(rest) > 2 else 0
                conns = rest[3] if len(rest) > 3 else 50
                close = rest[4] if len(rest) > 4 else False
                cases.append(Case(scenario, label, proc, path, tokens, method, body, conns,
                                  close))
        needed = {id(upstream)} | {id(c.proc.owner or c.proc) for c in cases}
        for p in procs:
            if id(p) in needed:
                p.start(workdir)
                started.append(p)
        for case in cases:
            check(case)
        rss_before = {p.name: tree_rss_mb(p.pid) for p in started}
        for case in cases:  # warm-up: caches, pools, allocators
            run_wrk(case, min(2.0, args.duration), measure=False)
        for _ in range(args.rounds):
            for case in cases:
                case.results.append(run_wrk(case, args.duration))
                time.sleep(0.2)
        if not args.no_bytecodes:
            count_bytecodes(cases, counters, workdir)
    finally:
        for p in started:
            p.stop()

    rows = [summarise(c) for c in cases]
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "command": "python bench/run.py " + " ".join(sys.argv[1:]),
              "duration_s": args.duration, "rounds": args.rounds, "rows": rows,
              "startup_s": {name: round(p.started_in, 2) for name, p in (
                  ("fastgw", gw), ("fastgw (10k routes, 100k consumers)", big)) if p.popen},
              "rss_before_mb": rss_before, "ratios": ratios(rows),
              "ratios_each_round": ratios(rows, each_round=True)}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    name = "latest" if not args.only else "only-" + args.only.replace(",", "-")
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    chart(report, out / f"{name}.png")
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r["failed"] for r in rows) else 0


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def ratios(rows: list[dict], each_round: bool = False) -> dict:
    """The ratios of medians; with `each_round`, the ratio in each round instead (a list):
    rounds are interleaved, so one round's two figures were measured a minute apart."""
    def figure(scenario, config, key):
        for r in rows:
            if r["scenario"].split()[0] == scenario and r["config"] == config:
                return r["each_round"][key] if each_round else r[key]
        return None

    def cpu(scenario, config):
        return figure(scenario, config, "cpu_us_per_req")

    def p99(scenario, config):
        return figure(scenario, config, "p99_ms")

    def div(a, b):
        if not a or not b:
            return None
        if each_round:
            return [round(x / y, 2) if y else None for x, y in zip(a, b)]
        return round(a / b, 2)
    return {
        "jwt hot / haproxy+jwt_verify (target <= 1.15)": div(cpu("2", "fastgw"),
                                                             cpu("2", "haproxy+jwt_verify")),
        "no-auth / haproxy (target <= 1.3)": div(cpu("1", "fastgw"), cpu("1", "haproxy")),
        "jwt hot / bare relay+PyJWT LRU": div(cpu("2", "fastgw"), cpu("2", "bare relay+PyJWT LRU")),
        "no-auth / bare relay": div(cpu("1", "fastgw"), cpu("1", "bare relay")),
        "10k tokens / hot (target <= 1.1)": div(cpu("3", "fastgw"), cpu("2", "fastgw")),
        "all-miss / hot (target <= 1.6)": div(cpu("4", "fastgw"), cpu("2", "fastgw")),
        "naive / fastgw jwt (target >= 10)": div(cpu("2", "naive aiohttp+PyJWT"),
                                                  cpu("2", "fastgw")),
        "naive / fastgw no-auth (target >= 10)": div(cpu("1", "naive aiohttp"), cpu("1", "fastgw")),
        "p99 jwt hot / haproxy+jwt_verify (target <= 1.3)": div(p99("2", "fastgw"),
                                                               p99("2", "haproxy+jwt_verify")),
        "scenario 9 / scenario 2 (target <= 1.1)": div(cpu("9", "fastgw"), cpu("2", "fastgw")),
        "https / haproxy https": div(cpu("10", "fastgw https"), cpu("10", "haproxy https")),
        "https new connection each / haproxy's": div(
            cpu("10", "fastgw https, new connection each"),
            cpu("10", "haproxy https, new connection each")),
    }


def markdown(report: dict) -> str:
    lines = [f"fastgw benchmark, {report['date']}: {report['machine']}",
             f"`{report['command']}` — {report['rounds']} interleaved rounds of "
             f"{report['duration_s']:g} s, medians; proxy on CPU 1, wrk + upstream on CPU 0.", "",
             "| scenario | configuration | µs CPU / req | bytecodes / req | capacity / core | req/s "
             "| p50 ms | p99 ms | RSS MB | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        flag = " **FAILED**" if r["failed"] else ""
        count = r.get("bytecodes_per_req")
        count = "–" if count is None else f"{count:,}"
        lines.append(f"| {r['scenario']} | {r['config']}{flag} | {r['cpu_us_per_req']} | {count} | "
                     f"{r['capacity_per_core']:,} | {r['rps']:,} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['rss_mb']} | {r['errors']} |")
    lines += ["", "| ratio | value | in each round |", "| --- | ---: | ---: |"]
    each = report.get("ratios_each_round", {})
    lines += [f"| {k} | {v} | {', '.join(map(str, each.get(k) or ()))} |"
              for k, v in report["ratios"].items() if v is not None]
    lines += ["", "Start-up: " + ", ".join(f"{k} {v} s" for k, v in report["startup_s"].items())]
    return "\n".join(lines)


def chart(report: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: matplotlib is not installed; pip install '.[bench]')")
        return
    rows = report["rows"]
    labels = [f"{r['scenario'].split(' ', 1)[0]}: {r['config']}" for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 0.38 * len(rows) + 1.5), sharey=True)
    colours = ["tab:red" if r["config"].startswith("fastgw") else "tab:grey" for r in rows]
    a.barh(labels, [r["capacity_per_core"] for r in rows], color=colours)
    a.set_title("capacity per core (requests/s per CPU second)")
    a.invert_yaxis()
    b.barh(labels, [r["p99_ms"] for r in rows], color=colours)
    b.set_title("p99 latency (ms, log scale)")
    b.set_xscale("log")
    fig.suptitle(f"fastgw benchmark — {report['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    raise SystemExit(main())
