"""A test host of our own behind a network namespace, for network partition tests.

`NetnsHost.create()` makes a namespace `orcns-<random>` joined to the root namespace by one veth
pair on a random private /29 (10.213.X.Y/29): the root side gets `.1`, the namespace side two
addresses, `addr_a` (path A) and `addr_b` (path B). A process started under `exec_prefix` (e.g.
mariadbd with `bind-address=0.0.0.0`) runs inside the namespace and is reachable from the root
namespace at both addresses.

Partitions are iptables rules in two chains of this host's own (`ORCNS-<random>-O` / `-I`),
jumped to from OUTPUT / INPUT only for traffic to / from its /29, so no other traffic on the
machine is ever touched:

- `cut_all()`: drop everything between the root namespace and the host (a silent cut: packets
  vanish, nothing answers, as when a host's network dies).
- `cut_except_gid(gid, addr)`: drop what root-namespace processes send to `addr`, except the
  traffic of processes running with group id `gid`. Servers started under `as_gid(gid)` keep
  their connections while every other process (the test itself, an in-process orchestrator)
  loses the host.
- `heal()`: remove the partition.

`delete()` removes the chains, the jumps to them, the namespace and the veth pair; it never
raises and is safe to call twice. Every command is bounded by a timeout. Only traffic to
loopback and to this host's own addresses is ever involved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

_CMD_TIMEOUT_S = 10.0
_NET = ipaddress.ip_network("10.213.0.0/16")


class NetnsUnavailable(RuntimeError):
    """This machine cannot run namespace tests (not root, no iproute2 or iptables)."""


def _which(tool: str) -> str | None:
    """The tool's path; /usr/sbin is searched too (root's tools, not always on PATH)."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [_which(args[0]) or args[0], *args[1:]]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def missing_requirements() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("setpriv", "util-linux")):
        if _which(tool) is None:
            return f"network namespace tests need `{tool}` (Debian package {package}; make setup)"
    return None


def as_gid(gid: int) -> tuple[str, ...]:
    """A command prefix that runs a program with real and effective group id `gid` (still as
    root, so files stay accessible). mariadbd with `user=root` keeps it."""
    return (_which("setpriv") or "setpriv", f"--regid={gid}", "--clear-groups")


def _used_subnets() -> set[ipaddress.IPv4Network]:
    """Addresses and routes of the root namespace inside 10.213.0.0/16 (e.g. another test's
    host). A broader route (10.0.0.0/8) is no conflict: our /29 is more specific."""
    out = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    out += _run(["ip", "-4", "route", "show"], check=False).stdout
    used = set()
    for word in out.split():
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.subnet_of(_NET):
            used.add(net)
    return used


@dataclass
class NetnsHost:
    name: str
    subnet: ipaddress.IPv4Network
    veth_root: str
    veth_ns: str
    chain: str
    _jumps: list[tuple[str, ...]] = field(default_factory=list)
    _deleted: bool = False

    @property
    def root_addr(self) -> str:
        return str(self.subnet[1])

    @property
    def addr_a(self) -> str:
        return str(self.subnet[2])

    @property
    def addr_b(self) -> str:
        return str(self.subnet[3])

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Run a program inside the namespace (`ip netns exec` execs it: same pid)."""
        return (_which("ip") or "ip", "netns", "exec", self.name)

    @property
    def chain_out(self) -> str:
        return f"{self.chain}-O"

    @property
    def chain_in(self) -> str:
        return f"{self.chain}-I"

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    async def create(cls) -> NetnsHost:
        """A new namespace host; skips the calling test if this machine cannot make one."""
        why = missing_requirements()
        if why is not None:
            pytest.skip(why)
        return await asyncio.to_thread(cls._create)

    @classmethod
    def _create(cls) -> NetnsHost:
        used = _used_subnets()
        rng = random.SystemRandom()
        for _ in range(50):
            subnet = ipaddress.IPv4Network(
                f"10.213.{rng.randrange(256)}.{8 * rng.randrange(32)}/29"
            )
            if not any(subnet.overlaps(u) for u in used):
                break
        else:
            raise NetnsUnavailable("no free /29 in 10.213.0.0/16")
        tag = uuid.uuid4().hex[:8]
        host = cls(
            name=f"orcns-{tag}",
            subnet=subnet,
            veth_root=f"orcv{tag}r",
            veth_ns=f"orcv{tag}n",
            chain=f"ORCNS-{tag}",
        )
        try:
            host._setup()
        except BaseException:
            host._delete()
            raise
        return host

    def _setup(self) -> None:
        plen = self.subnet.prefixlen
        try:
            _run(["ip", "netns", "add", self.name])
        except RuntimeError as e:
            pytest.skip(f"cannot create a network namespace here: {e}")
        _run(["ip", "link", "add", self.veth_root, "type", "veth",
              "peer", "name", self.veth_ns, "netns", self.name])  # fmt: skip
        _run(["ip", "addr", "add", f"{self.root_addr}/{plen}", "dev", self.veth_root])
        _run(["ip", "link", "set", self.veth_root, "up"])
        for addr in (self.addr_a, self.addr_b):
            _run(["ip", "-n", self.name, "addr", "add", f"{addr}/{plen}", "dev", self.veth_ns])
        _run(["ip", "-n", self.name, "link", "set", self.veth_ns, "up"])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        try:
            _run(["iptables", "-w", "5", "-N", self.chain_out])
        except RuntimeError as e:
            pytest.skip(f"iptables does not work here: {e}")
        _run(["iptables", "-w", "5", "-N", self.chain_in])
        for jump in (("OUTPUT", "-d", str(self.subnet), "-j", self.chain_out),
                     ("INPUT", "-s", str(self.subnet), "-j", self.chain_in)):  # fmt: skip
            _run(["iptables", "-w", "5", "-I", *jump])
            self._jumps.append(jump)

    async def delete(self) -> None:
        await asyncio.to_thread(self._delete)

    def _delete(self) -> None:
        """Undo everything; never raises. Processes in the namespace must be gone first (the
        veth pair disappears with the namespace, once nothing runs in it)."""
        if self._deleted:
            return
        self._deleted = True
        for jump in self._jumps:
            for _ in range(5):  # in case a rule was inserted twice
                if _run(["iptables", "-w", "5", "-D", *jump], check=False).returncode != 0:
                    break
        for chain in (self.chain_out, self.chain_in):
            _run(["iptables", "-w", "5", "-F", chain], check=False)
            _run(["iptables", "-w", "5", "-X", chain], check=False)
        _run(["ip", "netns", "del", self.name], check=False)
        _run(["ip", "link", "del", self.veth_root], check=False)

    # -- partitions ----------------------------------------------------------------------------

    async def cut_all(self) -> None:
        """Drop every packet between the root namespace and this host, both ways."""
        await self.heal()
        await self._iptables(["-A", self.chain_out, "-j", "DROP"])
        await self._iptables(["-A", self.chain_in, "-j", "DROP"])

    async def cut_except_gid(self, gid: int, addr: str) -> None:
        """Drop what root-namespace processes send to `addr`, unless they run with group `gid`."""
        await self.heal()
        await self._iptables(["-A", self.chain_out, "-d", addr, "-m", "owner",
                              "!", "--gid-owner", str(gid), "-j", "DROP"])  # fmt: skip

    async def heal(self) -> None:
        for chain in (self.chain_out, self.chain_in):
            await self._iptables(["-F", chain])

    async def _iptables(self, args: list[str]) -> None:
        await asyncio.to_thread(_run, ["iptables", "-w", "5", *args])
