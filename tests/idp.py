"""A small identity provider for the key-set tests: an OpenID discovery document and a JSON
Web Key Set on loopback, over HTTP or HTTPS, on its own event loop in a thread.

    /.well-known/openid-configuration   {"issuer": <issuer>, "jwks_uri": <base>/certs}
    /certs                              {"keys": [the public JWKs]}

It signs tokens with its private keys (`sign`), and can rotate keys (`add_key`), drop one
(`drop`), and misbehave: `mode` "ok", "500", "hang" (accepts, never answers), "huge"
(a 2 MiB key set), "garbage" (200 with a body that is no key set). Every request is
counted by path (`fetches`); `wait_fetches` waits for a count with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from upstream import LoopThread

DISCOVERY = "/.well-known/openid-configuration"
CERTS = "/certs"


def new_private_key(alg: str):
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


def public_jwk(private_key, alg: str) -> dict:
    public = private_key.public_key()
    if alg.startswith(("RS", "PS")):
        return RSAAlgorithm.to_jwk(public, as_dict=True)
    if alg.startswith("ES"):
        return ECAlgorithm.to_jwk(public, as_dict=True)
    return OKPAlgorithm.to_jwk(public, as_dict=True)


class IdentityProvider(LoopThread):
    NAME = "test identity provider"

    def __init__(self, ssl_context=None):
        super().__init__()
        self.ssl = ssl_context
        self.scheme = "https" if ssl_context else "http"
        self.keys: dict[str, tuple[str, object, dict]] = {}  # kid -> (alg, private, jwk)
        self.extra_jwks: list[dict] = []  # published as they are (unusable keys, ...)
        self.mode = "ok"
        self.issuer_override: str | None = None
        self.cache_control: str | None = None
        self.fetches: dict[str, int] = {}
        self.changed = threading.Condition()
        self._hung: list[asyncio.StreamWriter] = []
        self._held = asyncio.Event()  # of self.loop: what "held" fetches wait for

    # ------------------------------------------------------------ keys and tokens

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base

    @property
    def jwks_uri(self) -> str:
        return self.base + CERTS

    def add_key(self, alg: str = "RS256", kid: str | None = None, publish_alg: bool = True,
                members: dict | None = None, **more) -> str:
        """A new signing key; `members` are added to (or replace) its published JWK's."""
        members = {**(members or {}), **more}
        kid = kid or f"key-{len(self.keys) + 1}-{time.monotonic_ns()}"
        private = new_private_key(alg)
        jwk = {**public_jwk(private, alg), "kid": kid, "use": "sig", **members}
        if publish_alg:
            jwk["alg"] = alg
        with self.changed:
            self.keys[kid] = (alg, private, jwk)
        return kid

    def release_held(self) -> None:
        """Answer the fetches that "held" mode keeps waiting, and those after them."""
        self.loop.call_soon_threadsafe(self._held.set)

    def drop(self, kid: str) -> None:
        with self.changed:
            del self.keys[kid]

    def sign(self, claims: dict, kid: str | None = None, alg: str | None = None,
             with_kid: bool = True, headers: dict | None = None) -> str:
        """A token signed with key `kid` (the first one by default), naming it unless
        `with_kid` is false; `headers` are added to (or replace) the JWS header's."""
        kid = kid or next(iter(self.keys))
        key_alg, private, _ = self.keys[kid]
        payload = {"iss": self.issuer, "exp": int(time.time()) + 600, **claims}
        head = {"kid": kid} if with_kid else {}
        head.update(headers or {})
        return pyjwt.encode(payload, private, algorithm=alg or key_alg, headers=head)

    def count(self, path: str = CERTS) -> int:
        with self.changed:
            return self.fetches.get(path, 0)

    def wait_fetches(self, n: int, path: str = CERTS, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.fetches.get(path, 0) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{path} fetched {self.fetches.get(path, 0)} times, "
                                       f"not {n}")
                self.changed.wait(left)
            return self.fetches[path]

    # ------------------------------------------------------------ serving

    def _document(self, path: str) -> tuple[int, bytes]:
        if path == DISCOVERY:
            issuer = self.issuer_override or self.issuer
            return 200, json.dumps({"issuer": issuer, "jwks_uri": self.jwks_uri}).encode()
        if path == CERTS:
            with self.changed:
                keys = [jwk for _, _, jwk in self.keys.values()] + self.extra_jwks
            return 200, json.dumps({"keys": keys}).encode()
        return 404, b"{}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            path = line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "?"
            with self.changed:
                self.fetches[path] = self.fetches.get(path, 0) + 1
                self.changed.notify_all()
            mode = self.mode
            if mode == "hang":
                self._hung.append(writer)
                await asyncio.sleep(60)
                return
            if mode == "held":  # answered as usual once the test calls `release_held`
                await self._held.wait()
            if mode == "500":
                status, body = 500, b'{"error":"down"}'
            elif mode == "garbage" and path == CERTS:
                status, body = 200, b"<html>not a key set</html>"
            elif mode == "huge" and path == CERTS:  # a key set of 2 MiB: over the bound
                status, body = 200, b'{"keys": [], "pad": "' + b"x" * (2 << 20) + b'"}'
            else:
                status, body = self._document(path)
            extra = f"Cache-Control: {self.cache_control}\r\n" if self.cache_control else ""
            writer.write((f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                          ).encode() + body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _serve(self):
        return asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl)
