"""A validated configuration compiled into the immutable structures requests use."""

from __future__ import annotations

from ..plugins import CREDENTIAL_TYPES, PLUGINS, in_order
from ..routing import Route, RouteTable
from ..upstream import PoolRegistry, Upstream


class Snapshot:
    """Everything one configuration revision needs at request time. Swapped whole;
    an in-flight request keeps the objects it started with. `state` is what plugins keep
    across revisions (plugin name -> state); `credentials` each credential type's index."""

    def __init__(self, conf: dict, revision: int, pools: PoolRegistry,
                 state: dict[str, object], previous: "Snapshot | None" = None):
        self.conf = conf
        self.revision = revision
        self.state = state
        self.credentials = {
            kind: module.index_credentials(
                conf["consumers"], previous.credentials.get(kind) if previous else None)
            for kind, module in CREDENTIAL_TYPES.items()}
        entries = []
        # each pool's settings, put in force by configure_pools once this snapshot is whole
        # (the schema has checked that the services sharing a node agree on them)
        self._pool_settings = {}
        for service in conf["services"]:
            upstream = Upstream(service["upstream"], pools)
            settings = (service["upstream"]["keepalive_pool"],
                        service["upstream"]["max_connections"])
            self._pool_settings.update((node.pool, settings) for node in upstream.nodes)
            prefix = service["path_prefix"].rstrip("/")
            strip = len(prefix) if service["strip_path_prefix"] else 0
            for route_conf in service["routes"]:
                plugins = {**service["plugins"], **route_conf["plugins"]}
                route = Route(service["name"], route_conf["name"], route_conf["methods"],
                              route_conf["priority"], strip, upstream,
                              tuple(PLUGINS[name].build(pconf, self)
                                    for name, pconf in in_order(plugins)))
                for path in route_conf["paths"]:
                    entries.append((service["hosts"], prefix + path, route))
        self.router = RouteTable.build(entries)
        self.routes = self.router.memo  # what requests seen before resolve to
        self.resolve = self.router.resolve
        self.pools_in_use = set(self._pool_settings)

    def configure_pools(self) -> None:
        """Give the pools this snapshot uses its settings: only once it was built whole, so
        that a configuration that fails to compile leaves the pools as they were."""
        for pool, (keepalive_pool, max_connections) in self._pool_settings.items():
            pool.configure(keepalive_pool, max_connections)

    def retire(self, older: "Snapshot") -> None:
        """Called once this snapshot replaced `older`: void what no longer exists."""
        for kind, module in CREDENTIAL_TYPES.items():
            retire = getattr(module, "retire", None)  # for types with state hanging on them
            if retire is not None:
                retire(older.credentials[kind], self.credentials[kind])
