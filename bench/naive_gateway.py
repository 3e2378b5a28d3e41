"""What a Python developer writes first: aiohttp + jwt.decode per request, an aiohttp client
session (with its own keep-alive pool) to the upstream. A reference point, not a product.

    python bench/naive_gateway.py PORT UPSTREAM_URL SECRET
"""

import sys

import aiohttp
import jwt
from aiohttp import web


def main() -> None:
    port, upstream, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    async def startup(app):
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

    async def handle(request: web.Request) -> web.Response:
        if request.path.startswith("/jwt/"):
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else auth
            try:
                jwt.decode(token, secret, algorithms=["HS256"])
            except jwt.PyJWTError:
                return web.json_response({"message": "JWT token invalid"}, status=401)
        path = "/" + request.path.split("/", 2)[2]
        async with request.app["session"].request(request.method, upstream + path,
                                                  data=await request.read()) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status,
                                content_type=resp.content_type)

    app = web.Application()
    app.on_startup.append(startup)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
