"""Starting and stopping etcd servers (Debian's etcd-server) on loopback for the local cluster
and the tests: a single member, or a small cluster for fault tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.local.ports import free_port


class LaunchError(RuntimeError):
    """A server process could not be started or did not become ready."""


@dataclass
class EtcdServer:
    """One etcd member started by us. `pid` is 0 when it is stopped."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    pid: int
    log_path: Path
    initial_cluster: str
    # Identical for all members of one cluster (members with different tokens refuse each other).
    cluster_token: str = ""

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    def refresh(self) -> bool:
        """Point ``pid`` at the member running now on this data dir (found in /proc, so a
        member restarted by another process is found too); True if one runs."""
        from orchestrator.local import procs

        found = procs.with_arg("--data-dir", str(self.data_dir))
        self.pid = found[0].pid if found else 0
        return self.pid != 0

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        kill_and_reap(self.pid, signal.SIGKILL)
        self.pid = 0

    async def stop(self, timeout: float = 10.0) -> None:
        await terminate(self.pid, timeout)
        self.pid = 0

    async def start_again(self) -> None:
        """Restart with the same data dir and ports (a member coming back)."""
        self.pid = await _spawn(self, new_cluster=False)
        await wait_etcd_ready(self, timeout=20)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d["log_path"] = str(self.log_path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EtcdServer:
        return cls(**{**d, "data_dir": Path(d["data_dir"]), "log_path": Path(d["log_path"])})


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise LaunchError("etcd is not installed: apt-get install etcd-server (or run make setup)")
    return path


BIND_ATTEMPTS = 3


async def start_etcd(base_dir: Path, *, members: int = 1) -> list[EtcdServer]:
    """Start `members` etcd servers forming one cluster; returns when all answer.

    A free port is picked before etcd binds it, so another process may take it meanwhile
    (seen once in a full test run: "bind: address already in use"): then the cluster is
    started again on new ports, up to `BIND_ATTEMPTS` times."""
    for attempt in range(BIND_ATTEMPTS):
        try:
            return await _start_etcd_once(base_dir, members)
        except LaunchError as e:
            if "address already in use" not in str(e) or attempt == BIND_ATTEMPTS - 1:
                raise
            for i in range(members):
                shutil.rmtree(base_dir / f"etcd{i}", ignore_errors=True)
                (base_dir / f"etcd{i}.log").unlink(missing_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover


async def _start_etcd_once(base_dir: Path, members: int) -> list[EtcdServer]:
    base_dir.mkdir(parents=True, exist_ok=True)
    servers = []
    for i in range(members):
        name = f"etcd{i}"
        servers.append(
            EtcdServer(
                name=name,
                data_dir=base_dir / name,
                client_port=free_port(),
                peer_port=free_port(),
                pid=0,
                log_path=base_dir / f"{name}.log",
                initial_cluster="",
            )
        )
    cluster = ",".join(f"{s.name}=http://127.0.0.1:{s.peer_port}" for s in servers)
    token = f"orc-{os.getpid()}-{servers[0].client_port}"
    for s in servers:
        s.initial_cluster = cluster
        s.cluster_token = token
        s.pid = await _spawn(s, new_cluster=True)
    try:
        await asyncio.gather(*(wait_etcd_ready(s, timeout=20) for s in servers))
    except BaseException:
        for s in servers:
            s.kill()
        raise
    return servers


async def _spawn(s: EtcdServer, *, new_cluster: bool) -> int:
    args = [
        etcd_binary(),
        "--name", s.name,
        "--data-dir", str(s.data_dir),
        "--listen-client-urls", f"http://127.0.0.1:{s.client_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{s.client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{s.peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{s.peer_port}",
        "--initial-cluster", s.initial_cluster,
        "--initial-cluster-state", "new" if new_cluster else "existing",
        "--initial-cluster-token", s.cluster_token,
        # Short election timings: loopback members, and fault tests want quick re-election.
        "--heartbeat-interval", "50",
        "--election-timeout", "500",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip
    # A plain Popen, not an asyncio subprocess: the server outlives the event loop that started
    # it (session fixtures, `local up`), and we reap it ourselves by pid.
    with open(s.log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return proc.pid


async def wait_etcd_ready(s: EtcdServer, *, timeout: float) -> None:
    """Wait until the member answers a client request (a TCP connect is not enough)."""
    import aetcd

    deadline = time.monotonic() + timeout
    while True:
        if not pid_alive(s.pid):
            raise LaunchError(f"etcd {s.name} exited: {tail(s.log_path)}")
        try:
            async with asyncio.timeout(1.0):
                c = aetcd.Client(host="127.0.0.1", port=s.client_port, timeout=1)
                try:
                    await c.get(b"/ready-check")
                    return
                finally:
                    await c.close()
        except Exception:
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"etcd {s.name} not ready after {timeout}s: {tail(s.log_path)}"
                ) from None
            await asyncio.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def kill_and_reap(pid: int, sig: int) -> None:
    """Send `sig` and wait (briefly) until the process is gone, reaping it if it is our child."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.01)


async def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        await asyncio.sleep(0.02)
    kill_and_reap(pid, signal.SIGKILL)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
