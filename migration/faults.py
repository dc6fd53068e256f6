"""The migration engine's named fault points (the mechanism is `topo.faults`).

Tests SIGKILL a worker at each of them (`ORC_FAULT_POINTS=load.before_checkpoint`) and check
that a rerun, or another worker, converges to a target equal to its sources.
"""

from __future__ import annotations

from collections.abc import Mapping

from topo import faults
from topo.faults import Hook

KNOWN_POINTS = frozenset(
    {
        "load.mid_chunk",  # half of a chunk's rows written, its transaction open
        "load.before_checkpoint",  # a chunk's rows written, its checkpoint row not yet
        "load.after_chunk",  # a chunk committed
        "sync.mid_batch",  # half of a batch's statements applied, its transaction open
        "sync.before_checkpoint",  # a batch applied, the checkpoint not yet moved
        "sync.after_batch",  # a batch committed
        "sync.during_switch",  # reader stopped for a source switch, not yet restarted
        "ddl.before_exec",  # the lock's owner about to run the DDL downstream
        "ddl.after_exec",  # the DDL applied downstream, owner_done not yet recorded
        "ddl.before_resume",  # lock resuming: the hold not yet rewound and released
        "ddl.keeper_mid_transition",  # the leader about to write a lock's next state
    }
)


class FaultPoints(faults.FaultPoints):
    def __init__(
        self, *, kill_at: frozenset[str] | None = None, hooks: Mapping[str, Hook] | None = None
    ) -> None:
        super().__init__(KNOWN_POINTS, kill_at=kill_at, hooks=hooks)
