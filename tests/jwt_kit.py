"""Small pieces the JWT tests share: PEM key pairs, and the side of an exchange the plugin sees."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization


def pem_pair(private_key) -> tuple[str, str]:
    """(private PEM, public PEM) of a `cryptography` private key."""
    private = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


class PluginSide:
    """The part of an exchange the plugin reads and writes (headers, target, the consumer
    it found, dropped headers, a refusal), for calling the plugin in-process."""

    def __init__(self, headers: list, target: bytes = b"/"):
        self.headers, self.target = headers, target
        # as the gateway gives it: a dict when every name is there once (without Host)
        fields = dict(headers)
        fields.pop(b"host", None)
        unique = len(fields) == len([name for name, _ in headers if name != b"host"])
        self.fields = fields if unique else None
        self.consumer, self.skip = None, set()
        self.response, self.keep_alive = None, True

    def drop_header(self, names: frozenset[bytes]) -> None:
        self.fields = None
        self.skip |= names

    def edit_headers(self) -> list:
        self.fields = None
        return self.headers

    def refuse(self, response) -> None:
        self.response, self.keep_alive = response, False
