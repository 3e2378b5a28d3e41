"""The web console (SPEC section 10): static files served by the master at /ui/ on the
admin listener, beside the admin API, which is all the page talks to.

The files are read once, when the admin listener starts, into a table keyed by their
names: a request is answered from that table or not at all, so no spelling of a path
(`..`, percent-encoded or not) can reach a file outside this folder. The page needs
no key; every call it makes to the admin API sends the one the user typed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

FOLDER = Path(__file__).resolve().parent
PREFIX = "/ui/"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
}

# Nothing from another host, no inline script or style, no form posting anywhere, no
# framing: the page runs only its own files and talks only to the admin API beside it.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = (f"content-security-policy: {CSP}\r\n"
           "x-content-type-options: nosniff\r\n"
           "x-frame-options: DENY\r\n"
           "referrer-policy: no-referrer\r\n"
           "cache-control: no-cache\r\n").encode()
NOT_FOUND = (404, b"application/json", b'{"error_msg": "404 Not Found"}', HEADERS)
NOT_ALLOWED = (405, b"application/json", b'{"error_msg": "method not allowed"}',
               HEADERS + b"allow: GET, HEAD\r\n")  # RFC 9110 15.5.6


def load_files(folder: Path = FOLDER) -> dict[str, tuple[bytes, bytes]]:
    """name -> (content type, bytes) of every file of the console, read once."""
    return {path.name: (CONTENT_TYPES[path.suffix], path.read_bytes())
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in CONTENT_TYPES}


class Console:
    """Answers GET under /ui/ from the files read at start; anything else goes
    to `api` (the admin API)."""

    def __init__(self, api, folder: Path = FOLDER):
        self.api = api
        self.files = load_files(folder)

    def admit(self, method: str, target: str, headers: dict):
        """The admin API's check of a request's head (its key). The console needs none,
        and takes no body: anything but a GET or HEAD without one is answered here, so
        that no body comes in without the key."""
        if not _console_path(target):
            return self.api.admit(method, target, headers)
        if method not in ("GET", "HEAD"):
            return NOT_ALLOWED
        if headers.get(b"content-length", b"0") != b"0":
            return 413, b"application/json", b'{"error_msg": "no body here"}', HEADERS
        return None

    async def http(self, method: str, target: str, headers: dict, body: bytes):
        if not _console_path(target):
            return await self.api.http(method, target, headers, body)
        path = target.split("?", 1)[0]
        if path == "/ui":
            return 301, b"text/plain", b"", HEADERS + b"location: /ui/\r\n"
        if method not in ("GET", "HEAD"):
            return NOT_ALLOWED
        name = unquote(path[len(PREFIX):]) or "index.html"
        found = self.files.get(name)
        if found is None:
            return NOT_FOUND
        content_type, data = found
        return 200, content_type, data, HEADERS


def _console_path(target: str) -> bool:
    path = target.split("?", 1)[0]
    return path == "/ui" or path.startswith(PREFIX)
