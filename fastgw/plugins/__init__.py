"""Plugins by name. A plugin module has SCHEMA, cross_check() and build(conf, snapshot).

A module that also defines a credential type (CREDENTIAL_SCHEMA, index_credentials())
is listed in CREDENTIAL_TYPES under the `type` a consumer's credential names.
"""

from . import jwt_auth

PLUGINS = {"jwt-auth": jwt_auth}
CREDENTIAL_TYPES = {"jwt-auth": jwt_auth}
