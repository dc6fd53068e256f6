"""What runs now: processes found in /proc by their command line or environment.

`local down`, `local stop|kill|restart` and the benchmarks find a cluster's processes this way
instead of trusting a pid recorded when they were started: a server restarted by a drill, a test
or a benchmark has another pid, and a recorded pid may since belong to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Set in the environment of the orchestrator service that `local up` starts: the cluster's
# directory, so the service is found again even after it was restarted under another pid.
LOCAL_DIR_ENV = "ORCHESTRATOR_LOCAL_DIR"


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else "?"

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


def processes() -> Iterator[Proc]:
    """Every live process (zombies and kernel threads left out) other than this one."""
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                raw = f.read()
        except (OSError, IndexError):
            continue
        if state in ("Z", "X") or not raw:
            continue
        argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0"))
        yield Proc(int(entry.name), argv)


def environ_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def with_arg(*args: str) -> list[Proc]:
    """Processes whose command line contains `args` as consecutive arguments, or as one
    `--flag=value` argument when two are given."""
    joined = "=".join(args) if len(args) == 2 else None
    out = []
    for p in processes():
        n = len(args)
        if any(p.argv[i : i + n] == args for i in range(len(p.argv) - n + 1)) or (
            joined is not None and joined in p.argv
        ):
            out.append(p)
    return out


def using_dir(directory: Path) -> list[Proc]:
    """Processes whose command line names a path inside `directory`, or that carry it in
    LOCAL_DIR_ENV: everything a local cluster in that directory runs."""
    d = str(Path(directory).absolute())
    prefix = d.rstrip("/") + "/"
    out = []
    for p in processes():
        if any(prefix in a for a in p.argv) or environ_of(p.pid).get(LOCAL_DIR_ENV) == d:
            out.append(p)
    return out


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def stop_pids(pids: list[int], timeout: float = 10.0, *, kill: bool = False) -> None:
    """SIGTERM (SIGKILL with `kill`) every pid, SIGKILL what is left after `timeout` seconds,
    and return once all are gone (reaping our own children)."""
    sig = signal.SIGKILL if kill else signal.SIGTERM
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        left = [p for p in pids if alive(p)]
        if not left:
            return
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                raise RuntimeError(f"processes {left} survived SIGKILL for {timeout:g}s")
            sig = signal.SIGKILL
            deadline = time.monotonic() + timeout
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        await asyncio.sleep(0.02)
