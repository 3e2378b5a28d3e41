"""Request fields that fastgw reads itself from a plain request's fields dict, named once
for the request path (server.py) and for the plugins that read `ex.fields`."""

# A request that is plain but for these (server.ClientConnection._usual_fields, and
# "Connection: keep-alive" alone: _plain_without_keep_alive) is forwarded from its fields
# dict with them deleted from it: a plugin finds them in `ex.headers`, never in `ex.fields`.
READ_BY_GATEWAY = frozenset((b"connection", b"content-length", b"x-forwarded-for",
                             b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"))
