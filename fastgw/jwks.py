"""Fetching JSON Web Key Sets for credentials that take their keys from an identity provider
(SPEC section 8): the master's side. Workers only verify (`keysets.py`).

The master fetches each URL once for the whole node, however many credentials, routes and
workers use it, and sends the keys to every worker over the pipe that carries configurations.
One `KeySetFetcher` per URL: a task that fetches, then sleeps until the set's lifetime is up
(`Cache-Control: max-age` clamped to 60..86400, else `jwks_refresh`) and refreshes it, in the
background, never on a request's path. A fetch (discovery and set together) times out after
5 s and reads at most 1 MiB. A worker that meets an unknown `kid` asks for a refetch
(`requested`), granted at most once per `jwks_refetch_cooldown` per URL, whichever worker asks
and for whichever kid; the answer, a fetch's result or a refusal, resolves its waiting requests.

While a URL fails, its last good keys keep serving up to `jwks_max_stale` from the start of
the first fetch it did not answer, then a timer drops them: a provider that hangs loses its
keys at that deadline, even while a fetch still waits for its 5 s time-out (an answer that
comes later brings them back). A failure is retried after min(`jwks_refresh`, 30 s), never in
a burst. Each change of a URL's state (first success, failing, stale, recovered, expired) is
one log line; requests never log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import math
import re
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
import orjson

from .config.types import http_url

log = logging.getLogger("fastgw")

FETCH_TIMEOUT = 5.0
MAX_BYTES = 1 << 20
MAX_AGE_RANGE = (60, 86400)  # what Cache-Control: max-age may set
RETRY_AFTER = 30.0  # a failed fetch is tried again after min(jwks_refresh, this)
DISCOVERY_PATH = "/.well-known/openid-configuration"
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.I)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s=])", re.I)
# Generations of key sets, unique in the master's life: a worker that held a URL's keys
# from an earlier fetcher (the URL left the configuration and came back) never takes a new
# fetcher's keys for the ones it has.
_GENERATIONS = itertools.count(1)


# ---------------------------------------------------------------- URLs

def url_problem(url: str) -> str | None:
    """Why `url` may not name a key set or an issuer, or None. Only https:// leaves the
    machine: http:// is for a provider on a loopback address."""
    parts, problem = http_url(url, "must start with https:// (or http:// to a loopback address)")
    if problem is not None:
        return problem
    if parts.fragment:
        return "must not contain a fragment"
    if parts.scheme == "http" and not _loopback(parts.hostname):
        return "must use https:// (http:// only to a loopback address such as 127.0.0.1)"
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- what the configuration asks

@dataclass
class Settings:
    """How one URL is fetched; credentials sharing it are merged (the shortest refresh,
    cooldown and staleness; the first CA file)."""

    discovery: bool  # the URL is an `oidc_issuer`
    refresh: float
    max_stale: float
    cooldown: float
    ca_file: str | None

    def merge(self, other: "Settings") -> None:
        self.refresh = min(self.refresh, other.refresh)
        self.max_stale = min(self.max_stale, other.max_stale)
        self.cooldown = min(self.cooldown, other.cooldown)
        self.ca_file = self.ca_file or other.ca_file


def key_set_urls(conf: dict) -> dict[str, Settings]:
    """URL -> Settings of every credential of a validated configuration that takes its keys
    from a key set (`jwks_uri`, or `oidc_issuer` and discovery)."""
    urls: dict[str, Settings] = {}
    for consumer in conf.get("consumers", ()):
        for cred in consumer["credentials"]:
            url = cred.get("jwks_uri") or cred.get("oidc_issuer")
            if not url:
                continue
            settings = Settings(not cred.get("jwks_uri"), cred["jwks_refresh"],
                                cred["jwks_max_stale"], cred["jwks_refetch_cooldown"],
                                cred["jwks_ca_file"])
            if url in urls:
                urls[url].merge(settings)
            else:
                urls[url] = settings
    return urls


# ---------------------------------------------------------------- HTTP

class FetchError(Exception):
    """A fetch that failed; `outcome` is its label in fastgw_jwks_fetches_total."""

    def __init__(self, message: str, outcome: str = "error"):
        super().__init__(message)
        self.outcome = outcome


class _Response:
    """httptools callbacks, collecting one response."""

    def __init__(self):
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.head_done = self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_BYTES:
            raise FetchError(f"larger than {MAX_BYTES} bytes", "invalid")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.done = True


async def http_get(url: str, context: ssl.SSLContext | None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of GET `url`: one HTTP/1.1 request on its own connection."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname
    port = parts.port or (443 if https else 80)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context if https else None, server_hostname=host if https else None,
        limit=MAX_BYTES)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Accept: application/json\r\nUser-Agent: fastgw\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        received = 0
        while not response.done:
            data = await reader.read(65536)
            received += len(data)
            if received > MAX_BYTES + 65536:  # the head and framing counted too
                raise FetchError(f"larger than {MAX_BYTES} bytes", "invalid")
            if not data:
                framed = "content-length" in response.headers or \
                    "transfer-encoding" in response.headers
                if response.head_done and not framed:
                    break  # a body read until the connection closed
                raise FetchError("connection closed before the response was whole")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, FetchError):  # on_body's, wrapped by httptools
                    raise exc.__context__ from None
                raise FetchError(f"not an HTTP response: {exc}", "invalid") from None
        return parser.get_status_code(), response.headers, b"".join(response.body)
    finally:
        writer.close()


def _max_age(headers: dict) -> float | None:
    """Cache-Control max-age, clamped; None when the response says none."""
    value = headers.get("cache-control", "")
    if _NO_CACHE.search(value):
        return float(MAX_AGE_RANGE[0])
    found = _MAX_AGE.search(value)
    if found is None:
        return None
    return float(min(max(int(found.group(1)), MAX_AGE_RANGE[0]), MAX_AGE_RANGE[1]))


async def _get_json(url: str, context) -> tuple[dict, float | None]:
    status, headers, body = await http_get(url, context)
    if status != 200:
        raise FetchError(f"HTTP {status}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FetchError("not JSON", "invalid") from None
    if type(doc) is not dict:
        raise FetchError("not a JSON object", "invalid")
    return doc, _max_age(headers)


async def fetch_keys(url: str, settings: Settings, context) -> tuple[list, float | None]:
    """The JWKs of `url` (after discovery for an issuer) and their max-age."""
    if settings.discovery:
        doc, _ = await _get_json(url.rstrip("/") + DISCOVERY_PATH, context)
        if doc.get("issuer") != url:
            raise FetchError("discovery document's issuer differs from oidc_issuer", "invalid")
        jwks_uri = doc.get("jwks_uri")
        if type(jwks_uri) is not str:
            raise FetchError("discovery document has no jwks_uri", "invalid")
        problem = url_problem(jwks_uri)
        if problem:
            raise FetchError(f"discovery document's jwks_uri {problem}", "invalid")
        url = jwks_uri
    doc, max_age = await _get_json(url, context)
    keys = doc.get("keys")
    if type(keys) is not list:
        raise FetchError("no \"keys\" list", "invalid")
    return [key for key in keys if type(key) is dict], max_age


# ---------------------------------------------------------------- one URL

class KeySetFetcher:
    """One URL's keys, as the master fetches them. `state`: new (never answered yet),
    fresh, failing (never fetched, or its keys dropped after `jwks_max_stale`), stale
    (failing, the last keys serve)."""

    def __init__(self, url: str, settings: Settings, publish):
        self.url, self.settings = url, settings
        self.publish = publish  # called with this fetcher after every fetch
        self.keys: list | None = None
        self.generation = next(_GENERATIONS)
        self.state = "new"
        self.fetches: dict[str, int] = {}
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.failing_since: float | None = None  # the start of the first failed fetch
        self.fetch_started: float | None = None  # ... of the fetch under way
        self._expiry: asyncio.TimerHandle | None = None  # drops the keys at jwks_max_stale
        self.next_refresh = time.time()
        self.last_fetch: float | None = None  # when the last fetch ended
        self.max_age: float | None = None  # the last good fetch's Cache-Control max-age
        self.last_refetch = -math.inf  # when an unknown kid last had one (monotonic)
        self.in_flight = False
        self.done = asyncio.Event()  # set after each fetch
        self._fetch_now = False  # refetch() was called
        self._wake = asyncio.Event()  # ... or next_refresh moved closer
        self._context = self._ssl_context()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def reconfigure(self, settings: Settings) -> None:
        """New settings in force at once: the next refresh counted from the last fetch with
        the new jwks_refresh if that is sooner, the expiry with the new jwks_max_stale."""
        ca_changed = settings.ca_file != self.settings.ca_file
        self.settings = settings
        if ca_changed:
            self._context = self._ssl_context()
            self.refetch()
        if self.last_fetch is not None:
            due = self.last_fetch + self._interval()
            if due < self.next_refresh:
                self.next_refresh = due
                self._wake.set()  # the task sleeps until the old one
        self._watch()

    @property
    def stale(self) -> bool:
        """fastgw_jwks_stale: from the first failed refresh of a set that had keys until
        the next successful fetch (its keys dropped after jwks_max_stale meanwhile or not)."""
        return self.failing_since is not None and self.last_success is not None

    def refetch(self) -> None:
        """Fetch now (unless a fetch is already under way)."""
        self._fetch_now = True
        self._wake.set()

    @property
    def under_way(self) -> bool:
        return self.in_flight or self._fetch_now

    def _interval(self) -> float:
        """From the end of the last fetch to the next: the set's lifetime after a success
        (max-age wins over jwks_refresh), min(jwks_refresh, 30 s) after a failure."""
        if self.failing_since is not None or self.keys is None:
            return min(self.settings.refresh, RETRY_AFTER)
        return self.settings.refresh if self.max_age is None else self.max_age

    async def _run(self) -> None:
        while True:
            delay = self.next_refresh - time.time()
            if delay > 0 and not self._fetch_now:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                if not self._fetch_now and time.time() < self.next_refresh:
                    continue  # next_refresh moved: sleep until the new one
            self._wake.clear()
            self._fetch_now = False
            await self.fetch()

    async def fetch(self) -> None:
        self.in_flight = True
        self.fetch_started = time.time()
        self._watch()
        try:
            keys, max_age = await asyncio.wait_for(
                fetch_keys(self.url, self.settings, self._context), FETCH_TIMEOUT)
        except asyncio.TimeoutError:
            self._failed("timeout", f"no answer in {FETCH_TIMEOUT:g} s")
        except FetchError as exc:
            self._failed(exc.outcome, str(exc))
        except ssl.SSLError as exc:
            self._failed("error", f"TLS: {exc.reason or exc}")
        except OSError as exc:
            self._failed("error", exc.strerror or str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug: logged, and the fetcher lives on
            log.exception("key set %s: fetch failed", self.url)
            self._failed("error", type(exc).__name__)
        else:
            self._succeeded(keys, max_age)
        finally:
            self.in_flight = False
            self.fetch_started = None
        self.publish(self)
        self.done.set()
        self.done = asyncio.Event()

    def _count(self, outcome: str) -> None:
        self.fetches[outcome] = self.fetches.get(outcome, 0) + 1

    def _succeeded(self, keys: list, max_age: float | None) -> None:
        self._count("success")
        now = time.time()
        before = self.state
        if keys != self.keys:
            self.generation = next(_GENERATIONS)
            if before in ("fresh", "stale"):
                log.info("key set %s: keys changed (%d keys)", self.url, len(keys))
        self.keys, self.state = keys, "fresh"
        self.last_success, self.failing_since = now, None
        self._unwatch()  # no expiry while fresh
        self.last_fetch, self.max_age = now, max_age
        self.next_refresh = now + self._interval()
        if before == "new":
            log.info("key set %s: fetched, %d keys", self.url, len(keys))
        elif before in ("failing", "stale"):
            log.info("key set %s: recovered, %d keys", self.url, len(keys))

    def _failed(self, outcome: str, message: str) -> None:
        self._count(outcome)
        now = time.time()
        self.last_error = message
        if self.failing_since is None:
            self.failing_since = self.fetch_started
        self._watch()  # the keys dropped now if jwks_max_stale is over
        if self.state == "new":
            log.warning("key set %s: cannot fetch (%s); its tokens are refused until it "
                        "answers", self.url, message)
            self.state = "failing"
        elif self.state == "fresh":
            log.warning("key set %s: refresh failed (%s); the last keys serve for up to "
                        "%d s", self.url, message, self.settings.max_stale)
            self.state = "stale"
        self.last_fetch = now
        self.next_refresh = now + self._interval()

    def _watch(self) -> None:
        """The keys' expiry, set again: `jwks_max_stale` after the start of the first failed
        fetch, or of the fetch under way (not failed yet: it fails at that deadline if it
        has not answered by then); none while no fetch fails or hangs. A deadline already
        passed drops the keys now, unless it is that of a fetch just started
        (`jwks_max_stale` 0): its answer decides."""
        self._unwatch()
        since = self.fetch_started if self.failing_since is None else self.failing_since
        if self.keys is None or since is None:
            return
        delay = since + self.settings.max_stale - time.time()
        if delay > 0:
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)
        elif self.failing_since is not None:
            self._expire()

    def _unwatch(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        """jwks_max_stale is over: the last keys are dropped, their tokens refused."""
        self._expiry = None
        if self.failing_since is None:  # a fetch that hangs: failed by now
            self.failing_since = self.fetch_started
        message = self.last_error if self.fetch_started is None else "a fetch under way " \
            f"for {time.time() - self.fetch_started:.0f} s"
        log.warning("key set %s: no answer for %.0f s (jwks_max_stale): its keys are "
                    "dropped and its tokens refused (%s)", self.url,
                    time.time() - self.failing_since, message)
        self.keys, self.state = None, "failing"
        self.generation = next(_GENERATIONS)
        self.publish(self)

    def message(self) -> dict:
        """What a worker is told about this URL."""
        return {"jwks": self.url, "keys": self.keys, "generation": self.generation,
                "cooldown": self.settings.cooldown}

    def status(self) -> dict:
        """For GET /admin/jwks."""
        kids = [key.get("kid") for key in self.keys or () if isinstance(key.get("kid"), str)]
        return {"uri": self.url, "discovery": self.settings.discovery, "state": self.state,
                "keys": None if self.keys is None else len(self.keys), "key_ids": kids,
                "last_success": self.last_success, "last_error": self.last_error,
                "next_refresh": None if self.under_way else self.next_refresh,
                "refreshing": self.under_way, "stale": self.stale}

    def close(self) -> None:
        self._task.cancel()
        self._unwatch()


# ---------------------------------------------------------------- every URL

class KeySetFetchers:
    """The master's fetchers, one per URL the configuration in force names. `send(message,
    worker)` writes a message to one worker, or to every worker when `worker` is None."""

    def __init__(self, send):
        self.send = send
        self.fetchers: dict[str, KeySetFetcher] = {}

    def configure(self, conf: dict, also: dict | None = None) -> None:
        """A configuration is in force (and `also`, while it is being replaced by it):
        fetchers for its URLs, none for the others."""
        urls = key_set_urls(conf)
        if also is not None:
            urls = {**key_set_urls(also), **urls}
        for url in list(self.fetchers):
            if url not in urls:
                self.fetchers.pop(url).close()
        for url, settings in urls.items():
            fetcher = self.fetchers.get(url)
            if fetcher is None:
                fetcher = self.fetchers[url] = KeySetFetcher(url, settings, self._publish)
                self.send(fetcher.message(), None)  # no keys yet: none kept from before
            elif fetcher.settings != settings:
                fetcher.reconfigure(settings)
                self.send(fetcher.message(), None)  # a new cooldown

    def _publish(self, fetcher: KeySetFetcher) -> None:
        if self.fetchers.get(fetcher.url) is fetcher:
            self.send(fetcher.message(), None)

    def messages(self) -> list[dict]:
        """Everything a new worker must be told."""
        return [fetcher.message() for fetcher in self.fetchers.values()]

    def requested(self, url: str, worker) -> None:
        """A worker met a kid its keys for `url` lack: a refetch now, if none is under way
        and the URL's cooldown allows; else the worker gets the keys there are (the
        refusal), unless a fetch under way will answer it."""
        fetcher = self.fetchers.get(url)
        if fetcher is None:
            self.send({"jwks": url, "keys": None, "generation": next(_GENERATIONS),
                       "cooldown": 30}, worker)
            return
        if fetcher.under_way:
            return
        now = time.monotonic()
        if now - fetcher.last_refetch >= fetcher.settings.cooldown:
            fetcher.last_refetch = now
            fetcher.refetch()
        else:
            self.send(fetcher.message(), worker)

    async def refresh_all(self, timeout: float = FETCH_TIMEOUT + 1) -> list[dict]:
        """POST /admin/jwks/refresh: every URL fetched now; their status once done."""
        waits = []
        for fetcher in self.fetchers.values():
            waits.append(fetcher.done.wait())
            fetcher.refetch()
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=timeout)
        return self.status()

    def status(self) -> list[dict]:
        return [fetcher.status() for fetcher in self.fetchers.values()]

    def metrics(self) -> list[dict]:
        return [{"uri": f.url, "fetches": dict(f.fetches), "keys": len(f.keys or ()),
                 "stale": int(f.stale)} for f in self.fetchers.values()]

    def close(self) -> None:
        for fetcher in self.fetchers.values():
            fetcher.close()
