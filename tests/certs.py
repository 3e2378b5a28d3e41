"""A throw-away certificate authority for the TLS tests: nothing is committed, every run
makes its own CA and server certificates with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


@dataclass
class Pair:
    cert: bytes  # PEM: the server certificate, then the CA's (a chain)
    key: bytes  # PEM, unencrypted PKCS#8
    serial: int

    def write(self, folder: Path, name: str = "server") -> tuple[Path, Path]:
        cert, key = folder / f"{name}.crt", folder / f"{name}.key"
        cert.write_bytes(self.cert)
        key.write_bytes(self.key)
        key.chmod(0o600)
        return cert, key


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    def __init__(self, name: str = "fastgw test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, folder: Path) -> Path:
        path = folder / "ca.pem"
        path.write_bytes(self.pem)
        return path

    def issue(self, common_name: str = "localhost",
              names: tuple[str, ...] = ("localhost", "127.0.0.1"), key=None) -> Pair:
        """A server certificate for `names` (DNS names or IP addresses), signed by this CA;
        for a new P-256 key unless `key` is given."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        sans = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        now = datetime.datetime.now(datetime.timezone.utc)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.name)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - DAY).not_valid_after(now + 7 * DAY)
                .add_extension(x509.SubjectAlternativeName(sans), False)
                .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False)
                .sign(self.key, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.pem
        return Pair(chain, _key_pem(key), serial)


def weak_key():
    """An RSA key too small for OpenSSL's default security level (2)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def other_key() -> bytes:
    """A private key that belongs to no certificate."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))


def encrypted(key_pem: bytes, password: bytes = b"secret") -> bytes:
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(password))


def serial_of(der: bytes) -> int:
    """The serial number of a DER certificate (what SSLSocket.getpeercert(True) gives)."""
    return x509.load_der_x509_certificate(der).serial_number
