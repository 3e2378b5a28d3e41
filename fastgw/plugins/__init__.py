"""Plugins by name. A plugin module has SCHEMA, cross_check() and build(conf, snapshot).

A module that also defines a credential type (CREDENTIAL_SCHEMA, index_credentials())
is listed in CREDENTIAL_TYPES under the `type` a consumer's credential names.
"""

# What a plugin's access step returns when it must wait: it calls ex.resume() later.
PENDING = object()

# Header fields plugins set upstream: a client's copy is never forwarded.
UPSTREAM_HEADERS = frozenset((b"x-consumer-username", b"x-credential-identifier"))

from . import jwt_auth  # noqa: E402

PLUGINS = {"jwt-auth": jwt_auth}
CREDENTIAL_TYPES = {"jwt-auth": jwt_auth}
