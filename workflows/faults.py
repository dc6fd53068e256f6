"""Named fault points, so tests can kill a workflow at an exact step and check that a rerun or a
repair converges.

In production a fault point costs a set lookup. With `ORC_FAULT_POINTS=prs.after_demote` in the
environment, the process SIGKILLs itself when it reaches that point, as a crash would (no
cleanup, no lock release, no finally blocks). Tests running a workflow in-process may instead
register a hook: a coroutine run at that point (to stop a replica's SQL thread at the worst
moment, say), which exercises the same code path without a mock in sight.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Mapping

ENV_VAR = "ORC_FAULT_POINTS"

Hook = Callable[[], Awaitable[None]]

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


class FaultPoints:
    """Where a workflow may be killed or interfered with, by name."""

    def __init__(
        self, *, kill_at: frozenset[str] | None = None, hooks: Mapping[str, Hook] | None = None
    ) -> None:
        if kill_at is None:
            raw = os.environ.get(ENV_VAR, "")
            kill_at = frozenset(p.strip() for p in raw.split(",") if p.strip())
        unknown = (kill_at | frozenset(hooks or {})) - KNOWN_POINTS
        if unknown:
            raise ValueError(f"unknown fault points: {', '.join(sorted(unknown))}")
        self.kill_at = kill_at
        self.hooks = dict(hooks or {})

    async def hit(self, name: str) -> None:
        if name in self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        hook = self.hooks.get(name)
        if hook is not None:
            await hook()
