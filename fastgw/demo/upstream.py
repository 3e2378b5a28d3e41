"""A small httpbin-like upstream so the README's walkthrough works offline.

    GET /json          httpbin's sample JSON document
    ANY /anything/...  echoes the request: method, url, args, headers, data, json, origin
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SLIDESHOW = {
    "slideshow": {
        "author": "Yours Truly",
        "date": "date of publication",
        "slides": [
            {"title": "Wake up to WonderWidgets!", "type": "all"},
            {"items": ["Why <em>WonderWidgets</em> are great",
                       "Who <em>buys</em> WonderWidgets"],
             "title": "Overview", "type": "all"},
        ],
        "title": "Sample Slide Show",
    }
}
JSON_BODY = (json.dumps(SLIDESHOW, indent=2) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-upstream"

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if url.path == "/json" and self.command in ("GET", "HEAD"):
            self._send(200, JSON_BODY)
        elif url.path == "/anything" or url.path.startswith("/anything/"):
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            echo = {
                "args": {k: v[0] if len(v) == 1 else v
                         for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                "data": data.decode("utf-8", "replace"),
                "headers": dict(self.headers.items()),
                "json": parsed,
                "method": self.command,
                "origin": self.client_address[0],
                "url": self.path,
            }
            self._send(200, (json.dumps(echo, indent=2) + "\n").encode())
        else:
            self._send(404, b'{"error": "not found"}\n')

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9081)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"demo upstream on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
