"""Named fault points, so tests can kill a process at an exact step and check that a rerun or a
repair converges. Shared by the reparent workflows and the migration engine; each declares its
own point names (`prs.after_demote`, `load.after_chunk`, ...).

In production a fault point costs a set lookup. With `ORC_FAULT_POINTS=prs.after_demote` in the
environment, the process SIGKILLs itself when it reaches that point, as a crash would (no
cleanup, no lock release, no finally blocks). Tests running in-process may instead register a
hook: a coroutine run at that point (to stop a replica's SQL thread at the worst moment, say),
which exercises the same code path without a mock in sight.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Mapping

ENV_VAR = "ORC_FAULT_POINTS"

Hook = Callable[[], Awaitable[None]]


class FaultPoints:
    """Where a process may be killed or interfered with, by name.

    `known` are the names this user of fault points declares. Names from the environment
    belong to one user or another by their prefix (`prs.`, `load.`): a name with a prefix of
    ours that we do not know is a typo and refused; names of other users are left to them.
    """

    def __init__(
        self,
        known: frozenset[str],
        *,
        kill_at: frozenset[str] | None = None,
        hooks: Mapping[str, Hook] | None = None,
    ) -> None:
        prefixes = {p.split(".", 1)[0] for p in known}
        if kill_at is None:
            raw = os.environ.get(ENV_VAR, "")
            named = {p.strip() for p in raw.split(",") if p.strip()}
            kill_at = frozenset(p for p in named if p.split(".", 1)[0] in prefixes)
        unknown = (kill_at | frozenset(hooks or {})) - known
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
