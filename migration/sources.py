"""Which server a source is read from, now.

An external source is one fixed server. A shard source is whichever tablet of the shard fits
best: the first of its `tablet-types` (default replica, then primary) that has a tablet, staying
on the current tablet while it still fits, so that a reparent elsewhere in the shard costs no
switch. Reading from a replica by default is deliberate: a replica never holds a transaction
that an emergency reparent throws away, a dying primary may.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from migration.errors import SourceUnavailableError, TaskConfigError
from migration.spec import SourceSpec
from migration.store import MigrationStore
from topo.errors import NoNodeError
from topo.records import Tablet, TabletType
from topo.store import TopoStore


@dataclass(frozen=True)
class SourceServer:
    """The server a source resolves to; `alias` is the tablet for a shard source."""

    source_id: str
    host: str
    port: int
    alias: str | None = None
    tablet_type: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        if self.alias:
            return f"{self.alias} ({self.tablet_type}, {self.address})"
        return self.address


async def resolve_source(
    topo: TopoStore,
    mstore: MigrationStore,
    spec: SourceSpec,
    *,
    current: str | None = None,
    avoid: Collection[str] = (),
) -> SourceServer:
    """The server to read `spec` from. `current` is the tablet read from so far (kept while it
    fits); `avoid` lists tablets that just failed (tried last)."""
    if spec.endpoint is not None:
        return SourceServer(spec.source_id, spec.endpoint.host, spec.endpoint.port)
    shard = spec.shard
    if shard is None:
        registered = await mstore.get_source(spec.source_id)
        if registered is None:
            raise TaskConfigError(
                f"unknown source {spec.source_id!r}: not keyspace/shard, no `from`, and not "
                "registered with operate-source create",
                key="source-id",
            )
        return SourceServer(spec.source_id, registered.host, registered.port)
    ks, name = shard
    try:
        shard_rec = await topo.get_shard(ks, name)
    except NoNodeError:
        raise TaskConfigError(
            f"shard {ks}/{name} does not exist in the topology", key="source-id"
        ) from None
    tablets, _unreadable = await topo.shard_tablets(ks, name)
    tablet = choose_tablet(tablets, shard_rec.primary_alias, spec.tablet_types, current, avoid)
    if tablet is None:
        types = ",".join(spec.tablet_types)
        raise SourceUnavailableError(f"shard {ks}/{name} has no tablet of type {types} to read")
    kind = "primary" if tablet.alias == shard_rec.primary_alias else tablet.type.value
    return SourceServer(spec.source_id, tablet.mysql_host, tablet.mysql_port, tablet.alias, kind)


def choose_tablet(
    tablets: list[Tablet],
    primary_alias: str | None,
    types: tuple[str, ...],
    current: str | None,
    avoid: Collection[str],
) -> Tablet | None:
    """Pure choice: the best tablet of the first wanted type that has one; the current tablet
    wins among equals, tablets in `avoid` lose to every other."""
    for wanted in types:
        fits = [t for t in tablets if _kind(t, primary_alias) == wanted]
        if not fits:
            continue
        fits.sort(key=lambda t: (t.alias in avoid, t.alias != current, t.tablet_alias))
        return fits[0]
    return None


def _kind(t: Tablet, primary_alias: str | None) -> str:
    if t.alias == primary_alias:
        return "primary" if t.type == TabletType.PRIMARY else ""
    return t.type.value if t.type in (TabletType.REPLICA, TabletType.RDONLY) else ""
