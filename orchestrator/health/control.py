"""Pausing automatic recovery at runtime: globally, per keyspace, per shard.

An operator about to do something the health checks would fight (a manual switchover, a
network change, a restore) pauses recovery, and resumes it afterwards:

    orchestrator ctl SetRecoveries --disable --reason "network maintenance"      # everything
    orchestrator ctl SetRecoveries --disable commerce --reason "..."            # one keyspace
    orchestrator ctl SetRecoveries --disable commerce/0 --reason "..."          # one shard
    orchestrator ctl SetRecoveries --enable [commerce[/0]]

Where it is kept (etcd, so every instance and the next leader see it at once):

- a keyspace's pause is its record's `auto_recovery` field (false: paused), the switch the
  Keyspace record always had; who paused it and why go with the global and shard pauses in
- one key, `{root}/global/recovery_control`: `{"global": Pause|null, "keyspaces": {ks: Pause},
  "shards": {"ks/shard": Pause}}`, written by compare-and-swap.

While paused, problems are still analysed and reported (`/api/v1/health`, `GetRecoveries`), and
each recovery that would have run is recorded as blocked with the pause's reason.
`disable_active_reparents` and the `recoveries_enabled` setting are separate, static switches.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from topo.errors import BadVersionError, NodeExistsError
from topo.records import Keyspace
from topo.store import TopoStore
from workflows.common import iso8601


@dataclass(frozen=True)
class Pause:
    """Who paused recovery, when, and why."""

    reason: str
    by: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "at": iso8601(self.at),
                "at_epoch": self.at}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Any) -> Pause | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d.get("reason", "")), str(d.get("by", "")), float(d.get("at_epoch", 0)))
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"by {self.by or 'someone'} at {iso8601(self.at)}: {self.reason or 'no reason'}"


@dataclass(frozen=True)
class RecoveryControl:
    """The stored pauses (keyspace pauses themselves are the keyspaces' `auto_recovery`)."""

    global_pause: Pause | None = None
    keyspaces: dict[str, Pause] = field(default_factory=dict)
    shards: dict[str, Pause] = field(default_factory=dict)
    revision: int = 0

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "global": self.global_pause.to_dict() if self.global_pause else None,
                "keyspaces": {k: p.to_dict() for k, p in sorted(self.keyspaces.items())},
                "shards": {k: p.to_dict() for k, p in sorted(self.shards.items())},
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, revision: int) -> RecoveryControl:
        try:
            d = json.loads(raw)
        except ValueError:
            d = {}
        if not isinstance(d, dict):
            d = {}

        def pauses(v: Any) -> dict[str, Pause]:
            if not isinstance(v, dict):
                return {}
            return {k: p for k, raw in v.items() if (p := Pause.from_dict(raw)) is not None}

        return cls(Pause.from_dict(d.get("global")), pauses(d.get("keyspaces")),
                   pauses(d.get("shards")), revision)  # fmt: skip

    def paused(
        self, keyspace: str, shard: str, keyspace_rec: Keyspace | None
    ) -> tuple[str, str] | None:
        """(scope, reason) if automatic recovery of this shard is paused, else None."""
        if self.global_pause is not None:
            return "global", f"automatic recovery is paused globally {self.global_pause.describe()}"
        if keyspace_rec is not None and not keyspace_rec.auto_recovery:
            who = self.keyspaces.get(keyspace)
            return "keyspace", f"automatic recovery is off for keyspace {keyspace} " + (
                f"(paused {who.describe()})" if who else "(auto_recovery=false)"
            )
        who = self.shards.get(f"{keyspace}/{shard}")
        if who is not None:
            return "shard", f"automatic recovery is paused for shard {keyspace}/{shard} " + (
                who.describe()
            )
        return None

    def to_dict(self, keyspaces: list[Keyspace]) -> dict[str, Any]:
        """What `/api/v1/health` shows: every pause in force, keyspaces from their records."""
        return {
            "global": self.global_pause.to_dict() if self.global_pause else None,
            "keyspaces": {
                k.name: (self.keyspaces[k.name].to_dict() if k.name in self.keyspaces
                         else {"reason": "auto_recovery=false", "by": "", "at": None})
                for k in sorted(keyspaces, key=lambda k: k.name) if not k.auto_recovery
            },
            "shards": {k: p.to_dict() for k, p in sorted(self.shards.items())},
        }  # fmt: skip


def control_key(store: TopoStore) -> str:
    return f"{store.root}/global/recovery_control"


async def load(store: TopoStore) -> RecoveryControl:
    kv = await store.kv.get(control_key(store))
    if kv is None:
        return RecoveryControl()
    return RecoveryControl.from_json(kv.value, kv.mod_revision)


async def set_recoveries(
    store: TopoStore,
    *,
    enable: bool,
    keyspace: str | None = None,
    shard: str | None = None,
    reason: str = "",
    by: str = "",
) -> RecoveryControl:
    """Pause (enable=False) or resume recovery for everything, a keyspace or a shard."""
    pause = None if enable else Pause(reason, by, time.time())
    if keyspace is not None and shard is None:
        # The keyspace's own switch, in its record (a typo is a NotFound, before anything).
        await store.update_keyspace_fields(
            keyspace,
            lambda k: None if k.auto_recovery == enable
            else dataclasses.replace(k, auto_recovery=enable),
        )  # fmt: skip
    elif keyspace is not None and shard is not None:
        await store.get_shard(keyspace, shard)

    def change(c: RecoveryControl) -> RecoveryControl:
        if keyspace is None:
            return dataclasses.replace(c, global_pause=pause)
        scope = c.keyspaces if shard is None else c.shards
        name = keyspace if shard is None else f"{keyspace}/{shard}"
        updated = {k: v for k, v in scope.items() if k != name}
        if pause is not None:
            updated[name] = pause
        if shard is None:
            return dataclasses.replace(c, keyspaces=updated)
        return dataclasses.replace(c, shards=updated)

    key = control_key(store)
    for _ in range(20):
        current = await store.kv.get(key)
        control = (
            RecoveryControl() if current is None
            else RecoveryControl.from_json(current.value, current.mod_revision)
        )  # fmt: skip
        changed = change(control)
        try:
            if current is None:
                written = await store.kv.create(key, changed.to_json())
            else:
                written = await store.kv.update(key, changed.to_json(), current.mod_revision)
        except (NodeExistsError, BadVersionError):
            continue
        return dataclasses.replace(changed, revision=written.mod_revision)
    raise BadVersionError(f"{key} (too many concurrent changes, try again)", 0)
