"""TLS termination: the certificate pair, the server context, and the HTTPS listeners.

The master reads the pair (`read_pair`), checks it whole, and sends the very bytes it
checked to every worker over the worker's pipe, at spawn and after each SIGHUP that
brought a good pair: a worker never reads the files itself, so a worker started after
a crash serves the pair in force even if the files were broken since, and every worker
serves the same one.

A worker's `TLSTerminator` holds the `ssl.SSLContext` that new handshakes get. An asyncio
server is bound to one context for its lifetime, so HTTPS listening sockets do not go to
`loop.create_server`: a `TLSListener` accepts from the shared socket itself and hands each
connection to `loop.connect_accepted_socket` with the context in force at that moment.
A new pair is a new context, built and checked before it replaces the old one (one
assignment, no context is ever changed while in use); a connection keeps the context it
was accepted with, so established connections are not cut. The same per-connection
await is what tells a failed handshake from a good one: it raises, and the failure is
counted (`fastgw_tls_handshake_failures_total`) without the request path ever seeing the
connection: the protocol's `connection_made` is called only after a good handshake.
(A server context's `sni_callback` could switch contexts too, OpenSSL 3 calls it even
when the client sends no SNI, but a server tells nobody of a failed handshake. Accepting
here costs no more than libuv's accept: within noise in `make bench`'s scenario 10.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
import ssl
import stat
import tempfile
from typing import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

log = logging.getLogger("fastgw")

MAX_PEM_BYTES = 1 << 20  # a certificate chain or a key; anything larger is not one
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ACCEPT_RETRY = 0.1  # seconds before accepting again when out of descriptors
# accept(2) on Linux: errors of a connection that went away while it waited in the queue,
# "to be treated like EAGAIN by retrying"
_GONE_BEFORE_ACCEPT = frozenset((errno.EPROTO, errno.ENOPROTOOPT, errno.ENETDOWN, errno.ENONET,
                                 errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                                 errno.ENETUNREACH, errno.EPERM))
# Closing a TLS connection flushes what is still buffered, sends close_notify and then
# waits for the client's, all within this many seconds (uvloop's default is 30). Many
# pooled clients never answer an idle connection's close_notify; HAProxy and nginx do not
# wait for it at all, and neither does SIGTERM's drain (skip_close_notify). Five seconds
# still lets the last 320 KiB or so (the write buffers) reach a 64 KB/s client.
SHUTDOWN_TIMEOUT = 5.0


def skip_close_notify(transport: asyncio.BaseTransport) -> None:
    """A TLS connection being closed, its close_notify sent: close it without waiting for
    the client's (up to SHUTDOWN_TIMEOUT), as SIGTERM's drain must not; nothing for a plain
    one, or for one still flushing its answer (whose close_notify is not sent yet: asked
    again, it is done once it is).

    The socket is shut for reading, so the read that waits for the client's close_notify
    meets the end of the stream instead, and the TLS layer closes the connection at once
    (after the bytes still buffered below it: nothing sent is lost). The descriptor is the
    transport's own, borrowed for the call."""
    if transport.get_extra_info("sslcontext") is None or transport.get_write_buffer_size():
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        borrowed = socket.socket(fileno=sock.fileno())
    except OSError:  # closed meanwhile
        return
    try:
        borrowed.shutdown(socket.SHUT_RD)
    except OSError:  # the client is gone already: the end is on its way
        pass
    finally:
        borrowed.detach()


class PairError(ValueError):
    """The certificate and key cannot be served; one line naming the setting at fault."""


@dataclasses.dataclass(frozen=True)
class CertificatePair:
    # Neither is shown by repr: a certificate file may hold the key too (HAProxy's style).
    cert: bytes = dataclasses.field(repr=False)  # PEM chain, the server's certificate first
    key: bytes = dataclasses.field(repr=False)  # PEM private key: never logged
    summary: str = ""  # subject and expiry, for the log

    def to_message(self) -> dict:
        """For the worker's pipe (JSON); latin-1 carries any byte unchanged."""
        return {"cert": self.cert.decode("latin-1"), "key": self.key.decode("latin-1"),
                "summary": self.summary}

    @classmethod
    def from_message(cls, message: dict) -> "CertificatePair":
        return cls(message["cert"].encode("latin-1"), message["key"].encode("latin-1"),
                   message["summary"])


def read_pair(cert_path: str, key_path: str) -> CertificatePair:
    """Read and check FASTGW_TLS_CERT and FASTGW_TLS_KEY; PairError says what is wrong."""
    cert_pem = _read("FASTGW_TLS_CERT", cert_path)
    key_pem = _read("FASTGW_TLS_KEY", key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise PairError(f"FASTGW_TLS_CERT: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise PairError(f"FASTGW_TLS_KEY: {key_path} is encrypted; fastgw needs the key "
                        "unencrypted (protect the file with mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PairError(f"FASTGW_TLS_KEY: {key_path} holds no PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise PairError(f"FASTGW_TLS_KEY: {key_path} does not match the certificate in "
                        f"{cert_path}")
    leaf = chain[0]
    subject = leaf.subject.rfc4514_string() or "(no subject)"
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()[:16]  # tells two pairs apart
    pair = CertificatePair(cert_pem, key_pem, f"{subject}, valid until "
                                              f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, "
                                              f"SHA-256 {fingerprint}")
    try:
        server_context(pair)  # what OpenSSL itself says (key too small, weak signature, ...)
    except OSError as exc:  # ssl.SSLError is one
        reason = (getattr(exc, "reason", None) or str(exc)).replace("_", " ").lower()
        raise PairError(f"FASTGW_TLS_CERT: {cert_path} cannot be served: {reason}") from None
    return pair


def _read(setting: str, path: str) -> bytes:
    """A regular file's bytes: never a FIFO or a device, whose read may wait for ever (and
    the master with it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PairError(f"{setting}: {path} is not a regular file")
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise PairError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise PairError(f"{setting}: {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def server_context(pair: CertificatePair) -> ssl.SSLContext:
    """TLS 1.2 and 1.3, ALPN http/1.1, no compression, no renegotiation.

    The options are those of ssl.create_default_context(Purpose.CLIENT_AUTH), without the
    system CA store it loads: no client certificate is asked for, and each SIGHUP builds a
    context. TLS 1.2 takes forward-secret AEAD suites only, the server's order preferred
    (Mozilla's "intermediate" profile; Python's default list has CBC ones too); TLS 1.3
    has only those.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE)
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    _load_pair(context, pair)
    return context


def _load_pair(context: ssl.SSLContext, pair: CertificatePair) -> None:
    """load_cert_chain reads only files: give it the bytes in memory-backed ones."""
    if hasattr(os, "memfd_create"):  # Linux: the key never touches a disk
        fds = [os.memfd_create("fastgw-tls", os.MFD_CLOEXEC) for _ in range(2)]
        try:
            for fd, data in zip(fds, (pair.cert, pair.key)):
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}",
                                    password=_no_password)
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="fastgw-tls-") as folder:  # mode 0700
        paths = [os.path.join(folder, name) for name in ("cert.pem", "key.pem")]
        for path, data in zip(paths, (pair.cert, pair.key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
        context.load_cert_chain(*paths, password=_no_password)


def _no_password() -> bytes:
    """Without a callback OpenSSL would ask for an encrypted key's password on the terminal."""
    raise ssl.SSLError("the private key is encrypted")


class TLSTerminator:
    """One worker's TLS state: the context new handshakes get, and how long one may take."""

    def __init__(self, pair: CertificatePair, handshake_timeout: float):
        self.context = server_context(pair)
        self.summary = pair.summary
        self.handshake_timeout = handshake_timeout

    def replace(self, pair: CertificatePair) -> bool:
        """Serve `pair` to new handshakes; established connections keep theirs."""
        try:
            context = server_context(pair)
        except OSError as exc:  # the master checked this pair: not expected
            log.error("TLS certificate not replaced, keeping %s: %s", self.summary, exc)
            return False
        self.context, self.summary = context, pair.summary
        return True

    def listen(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol],
               stats, accept_batch: int) -> "TLSListener":
        return TLSListener(self, sock, protocol_factory, stats, accept_batch)


class TLSListener:
    """Accepts from one HTTPS listening socket shared with the other workers.

    The socket is watched for readability (as libuv watches a plain one); each turn
    takes up to `accept_batch` connections, as a plain listener does after a long turn
    (server.ACCEPT_BATCH): a handshake costs far more than the accept. `close` stops
    accepting, as `asyncio.Server.close` does.
    """

    def __init__(self, terminator: TLSTerminator, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.Protocol], stats, accept_batch: int):
        self.terminator = terminator
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.stats = stats
        self.accept_batch = accept_batch
        self.loop = asyncio.get_running_loop()
        self.handshakes: set[asyncio.Task] = set()  # held until done (the loop keeps weak refs)
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self.accept_batch):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it, or the queue is empty
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _GONE_BEFORE_ACCEPT:
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the queue stays readable, so step aside a moment
                    # instead of spinning (libuv does the same for plain listeners).
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(ACCEPT_RETRY, self._resume)
                    return
                raise
            task = self.loop.create_task(self._handshake(conn))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _handshake(self, conn: socket.socket) -> None:
        terminator = self.terminator
        try:
            transport, _ = await self.loop.connect_accepted_socket(
                self.protocol_factory, conn, ssl=terminator.context,
                ssl_handshake_timeout=terminator.handshake_timeout,
                ssl_shutdown_timeout=SHUTDOWN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - every way a handshake fails is one failure
            self.stats.tls_handshake_failures += 1
            log.debug("TLS handshake failed: %s %s", type(exc).__name__, exc)
            return
        if transport.get_extra_info("ssl_object") is None:  # closed before it finished
            self.stats.tls_handshake_failures += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
