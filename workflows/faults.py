"""The reparent workflows' named fault points (the mechanism is `topo.faults`)."""

from __future__ import annotations

from collections.abc import Mapping

from topo import faults
from topo.faults import ENV_VAR, Hook

__all__ = ["ENV_VAR", "KNOWN_POINTS", "FaultPoints", "Hook"]

KNOWN_POINTS = frozenset(
    {
        "isp.after_promote",
        "isp.after_journal",
        "prs.before_demote",
        "prs.after_demote",
        "prs.after_promote",
        "prs.after_topology",
        "ers.after_stop_io",
        "ers.before_promote",
        "ers.after_promote",
        "ers.after_topology",
        "ter.after_verify",
        "ter.after_tablets",
    }
)


class FaultPoints(faults.FaultPoints):
    """Fault points of the reparent workflows."""

    def __init__(
        self, *, kill_at: frozenset[str] | None = None, hooks: Mapping[str, Hook] | None = None
    ) -> None:
        super().__init__(KNOWN_POINTS, kill_at=kill_at, hooks=hooks)
