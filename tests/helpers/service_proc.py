"""The orchestrator service as a separate process (`python -m orchestrator serve`), and the CLI
(`python -m orchestrator ctl`) talking to it, for tests that SIGKILL the service for real.

    proc = await ServiceProc.start(shard, log_path, env={"ORC_FAULT_POINTS": "prs.after_demote"})
    await proc.wait_leader()
    ctl = await start_ctl(proc.url, "PlannedReparentShard", "commerce/0", "--new-primary", "x")
    rc = await proc.wait_exit(30)      # -9: killed at the fault point

Settings come from `ORC_*` environment variables (see `orchestrator.settings`); `FAST` are the
quick health settings of the fault tests. Logs (JSON lines) go to `log_path`, which the tests
quote when something does not converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.fixtures_cluster import Shard

REPO = Path(__file__).resolve().parents[2]

FAST = {
    "ORC_HEALTH_INTERVAL_S": "0.3",
    "ORC_HEALTH_TIMEOUT_S": "0.25",
    "ORC_LOCK_TTL_S": "3",
    "ORC_ELECTION_TTL_S": "2",
    "ORC_RECOVERY_BLOCK_S": "1",
}


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment without any ORC_* variable of its own, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    return {**base, **extra}


@dataclass
class ServiceProc:
    proc: asyncio.subprocess.Process
    url: str
    log_path: Path
    root: str
    started_at: float  # monotonic
    # Set once the test waits for the process to exit (a fault point, a SIGKILL of its own):
    # any other exit is the service dying during the test, which `stop()` reports.
    exit_expected: bool = False

    @classmethod
    async def start(
        cls, shard: Shard, log_path: Path, *, env: dict[str, str] | None = None
    ) -> ServiceProc:
        """Start `orchestrator serve` for `shard`; returns once /readyz is 200.

        The child binds port 0 itself and logs the port it got ("HTTP API listening"), which
        is read back from its log: no port is chosen here and bound later by someone else."""
        creds = shard.env.creds
        root = shard.state.spec.root
        full_env = _clean_env(
            {"ORC_MYSQL_USER": creds.user, "ORC_MYSQL_PASSWORD": creds.password,
             **FAST, **(env or {})}
        )  # fmt: skip
        args = [sys.executable, "-m", "orchestrator", "serve",
                "--etcd", ",".join(shard.state.etcd_endpoints), "--root", root,
                "--listen", "127.0.0.1:0"]  # fmt: skip
        started = time.monotonic()
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as logf:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=REPO, env=full_env, stdout=logf, stderr=logf,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        sp = cls(proc, "", log_path, root, started)
        try:
            port = await sp._wait_port(log_offset)
            sp.url = f"http://127.0.0.1:{port}"
            await sp._wait_ready()
        except BaseException:
            sp.exit_expected = True  # the start-up error says why
            await sp.stop()
            raise
        return sp

    async def _wait_port(self, log_offset: int, timeout: float = 30) -> int:
        """The port the child logged it listens on (its log from `log_offset` on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"orchestrator serve exited (rc {self.proc.returncode}):\n{self.log_tail(3000)}"
                )
            with open(self.log_path, "rb") as f:
                f.seek(log_offset)
                for line in f.read().decode(errors="replace").splitlines():
                    with contextlib.suppress(ValueError, AttributeError):
                        ev = json.loads(line)
                        if ev.get("event") == "HTTP API listening" and ev.get("port"):
                            return int(ev["port"])
            await asyncio.sleep(0.05)
        raise RuntimeError(
            f"orchestrator serve logged no port after {timeout}s:\n{self.log_tail()}"
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no log: {e})"

    async def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"orchestrator serve exited (rc {self.proc.returncode}):\n"
                        f"{self.log_tail(3000)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)
                    ) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"orchestrator serve not ready after {timeout}s:\n{self.log_tail()}")

    async def wait_leader(self, shard: Shard, timeout: float = 15) -> None:
        """Until this process holds the leader election key (it runs the recoveries)."""
        key = f"{self.root}/global/election"
        deadline = time.monotonic() + timeout
        while True:
            kv = await shard.store.kv.get(key)
            if kv is not None:
                with contextlib.suppress(ValueError):
                    if json.loads(kv.value).get("pid") == self.pid:
                        return
            if self.proc.returncode is not None:
                raise RuntimeError(f"service exited (rc {self.proc.returncode}) before leading")
            if time.monotonic() > deadline:
                raise AssertionError(f"service pid {self.pid} not leader after {timeout}s")
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float) -> int | None:
        """The return code once the process has exited; None if still running after `timeout`."""
        self.exit_expected = True
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), timeout)
        return None

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it lingers. A process that already exited
        without the test waiting for it died during the test: AssertionError with its log."""
        if self.proc.returncode is not None:
            if not self.exit_expected:
                self.exit_expected = True  # reported once
                raise AssertionError(
                    f"orchestrator serve (pid {self.pid}) died during the test "
                    f"(rc {self.proc.returncode}):\n{self.log_tail()}"
                )
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        if await self.wait_exit(10) is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def start_ctl(url: str, *args: str, log_path: Path) -> asyncio.subprocess.Process:
    """`python -m orchestrator ctl --server URL ARGS...`, output appended to `log_path`."""
    with open(log_path, "ab") as logf:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "ctl", "--server", url, *args,
            cwd=REPO, env=_clean_env({}), stdout=logf, stderr=logf,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip


async def reap(proc: asyncio.subprocess.Process, timeout: float = 10) -> int:
    """Wait for a child (killing it past `timeout`); its return code."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await proc.wait()
