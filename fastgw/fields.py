"""Request fields that fastgw reads itself from a plain request's fields dict, named once
for the request path (server.py) and for the plugins that read `ex.fields`."""

# A request that is plain but for these (server.ClientConnection._usual_fields, and
# "Connection: keep-alive" alone: _plain_without_keep_alive) is forwarded from its fields
# dict with them deleted from it: a plugin finds them in `ex.headers`, never in `ex.fields`.
# What a proxy in front says it saw or routed, which no client may claim (relay.REQUEST_SKIP):
# dropped from the fields dict too, so a request behind a proxy that adds them (AWS ALB and
# Traefik send X-Forwarded-Port) stays plain.
SAID_BY_PROXY = frozenset((b"forwarded", b"x-forwarded-port", b"x-forwarded-prefix",
                           b"x-forwarded-ssl", b"x-forwarded-scheme", b"x-forwarded-server",
                           b"x-original-url", b"x-rewrite-url"))
READ_BY_GATEWAY = frozenset((b"connection", b"content-length", b"x-forwarded-for",
                             b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip",
                             *SAID_BY_PROXY))
