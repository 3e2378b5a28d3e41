"""FASTGW_* environment variables and `serve` flags, turned into one frozen object.

Every setting is declared once in `SETTINGS`; the environment reader and the
command-line flags are both generated from that table, so the two never drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from typing import Any, Callable, Mapping


class SettingError(ValueError):
    """A setting has a value fastgw cannot use; the message names it."""


def parse_address(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """'host:port', ':port', 'port' or '[v6]:port' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid address {text!r}")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    else:
        host, port = "", text
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host or default_host, number


def _addresses(text: str) -> tuple[tuple[str, int], ...]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no address given")
    return tuple(parse_address(p) for p in parts)


def _optional_addresses(text: str) -> tuple[tuple[str, int], ...] | None:
    return _addresses(text) if text.strip() else None


def _optional_address(text: str) -> tuple[str, int] | None:
    return None if text.strip().lower() == "off" else parse_address(text, "127.0.0.1")


MAX_WORKERS = 256


def _workers(text: str) -> int:
    if text.strip().lower() == "auto":  # the CPUs this process may run on (taskset, cgroups)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    value = _positive_int(text)
    if value > MAX_WORKERS:
        raise ValueError(f"must be at most {MAX_WORKERS}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError("must be a finite number of seconds, greater than 0")
    return value


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError("must be one of debug, info, warning, error, critical")
    return level


def _path(text: str) -> str:
    if not text:
        raise ValueError("must name a file")
    return text


def _optional_str(text: str) -> str | None:
    return text or None


def _etcd_endpoints(text: str) -> tuple[tuple[str, int], ...] | None:
    """'host:port,http://host:port,...' -> ((host, port), ...); None when empty."""
    endpoints = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("https://"):
            raise ValueError("TLS to etcd is not supported; use http:// endpoints")
        address = part.removeprefix("http://").rstrip("/")
        if ":" not in address and not address.isdigit():
            address += ":2379"  # etcd's client port
        endpoints.append(parse_address(address, "127.0.0.1"))
    return tuple(endpoints) or None


def _etcd_prefix(text: str) -> str:
    if not text.startswith("/") or text == "/":
        raise ValueError('must start with "/" and name a folder, e.g. /fastgw')
    return text.rstrip("/")


@dataclasses.dataclass(frozen=True)
class Setting:
    field: str
    default: str | None
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return "FASTGW_" + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


SETTINGS = (
    Setting("config", "./fastgw.yaml", _path, "configuration file (YAML or JSON)"),
    Setting("listen", "0.0.0.0:9080", _addresses, "proxy listener(s), comma-separated"),
    Setting("workers", "auto", _workers, "worker processes (auto = CPU count)"),
    Setting("admin_listen", "127.0.0.1:9180", lambda t: parse_address(t, "127.0.0.1"),
            "admin API listener"),
    Setting("admin_key", None, _optional_str, "admin API key; the admin API is off while unset"),
    Setting("metrics_listen", "127.0.0.1:9091", _optional_address,
            "Prometheus /metrics listener; off disables"),
    Setting("jwt_cache_size", "65536", _positive_int, "verified tokens kept per worker"),
    Setting("access_log", "off", _path, "off, stdout, or a file path"),
    Setting("log_level", "info", _log_level, "log level"),
    Setting("keepalive_timeout", "60", _positive_float, "seconds an idle client connection is kept"),
    Setting("header_timeout", "30", _positive_float, "seconds to receive a request's headers"),
    Setting("max_header_bytes", "32768", _positive_int, "larger request heads get 431"),
    Setting("max_body_bytes", "8388608", _positive_int, "larger request bodies get 413"),
    Setting("etcd", None, _etcd_endpoints,
            "etcd endpoints, comma-separated; when set, configuration lives in etcd"),
    Setting("etcd_prefix", "/fastgw", _etcd_prefix, "key prefix in etcd"),
    Setting("etcd_cache", "./fastgw-etcd-snapshot.json", _path,
            "last configuration read from etcd, used when etcd is down at start"),
    Setting("shutdown_timeout", "30", _positive_float,
            "seconds in-flight requests get to finish on SIGTERM"),
    Setting("tls_listen", None, _optional_addresses,
            "HTTPS listener(s), comma-separated; needs the TLS certificate and key"),
    Setting("tls_cert", None, _optional_str, "PEM certificate chain for the HTTPS listeners"),
    Setting("tls_key", None, _optional_str,
            "PEM private key of that certificate (mode 0600 recommended; never logged)"),
    Setting("revocations", "./fastgw-revocations.json", _path,
            "revoked tokens' entries, kept across restarts (file mode; etcd mode keeps "
            "them under the prefix)"),
)

# Settings used as text, not as a path: what the environment holds of them must be UTF-8
# (os.environ keeps other bytes as lone surrogates, which no text can be encoded with).
_TEXT = ("admin_key", "etcd_prefix")


_SURROGATE = re.compile("[\ud800-\udfff]").search


# Settings that only make sense together: a listener without its pair, or the reverse.
_TLS_SETTINGS = ("tls_listen", "tls_cert", "tls_key")


@dataclasses.dataclass(frozen=True)
class Settings:
    config: str
    listen: tuple[tuple[str, int], ...]
    workers: int
    admin_listen: tuple[str, int]
    admin_key: str | None
    metrics_listen: tuple[str, int] | None
    jwt_cache_size: int
    access_log: str
    log_level: str
    keepalive_timeout: float
    header_timeout: float
    max_header_bytes: int
    max_body_bytes: int
    etcd: tuple[tuple[str, int], ...] | None
    etcd_prefix: str
    etcd_cache: str
    shutdown_timeout: float
    tls_listen: tuple[tuple[str, int], ...] | None
    tls_cert: str | None
    tls_key: str | None
    revocations: str

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             flags: Mapping[str, str | None] | None = None) -> "Settings":
        """Defaults, overridden by the environment, overridden by flags."""
        environ = os.environ if environ is None else environ
        flags = flags or {}
        values, sources = {}, {}
        for setting in SETTINGS:
            raw, source = setting.default, setting.env
            if setting.env in environ:
                raw = environ[setting.env]
            if flags.get(setting.field) is not None:
                raw, source = flags[setting.field], setting.flag
            sources[setting.field] = source
            if raw is None:
                values[setting.field] = None
                continue
            if setting.field in _TEXT and _SURROGATE(raw):  # not shown: a secret, maybe
                raise SettingError(f"{source}: must be UTF-8 text (the environment's bytes "
                                   f"are not)")
            try:
                values[setting.field] = setting.parse(raw)
            except (ValueError, TypeError) as exc:
                raise SettingError(f"{source}: {exc} (got {raw!r})") from None
        _check_tls(values, sources)
        return cls(**values)


def _check_tls(values: dict, sources: dict) -> None:
    """The HTTPS listeners, the certificate and the key are set all three or not at all."""
    given = [field for field in _TLS_SETTINGS if values[field] is not None]
    if not given or len(given) == len(_TLS_SETTINGS):
        return
    missing = " and ".join(s.env for s in SETTINGS
                           if s.field in _TLS_SETTINGS and s.field not in given)
    raise SettingError(f"{sources[given[0]]}: needs {missing} as well")


def add_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    for setting in SETTINGS:
        if only is not None and setting.field not in only:
            continue
        parser.add_argument(setting.flag, dest=setting.field, default=None, metavar="VALUE",
                            help=f"{setting.help} [{setting.env}, default {setting.default}]")
