"""Micro-benchmark of the jwt-auth check itself, without sockets.

    python bench/jwt_micro.py

Times `JwtAuth.access` per call for a cache hit and for misses with HS256, RS256
and ES256 credentials (every token distinct, so each miss verifies in full),
next to PyJWT's own `jwt.decode` for the same HS256 token as a reference.
"""

from __future__ import annotations

import time
import timeit

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastgw.config.schema import validate
from fastgw.plugins.jwt_auth import JwtAuth, VerifiedTokenCache, index_credentials

SECRET = "micro-benchmark-secret-0123456789abcdef"


class Request:
    """What the plugin reads and writes on an exchange."""

    __slots__ = ("headers", "target", "consumer", "response")

    def __init__(self, token: bytes):
        self.headers = [(b"host", b"api.test"), (b"user-agent", b"wrk"),
                        (b"authorization", b"Bearer " + token), (b"accept", b"*/*")]
        self.target = b"/json"
        self.consumer = None

    def drop_header(self, names):
        pass

    def refuse(self, response):
        self.response = response


class Snapshot:
    def __init__(self, conf, cache_size):
        self.credentials = {"jwt-auth": index_credentials(conf["consumers"], None)}
        self.state = {"jwt-auth": VerifiedTokenCache(cache_size)}


def pem(private_key):
    priv = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    pub = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return priv, pub


def per_call_us(fn, number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=3))
    return best / number * 1e6


def main() -> None:
    rsa_priv, rsa_pub = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_priv, ec_pub = pem(ec.generate_private_key(ec.SECP256R1()))
    conf = validate({"consumers": [
        {"username": "hs", "credentials": [{"key": "hs", "secret": SECRET}]},
        {"username": "rs", "credentials": [{"key": "rs", "algorithm": "RS256",
                                            "public_key": rsa_pub}]},
        {"username": "es", "credentials": [{"key": "es", "algorithm": "ES256",
                                            "public_key": ec_pub}]},
    ]})
    plugin_conf = {"header": "authorization", "query": "jwt", "cookie": "jwt",
                   "hide_credentials": False, "key_claim_name": "key", "anonymous_consumer": None}
    exp = int(time.time()) + 3600
    keys = {"HS256": SECRET, "RS256": rsa_priv, "ES256": ec_priv}
    kid = {"HS256": "hs", "RS256": "rs", "ES256": "es"}

    hot = pyjwt.encode({"key": "hs", "exp": exp}, SECRET).encode()
    plugin = JwtAuth(plugin_conf, Snapshot(conf, 1024))
    request = Request(hot)
    assert plugin.access(request) is None
    results = {"hit": per_call_us(lambda: plugin.access(request), 200_000)}

    for alg, number in (("HS256", 20_000), ("RS256", 2_000), ("ES256", 2_000)):
        tokens = [Request(pyjwt.encode({"key": kid[alg], "exp": exp, "n": i}, keys[alg],
                                       algorithm=alg).encode()) for i in range(number * 3)]
        it = iter(tokens)
        plugin = JwtAuth(plugin_conf, Snapshot(conf, 16))  # far smaller than the token count
        results[f"{alg} miss"] = per_call_us(lambda: plugin.access(next(it)), number)

    pyjwt_token = hot.decode()
    results["jwt.decode (reference)"] = per_call_us(
        lambda: pyjwt.decode(pyjwt_token, SECRET, algorithms=["HS256"]), 20_000)

    print("| check | µs per call |")
    print("| --- | ---: |")
    for name, us in results.items():
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
