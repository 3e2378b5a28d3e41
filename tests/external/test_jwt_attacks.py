"""The attack classes of jwt_tool's playbook, against a real gateway and a real upstream.

Where the cases come from: jwt_tool, https://github.com/ticarpi/jwt_tool, file `jwt_tool.py`
at commit e4f380fea78630b87f9e54369b33a3ea645ea45f (GPL-3.0): the attacks of its scan
playbook and its -X exploits, re-typed here as test cases from their description; none of
its code or word lists is copied. Plus the "psychic signature" (CVE-2022-21449: an ECDSA
signature with r = s = 0) and the `crit` header.

One `fastgw serve` with jwt-auth on every path, HS256, RS256 and ES256/384/512 consumers, in
front of an upstream that records what reaches it. Each attack must get a 401 with the
expected message, and the upstream must see nothing of it. No URL named in a token is ever
fetched: `jku`, `x5u` and the other URL-valued claims point at a listener on loopback, which
must never be connected to. Out of scope: cracking an HMAC secret from a word list (the
secret's strength is the operator's; `fastgw secret` makes 32 random bytes).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import Gateway, service
from jwt_kit import pem_pair
from upstream import UpstreamServer

SECRET = "attack-tests-secret-" + "0123456789abcdef" * 4

TOKEN_INVALID = "JWT token invalid"
MISSING_KEY = "missing user key in JWT token"
INVALID_KEY = "Invalid user key in JWT token"
VERIFY_FAILED = "failed to verify jwt"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def compact(header: dict, payload: dict, signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


def hs_signed(header: dict, payload: dict, secret: bytes, digest=hashlib.sha256) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), digest).digest())





class Listener:
    """A TCP listener on loopback that does nothing but count who connects to it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def keys():
    rsa_private, rsa_public = pem_pair(rsa.generate_private_key(public_exponent=65537,
                                                                key_size=2048))
    ec_pairs = {alg: pem_pair(ec.generate_private_key(curve)) for alg, curve in
                (("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()),
                 ("ES512", ec.SECP521R1()))}
    return {"RS256": (rsa_private, rsa_public), **ec_pairs}


@pytest.fixture(scope="module")
def target(tmp_path_factory, keys):
    """(gateway, upstream, listener), shared by the module."""
    upstream = UpstreamServer().start()
    listener = Listener()
    consumers = [{"username": "hs", "credentials": [{"key": "hs-key", "secret": SECRET}]},
                 {"username": "other", "credentials": [{"key": "other-key",
                                                        "secret": "other-" + SECRET}]}]
    for alg in ("RS256", "ES256", "ES384", "ES512"):
        consumers.append({"username": alg.lower(), "credentials": [
            {"key": f"{alg.lower()}-key", "algorithm": alg, "public_key": keys[alg][1]}]})
    gw = Gateway(tmp_path_factory.mktemp("attacks"), {
        "services": [service(upstream.url, [{"name": "all", "paths": ["/*"],
                                             "plugins": {"jwt-auth": {}}}])],
        "consumers": consumers}).start()
    yield gw, upstream, listener
    gw.stop()
    listener.close()
    upstream.stop()


def genuine(keys, alg: str, **claims) -> str:
    key = {"HS256": SECRET}.get(alg) or keys[alg][0]
    kid = "hs-key" if alg == "HS256" else f"{alg.lower()}-key"
    return pyjwt.encode({"key": kid, "role": "user", **claims}, key, algorithm=alg)


def attack(target, tokens, message: str):
    """Every token gets 401 `message` and nothing of it reaches the upstream."""
    gw, upstream, _ = target
    before = len(upstream.requests)
    for t in tokens:
        status, headers, body = gw.request("GET", "/anything", headers={"Authorization": t})
        assert (status, json.loads(body)) == (401, {"message": message}), t
        assert headers["www-authenticate"] == 'Bearer realm="fastgw", error="invalid_token"'
    assert len(upstream.requests) == before


def canonical(segment: str) -> bool:
    """Whether the segment's last character leaves the unused bits zero (RFC 4648 3.5)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {0: 0, 2: 4, 3: 2}[len(segment) % 4]
    return not segment or alphabet.index(segment[-1]) & ((1 << unused) - 1) == 0


def parts(t: str) -> tuple[dict, dict, str]:
    head, body, sig = t.split(".")
    return (json.loads(base64.urlsafe_b64decode(head + "==")),
            json.loads(base64.urlsafe_b64decode(body + "==")), sig)


def test_the_genuine_tokens_pass(target, keys):
    """The control: the gateway serves, and the genuine tokens are now in its cache, so the
    attacks below that reuse their signatures meet a warm cache."""
    gw = target[0]
    for alg in ("HS256", "RS256", "ES256", "ES384", "ES512"):
        status, _, body = gw.request("GET", "/anything",
                                     headers={"Authorization": genuine(keys, alg)})
        assert status == 200, (alg, body)


# ---------------------------------------------------------------- alg: none (-X a)

NONE_SPELLINGS = ["".join(p) for p in itertools.product(*[(c.lower(), c.upper()) for c in "none"])]


def signed_by_the_key_holder(keys, alg: str, header: dict, payload: dict) -> str:
    """A token whose signature the credential's own algorithm and key make, whatever its
    header says (only the holder of the key can make one)."""
    algorithm = pyjwt.algorithms.get_default_algorithms()[alg]
    key = algorithm.prepare_key(SECRET if alg == "HS256" else keys[alg][0])
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return signing_input + "." + b64(algorithm.sign(signing_input.encode(), key))


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_alg_none_in_every_spelling_with_and_without_signature(target, keys, alg):
    header, payload, sig = parts(genuine(keys, alg))
    payload["role"] = "admin"
    tokens = []
    for spelling in NONE_SPELLINGS:
        forged = {**header, "alg": spelling}
        tokens.append(compact(forged, payload))  # "header.payload." - no signature
        tokens.append(f"{b64json(forged)}.{b64json(payload)}.{sig}")  # the original one
        tokens.append(compact(forged, payload, b"\x00"))
        # Even a signature that checks out with the credential's key does not make a token
        # that says "none" acceptable: only the credential's own algorithm is (SPEC 4).
        tokens.append(signed_by_the_key_holder(keys, alg, forged, payload))
    assert len(set(NONE_SPELLINGS)) == 16
    attack(target, tokens, VERIFY_FAILED)


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_header_naming_another_algorithm_is_refused(target, keys, alg):
    _, payload, _ = parts(genuine(keys, alg))
    others = ["HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA", "hs256", "HS256 ", None, 1]
    tokens = [signed_by_the_key_holder(keys, alg, {"alg": other, "typ": "JWT"}, payload)
              for other in others if other != alg]
    attack(target, tokens + [signed_by_the_key_holder(keys, alg, {"typ": "JWT"}, payload)],
           VERIFY_FAILED)


# ---------------------------------------------------------------- null and broken signatures (-X n)

@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_empty_and_broken_signatures(target, keys, alg):
    t = genuine(keys, alg)
    head_body, _, sig = t.rpartition(".")
    flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
    tokens = [head_body + ".", head_body + "." + flipped,
              head_body + "." + b64(b"\x00" * len(base64.urlsafe_b64decode(sig + "==")))]
    attack(target, tokens, VERIFY_FAILED)
    # jwt_tool's "broken signature" drops the last 4 characters; what is left may end in a
    # character with unused bits set, which is refused before any signature check.
    truncated = sig[:-4]
    attack(target, [head_body + "." + truncated],
           VERIFY_FAILED if canonical(truncated) else TOKEN_INVALID)
    attack(target, [head_body], TOKEN_INVALID)  # no signature segment at all


def test_hmac_signed_with_an_empty_secret(target, keys):
    """jwt_tool -X b: a secret left blank in the verifier's configuration."""
    header, payload, _ = parts(genuine(keys, "HS256"))
    attack(target, [hs_signed(header, {**payload, "role": "admin"}, b"")], VERIFY_FAILED)


# ---------------------------------------------------------------- key confusion (-X k)

@pytest.mark.parametrize("credential", ["RS256", "ES256"])
def test_algorithm_confusion_public_key_as_hmac_secret(target, keys, credential):
    """The public key (which is public) used as an HMAC secret, in the forms a verifier
    confused into HMAC might hand to it."""
    public = keys[credential][1]
    key = f"{credential.lower()}-key"
    der = serialization.load_pem_public_key(public.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tokens = []
    for secret in (public.encode(), public.strip().encode(), public.replace("\n", "\r\n").encode(),
                   der):
        for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                            ("HS512", hashlib.sha512)):
            tokens.append(hs_signed({"alg": alg, "typ": "JWT"}, {"key": key, "role": "admin"},
                                    secret, digest))
    attack(target, tokens, VERIFY_FAILED)


# ---------------------------------------------------------------- tampering, the signature kept

@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_tampered_payload_with_the_original_signature(target, keys, alg):
    t = genuine(keys, alg, exp=int(time.time()) + 3600)
    _, payload, sig = parts(t)
    head = t.split(".")[0]
    tokens = [f"{head}.{b64json({**payload, **change})}.{sig}" for change in (
        {"role": "admin"}, {"exp": payload["exp"] + 86400}, {"extra": True},
        {"key": "other-key"},  # another consumer's key under this signature
    )]
    attack(target, tokens, VERIFY_FAILED)
    # Forced errors: each claim replaced by null, true, false, a string, 0.
    for claim, value in itertools.product(payload, (None, True, False, "jwt_tool", 0)):
        forged = f"{head}.{b64json({**payload, claim: value})}.{sig}"
        expected = VERIFY_FAILED
        if claim == "key":
            expected = MISSING_KEY if value is None else INVALID_KEY
        attack(target, [forged], expected)


@pytest.mark.parametrize("alg", ["HS256", "RS256"])
def test_tampered_header_with_the_original_signature(target, keys, alg):
    t = genuine(keys, alg)
    header, payload, sig = parts(t)
    body = t.split(".")[1]
    tokens = []
    for claim, value in itertools.product(header, (None, True, False, "jwt_tool", 0)):
        tokens.append(f"{b64json({**header, claim: value})}.{body}.{sig}")
    tokens.append(f"{b64json({**header, 'typ': 'at+jwt'})}.{body}.{sig}")
    attack(target, tokens, VERIFY_FAILED)


# ---------------------------------------------------------------- kid injection

KID_VALUES = ["", "../../../../../../dev/null", "/dev/null", "/invalid_path", "|sleep 10",
              "x' UNION SELECT '1';--", "0", "hs-key", "../../../../etc/passwd%00"]


def test_kid_injection_is_ignored(target, keys):
    """kid names nothing fastgw looks up: a token signed with what a kid-following verifier
    would load (an empty file, the result of an SQL injection) fails; the gateway does not
    pause for a shell command either."""
    listener = target[2]
    _, payload, _ = parts(genuine(keys, "HS256"))
    payload["role"] = "admin"
    tokens = []
    for kid in KID_VALUES + ["| curl " + listener.url("/RCE_in_kid")]:
        for secret in (b"", b"1", b"\x00"):
            tokens.append(hs_signed({"alg": "HS256", "typ": "JWT", "kid": kid}, payload, secret))
    started = time.monotonic()
    attack(target, tokens, VERIFY_FAILED)
    assert time.monotonic() - started < 10  # no "sleep 10" ran, not even once
    assert listener.connections == 0


def test_kid_plays_no_part_in_choosing_the_key(target, keys):
    """The control for the above: the credential's key verifies, whatever the kid says."""
    gw = target[0]
    for kid in KID_VALUES:
        t = pyjwt.encode({"key": "hs-key"}, SECRET, algorithm="HS256", headers={"kid": kid})
        assert gw.request("GET", "/anything", headers={"Authorization": t})[0] == 200, kid


# ---------------------------------------------------------------- keys named or carried by the token

@pytest.fixture(scope="module")
def attacker():
    """The attacker's own RSA and EC keys, and a self-signed certificate for the RSA one."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(rsa_key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(rsa_key, hashes.SHA256()))
    return {"rsa": rsa_key, "ec": ec_key,
            "rsa_jwk": json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())),
            "ec_jwk": json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())),
            "x5c": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}


def test_jku_and_x5u_are_never_fetched(target, attacker):
    """jwt_tool -X s: the token names a key set or certificate URL the attacker controls."""
    listener = target[2]
    claims = {"key": "rs256-key", "role": "admin"}
    tokens = [pyjwt.encode(claims, attacker["rsa"], algorithm="RS256", headers=extra)
              for extra in ({"jku": listener.url("/jwks.json"), "kid": "jwt_tool"},
                            {"x5u": listener.url("/cert.pem")},
                            {"jku": listener.url("/jwks.json"), "x5u": listener.url("/c.pem")})]
    attack(target, tokens, VERIFY_FAILED)
    time.sleep(0.5)  # a fetch started in the background would have connected by now
    assert listener.connections == 0


def test_embedded_jwk_and_x5c_are_ignored(target, attacker):
    """jwt_tool -X i: the token carries its own public key (jwk) or certificate chain (x5c)."""
    tokens = [
        pyjwt.encode({"key": "rs256-key", "role": "admin"}, attacker["rsa"], algorithm="RS256",
                     headers={"jwk": attacker["rsa_jwk"]}),
        pyjwt.encode({"key": "rs256-key", "role": "admin"}, attacker["rsa"], algorithm="RS256",
                     headers={"x5c": [attacker["x5c"]]}),
        pyjwt.encode({"key": "es256-key", "role": "admin"}, attacker["ec"], algorithm="ES256",
                     headers={"jwk": attacker["ec_jwk"]}),
    ]
    attack(target, tokens, VERIFY_FAILED)


def test_urls_in_any_claim_are_never_fetched(target, keys):
    """jwt_tool's external-interaction scan: a listener URL put into each header claim and
    into common payload claims, the original signature kept."""
    listener = target[2]
    t = genuine(keys, "RS256")
    header, payload, sig = parts(t)
    head, body = t.split(".")[:2]
    tokens = []
    for claim in ("jku", "x5u", "kid", "jwk", "x5c", "x5t", "typ", "cty", "iss", "alg"):
        tokens.append(f"{b64json({**header, claim: listener.url('/h/' + claim)})}.{body}.{sig}")
    for claim in ("iss", "sub", "aud", "jti", "jku", "x5u", "role"):
        tokens.append(f"{head}.{b64json({**payload, claim: listener.url('/p/' + claim)})}.{sig}")
    attack(target, tokens, VERIFY_FAILED)
    time.sleep(0.5)
    assert listener.connections == 0


# ---------------------------------------------------------------- psychic signatures

@pytest.mark.parametrize("alg,size", [("ES256", 32), ("ES384", 48), ("ES512", 66)])
def test_psychic_signature_r_and_s_zero(target, alg, size):
    """CVE-2022-21449: (r, s) = (0, 0) passed Java's ECDSA check for any message and key.
    Raw JWS form (RFC 7518 3.4), the DER form, and r = s = n."""
    n = {"ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
         "ES384": int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                      "581a0db248b0a77aecec196accc52973", 16),
         "ES512": int("01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                      "fa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
                      16)}[alg]
    header = {"alg": alg, "typ": "JWT"}
    payload = {"key": f"{alg.lower()}-key", "role": "admin"}
    tokens = [compact(header, payload, b"\x00" * (2 * size)),
              compact(header, payload, bytes.fromhex("3006020100020100")),  # DER (0, 0)
              compact(header, payload, n.to_bytes(size, "big") * 2)]
    attack(target, tokens, VERIFY_FAILED)


# ---------------------------------------------------------------- crit

def test_crit_header_is_refused(target):
    """RFC 7515 4.1.11: a recipient that does not understand a listed extension must refuse
    the token; fastgw implements none, so any crit refuses it (signature good or not)."""
    payload = {"key": "hs-key", "role": "user"}
    tokens = [hs_signed({"alg": "HS256", **extra}, payload, SECRET.encode()) for extra in (
        {"crit": ["exp"]}, {"crit": ["b64"], "b64": False}, {"crit": []},
        {"crit": ["urn:example:unknown"], "urn:example:unknown": 1}, {"crit": "exp"},
        {"b64": False},
    )]
    attack(target, tokens, VERIFY_FAILED)


def test_the_genuine_tokens_still_pass_after_the_attacks(target, keys):
    """jwt_tool's persistence check: nothing above changed what the gateway accepts."""
    test_the_genuine_tokens_pass(target, keys)
    assert target[2].connections == 0
