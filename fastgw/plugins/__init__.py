"""Plugins by name, and the contract each plugin module keeps.

Every plugin module declares:

- `NAME`: what routes and services call it (`jwt-auth`); `PRIORITY`: a route runs its
  plugins from the highest down, as APISIX does (jwt-auth 2510, key-auth 2500).
- `SCHEMA`: its route or service configuration (a `config.types.Obj`), and
  `cross_check(conf, usernames)`, yielding (field, message) for references that do not exist.
- `build(conf, snapshot)`: compiled once per configuration, an object whose `access(ex)`
  runs on each request. It returns None (go on), a `responses.Response` (answer with it), or
  `PENDING`: the plugin will call `ex.resume(result)` later, with None or a Response.
  What it may use of `ex`: `method`, `target` (bytes, origin-form with the query, as it goes
  upstream; it may replace it), `headers` (list of (lower-case name, value) bytes, to read;
  `edit_headers()` returns it to delete or replace entries), `fields` (the same as a dict
  without Host and the fields fastgw reads itself, `fields.READ_BY_GATEWAY`, when each name
  is there once; else None), `route`, `drop_header(names)`,
  `add_header(line)`, `refuse(response)` (answer, then close the connection), and
  `consumer`: an object with `.username` (str) and `.head`
  (the upstream head lines naming it, bytes, e.g. a `credentials.Identity`). A later
  plugin's consumer replaces an earlier one's.
- `UPSTREAM_HEADERS`: the lower-case names of the headers it sets upstream; every client
  copy of any plugin's, under every -/_ spelling, is removed before forwarding.

And may declare:

- `new_state(settings)`: what it keeps across configurations (jwt-auth's verified-token
  cache), made once per worker; `snapshot.state[NAME]`. With it, `COUNTERS`: Prometheus
  counter name (without `_total`) -> (help, a function of the state giving its value).
- A credential type, `CREDENTIAL_TYPE` (a consumer credential's `type`) with
  `CREDENTIAL_SCHEMA`; `SECRET_FIELDS`, what the admin API masks; `default_id(username,
  cred, nth)`, the id of the consumer's nth credential of the type when it names none;
  `generate_secret(cred)`, filling in a missing secret of an unvalidated credential and
  naming the field, or None; `index_credentials(consumers, previous)`, its credentials
  compiled per configuration (`snapshot.credentials[CREDENTIAL_TYPE]`), unchanged ones keeping
  their objects; and optionally `retire(old, new)`, told which ones went (when something
  hangs on a credential: jwt-auth's cached tokens), `issue_token(cred, claims, ttl,
  expires, now)` for `fastgw token` and the admin API, and `token_leeway(cred)`: seconds
  past its `exp` a token of the credential is still accepted (a revocation entry that
  ends at the token's exp is kept that much longer).
"""

from __future__ import annotations

from . import jwt_auth, key_auth

PLUGINS = {module.NAME: module for module in (jwt_auth, key_auth)}
CREDENTIAL_TYPES = {module.CREDENTIAL_TYPE: module for module in PLUGINS.values()
                    if hasattr(module, "CREDENTIAL_TYPE")}
DEFAULT_CREDENTIAL_TYPE = jwt_auth.CREDENTIAL_TYPE  # a credential that names no type
UPSTREAM_HEADERS = frozenset(name for module in PLUGINS.values()
                             for name in module.UPSTREAM_HEADERS)
COUNTERS = {name: help_and_value for module in PLUGINS.values()
            for name, help_and_value in getattr(module, "COUNTERS", {}).items()}
_ISSUING = [kind for kind, module in CREDENTIAL_TYPES.items() if hasattr(module, "issue_token")]
_STATEFUL = [module for module in PLUGINS.values() if hasattr(module, "new_state")]


class _Pending:
    """What `access` returns when it answers later, through `ex.resume(result)`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()


def in_order(plugins: dict[str, dict]) -> list[tuple[str, dict]]:
    """A route's plugins (name -> configuration) in the order they run."""
    return sorted(plugins.items(), key=lambda item: (-PLUGINS[item[0]].PRIORITY, item[0]))


def new_states(settings) -> dict[str, object]:
    """NAME -> state, for the plugins that keep one across configurations."""
    return {module.NAME: module.new_state(settings) for module in _STATEFUL}


def counter_values(states: dict[str, object]) -> dict[str, int]:
    """The plugins' counters, read from their states: what a worker reports."""
    return {name: value(states[module.NAME]) for module in _STATEFUL
            for name, (_, value) in getattr(module, "COUNTERS", {}).items()}


def credential_type(cred: dict):
    """The module of a credential's type (a validated credential, or a raw one from the
    admin API); None for a type no plugin defines."""
    kind = cred.get("type", DEFAULT_CREDENTIAL_TYPE)
    return CREDENTIAL_TYPES.get(kind) if isinstance(kind, str) else None


def longest_leeway(conf: dict) -> float:
    """The most seconds past its `exp` that any credential of the (validated)
    configuration accepts a token (see `token_leeway`)."""
    return max((module.token_leeway(cred) for consumer in conf.get("consumers") or ()
                for cred in consumer["credentials"]
                if hasattr(module := CREDENTIAL_TYPES[cred["type"]], "token_leeway")),
               default=0)


def issues_tokens(cred: dict) -> bool:
    """Whether tokens are issued for a (validated) credential's type."""
    return cred["type"] in _ISSUING


def issue_token(cred: dict, claims: dict, ttl: int | None = None,
                expires: float | None = None, now: float | None = None) -> str:
    """A token for a validated credential; ValueError saying why when there is none."""
    if not issues_tokens(cred):
        raise ValueError(f"credential {cred['id']!r} is of type {cred['type']}, which has no "
                         f"tokens: they are issued for {' and '.join(_ISSUING)} credentials")
    return CREDENTIAL_TYPES[cred["type"]].issue_token(cred, claims, ttl, expires, now)
