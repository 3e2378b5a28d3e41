"""Commands: serve (the default), check, token, secret, config push/pull, revoke,
revocations."""

from __future__ import annotations

import signal

# First of all, before the imports that take most of a start's first 200 ms: the signals the
# master handles are blocked, as their default action would end it before it has its
# handlers (SIGINT: with a traceback). One sent meanwhile waits, pending, until Master.run has
# set them and unblocks them (workers.MASTER_SIGNALS, the same four: not imported from there,
# which would cost those very imports); every other command unblocks them at once (main).
_INHERITED_MASK = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT,
                                                             signal.SIGHUP, signal.SIGUSR1))

import argparse  # noqa: E402 (after the signal mask above)
import asyncio  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import orjson  # noqa: E402

from . import __version__, jwt  # noqa: E402
from .config import ConfigError, load_file  # noqa: E402
from .plugins import issue_token, issues_tokens  # noqa: E402
from .settings import SettingError, Settings, add_flags  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    if args.run is not _serve:  # (the master unblocks them once it handles them)
        signal.pthread_sigmask(signal.SIG_SETMASK, _INHERITED_MASK)
    try:
        return args.run(args)
    except SettingError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="A fast API gateway with "
                                     "JWT authentication.")
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (the default)")
    add_flags(serve)
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file", nargs="?", help="default: $FASTGW_CONFIG or ./fastgw.yaml")
    check.set_defaults(run=_check)

    token = commands.add_parser("token", help="print a signed token for a consumer")
    token.add_argument("--consumer", required=True, metavar="NAME")
    token.add_argument("--credential", metavar="ID",
                       help="default: the consumer's first that tokens are issued for")
    when = token.add_mutually_exclusive_group()
    when.add_argument("--expires", metavar="TIME", help="ISO 8601 time or unix seconds")
    when.add_argument("--ttl", type=int, metavar="SECONDS")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                       help="extra claim; a JSON value keeps its type (age=18 is a number)")
    token.add_argument("--config", metavar="FILE", help="default: $FASTGW_CONFIG")
    token.set_defaults(run=_token)

    secret = commands.add_parser("secret", help="print a new random secret")
    secret.set_defaults(run=_secret)

    config = commands.add_parser("config", help="move a configuration into or out of etcd")
    actions = config.add_subparsers(dest="action", required=True)
    push = actions.add_parser("push", help="validate FILE and make it etcd's configuration, "
                                           "in one transaction")
    push.add_argument("file")
    add_flags(push, only=("etcd", "etcd_prefix"))
    push.set_defaults(run=_config_push)
    pull = actions.add_parser("pull", help="print etcd's configuration as YAML")
    add_flags(pull, only=("etcd", "etcd_prefix"))
    pull.set_defaults(run=_config_pull)
    _revocation_commands(commands)
    return parser


def _serve(args) -> int:
    from .workers import serve
    _open_standard_fds()
    settings = Settings.load(flags=vars(args))
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    return serve(settings)


def _open_standard_fds() -> None:
    """fds 0, 1 and 2 open, on /dev/null where closed (`fastgw serve >&-`): else the next
    socket or pipe takes the number, and libuv, which closes no fd below 3, aborts
    (uv__close's assertion). Logging goes to stderr; an access log to stdout is dropped."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # (the lowest free: fd itself)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:  # Python found fd 1 closed at start
        sys.stdout = open(1, "w", buffering=1, closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", buffering=1, closefd=False)


def _check(args) -> int:
    path = args.file or Settings.load().config
    try:
        conf = load_file(path)
    except ConfigError as exc:
        _print_errors(path, exc)
        return 1
    services = conf["services"]
    routes = sum(len(s["routes"]) for s in services)
    print(f"{path}: OK ({len(services)} services, {routes} routes, "
          f"{len(conf['consumers'])} consumers)")
    return 0


def _print_errors(path: str, exc: ConfigError) -> None:
    for where, message in exc.errors:
        print(f"{path}: {where}: {message}", file=sys.stderr)


def _token(args) -> int:
    path = args.config or Settings.load().config
    try:
        conf = load_file(path)
        claims = dict(_claim(text) for text in args.claim)
        expires = _time(args.expires) if args.expires is not None else None
        if expires is not None and int(expires) <= int(time.time()):  # as the admin API
            raise ValueError(f"--expires {args.expires!r}: in the past, so the token would be "
                             "expired as it is issued")
    except ConfigError as exc:
        print(f"fastgw: {path}: {exc.first_line()}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    consumer = next((c for c in conf["consumers"] if c["username"] == args.consumer), None)
    if consumer is None:
        print(f"fastgw: no consumer named {args.consumer!r} in {path}", file=sys.stderr)
        return 1
    if args.credential is None:  # the first credential of a type that issues tokens
        creds = [c for c in consumer["credentials"] if issues_tokens(c)]
    else:
        creds = [c for c in consumer["credentials"] if c["id"] == args.credential]
    if not creds:
        which = (f"credential {args.credential!r}" if args.credential
                 else "credential that tokens are issued for")
        print(f"fastgw: consumer {args.consumer!r} has no {which}", file=sys.stderr)
        return 1
    try:
        print(issue_token(creds[0], claims, args.ttl, expires))
    except ValueError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1
    return 0


def _claim(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--claim {text!r}: expected NAME=VALUE")
    try:
        orjson.loads(value)  # JSON as the admin API takes it (json.loads would take NaN)
    except orjson.JSONDecodeError:
        return name, value
    return name, json.loads(value)  # its integers whole: orjson makes one above 2^64 a float


def _time(text: str, flag: str = "--expires") -> float:
    """Unix seconds, or an ISO 8601 time (UTC when it names no zone), from 1970 to 9999."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{flag} {text!r}: not an ISO 8601 time or unix seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp()
    if not jwt.is_time(seconds):
        raise ValueError(f"{flag} {text!r}: not a time from 1970 to 9999")
    return seconds


def _secret(args) -> int:
    print(jwt.new_secret())
    return 0


def _etcd_settings(args) -> Settings:
    settings = Settings.load(flags=vars(args))
    if not settings.etcd:
        raise SettingError("FASTGW_ETCD (or --etcd) must name the etcd endpoints")
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="fastgw: %(message)s")
    return settings


def _config_push(args) -> int:
    from .config import etcd
    from .config.sources import Conflict, TooLarge, Unavailable
    settings = _etcd_settings(args)
    try:
        conf = load_file(args.file)
    except ConfigError as exc:
        _print_errors(args.file, exc)
        return 1
    try:
        revision, written = asyncio.run(etcd.push(settings, conf))
    except Unavailable as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    except (Conflict, TooLarge) as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: pushed to {settings.etcd_prefix} ({len(conf['services'])} services, "
          f"{len(conf['consumers'])} consumers; {written} keys written; revision {revision})")
    return 0


def _config_pull(args) -> int:
    from .config import etcd, loader
    from .config.sources import Unavailable
    settings = _etcd_settings(args)
    try:
        conf, skipped = asyncio.run(etcd.pull(settings))
    except Unavailable as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(loader.dump(conf))
    if skipped:  # a backup made so would delete them when pushed back: say so, and fail
        print(f"fastgw: {skipped} value(s) in etcd do not validate and are left out (see "
              "above); pushing this output back would delete them", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- revocation (SPEC section 9)
# These speak to a running gateway's admin API (FASTGW_ADMIN_LISTEN, FASTGW_ADMIN_KEY), which
# persists the entry (file or etcd) and puts it in force in every worker before answering.

def _revocation_commands(commands) -> None:
    revoke = commands.add_parser("revoke", help="refuse tokens by jti, or by sub for those "
                                               "issued before a time (admin API)")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", metavar="ID", help="the token's jti")
    which.add_argument("--sub", metavar="SUB", help="every token of this sub issued before "
                                                    "--issued-before (or without iat)")
    revoke.add_argument("--issued-before", metavar="TIME",
                        help="with --sub: ISO 8601 time or unix seconds")
    revoke.add_argument("--iss", metavar="ISS", help="only tokens of this issuer")
    revoke.add_argument("--expires", metavar="TIME", help="when the entry may be forgotten "
                        "(the token's exp; ISO 8601 or unix seconds); default now + 30 days")
    add_flags(revoke, only=("admin_listen", "admin_key"))
    revoke.set_defaults(run=_revoke)
    listing = commands.add_parser("revocations", help="list the revocation entries in force "
                                                      "(admin API)")
    add_flags(listing, only=("admin_listen", "admin_key"))
    listing.set_defaults(run=_revocations)


def _admin_call(args, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """One admin API request: (status, decoded answer); OSError when it cannot be reached."""
    import http.client
    settings = Settings.load(flags=vars(args))
    if not settings.admin_key:
        raise SettingError("FASTGW_ADMIN_KEY (or --admin-key) must be set: this command "
                           "speaks to the admin API")
    host, port = settings.admin_listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else orjson.dumps(body),
                     headers={"X-API-KEY": settings.admin_key,
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except OSError as exc:
        raise OSError(f"cannot reach the admin API at {host}:{port}: "
                      f"{exc.strerror or exc}") from None
    finally:
        conn.close()
    try:
        return resp.status, orjson.loads(data)
    except orjson.JSONDecodeError:
        return resp.status, {"error_msg": data.decode("utf-8", "replace")[:200]}


def _entry_line(entry: dict) -> str:
    def when(seconds) -> str:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
            timespec="seconds").replace("+00:00", "Z")
    what = (f"jti={entry['jti']}" if "jti" in entry else
            f"sub={entry['sub']} issued_before={when(entry['issued_before'])}")
    scope = f" iss={entry['iss']}" if "iss" in entry else ""
    return f"{entry['id']}  {what}{scope}  expires={when(entry['expires'])}"


def _admin_answer(args, method: str, path: str, body: dict | None = None):
    """(the answer of a 2xx, 0), or (None, the exit code) after printing why not."""
    try:
        status, answer = _admin_call(args, method, path, body)
    except OSError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return None, 2
    if status >= 300:
        message = answer.get("error_msg") if isinstance(answer, dict) else answer
        print(f"fastgw: {message} (admin API: {status})", file=sys.stderr)
        return None, 2 if status in (401, 503) else 1
    return answer, 0


def _revoke(args) -> int:
    body: dict = {"jti": args.jti} if args.jti is not None else {"sub": args.sub}
    try:
        if args.issued_before is not None:
            body["issued_before"] = _time(args.issued_before, "--issued-before")
        if args.expires is not None:
            body["expires"] = _time(args.expires)
    except ValueError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    if args.iss is not None:
        body["iss"] = args.iss
    entry, code = _admin_answer(args, "POST", "/admin/revocations", body)
    if entry is not None:
        print(f"revoked: {_entry_line(entry)}")
    return code


def _revocations(args) -> int:
    entries, code = _admin_answer(args, "GET", "/admin/revocations")
    for entry in entries or ():
        print(_entry_line(entry))
    return code
