"""`orchestrator ctl` as a subprocess against a running service: every command, its exit code,
its stdout JSON and its stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.commands import COMMANDS
from tests.helpers.ports import refused_port
from topo.lock import ShardLock


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


async def ctl(url: str | None, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run `python -m orchestrator ctl [--server url] args...` without blocking the event loop
    (the service under test runs in it)."""
    server = ["--server", url] if url else []
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "ctl", *server, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_ctl_topology_commands(shard_factory, service_factory) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url

    r = await ctl(url, "CreateKeyspace", "sales", "--durability-policy", "semi_sync")
    assert r.code == 0, r.stderr
    assert r.json["name"] == "sales" and r.json["durability_policy"] == "semi_sync"
    r = await ctl(url, "CreateShard", "sales/0")
    assert r.code == 0 and r.json["keyspace"] == "sales", r.stderr
    r = await ctl(url, "AddTablet", "zone2-201", "sales/0", "--mysql-host", "db-201",
                  "--mysql-port", "3306", "--type", "rdonly")  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.json["type"] == "rdonly" and r.json["mysql_port"] == 3306
    r = await ctl(url, "GetKeyspace", "sales")
    assert r.code == 0 and r.json["shards"] == ["0"]
    r = await ctl(url, "GetShard", "sales/0")
    assert r.code == 0 and [t["alias"] for t in r.json["tablets"]] == ["zone2-201"]
    r = await ctl(url, "GetTablet", "zone2-201")
    assert r.code == 0 and r.json["mysql_host"] == "db-201"
    r = await ctl(url, "ChangeTabletType", "zone2-201", "spare")
    assert r.code == 0 and r.json["type"] == "spare" and r.json["old_type"] == "rdonly"
    r = await ctl(url, "DeleteTablet", "zone2-201")
    assert r.code == 0 and r.json["deleted"] is True
    r = await ctl(url, "ShowLocks")
    assert r.code == 0 and r.json == {"locks": []}

    # Failures: exit 1, the error code and message on stderr, nothing on stdout.
    r = await ctl(url, "GetTablet", "zone2-201")
    assert r.code == 1 and r.stdout == ""
    assert "NOT_FOUND" in r.stderr and "tablet zone2-201 does not exist" in r.stderr
    r = await ctl(url, "GetTablet", "not-an-alias!")
    assert r.code == 1 and "INVALID_ARGUMENT" in r.stderr and "malformed tablet alias" in r.stderr
    r = await ctl(url, "CreateKeyspace", "sales")
    assert r.code == 1 and "ALREADY_EXISTS" in r.stderr


async def test_ctl_reparents_stream_progress_to_stderr_and_the_result_to_stdout(
    shard_factory, service_factory
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard, recoveries_enabled=False)).url

    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102",
                  "--wait-replicas-timeout", "30s")  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.json["new_primary"] == "zone1-102" and r.json["old_primary"] == "zone1-101"
    assert "[PlannedReparentShard prs-" in r.stderr
    assert "demote_primary: done" in r.stderr and "finished: succeeded" in r.stderr
    assert await shard.check_invariants() == "zone1-102"

    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--avoid-primary", "zone1-102",
                  "--quiet")  # fmt: skip
    assert r.code == 0 and r.json["old_primary"] == "zone1-102" and r.stderr == "", r.stderr
    primary = r.json["new_primary"]

    others = [a for a in shard.aliases if a != primary]
    r = await ctl(url, "EmergencyReparentShard", "commerce/0", "--new-primary", others[0],
                  "--ignore-replicas", others[1], "--wait-replicas-timeout", "10")  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.json["new_primary"] == others[0]
    # The ignored replica was not repointed: put it back where it belongs.
    r = await ctl(url, "ReparentTablet", others[1])
    assert r.code == 0 and r.json["primary"] == others[0], r.stderr

    # The old primary is spare after ERS: make it a replica of the new primary again.
    r = await ctl(url, "ChangeTabletType", primary, "replica")
    assert r.code == 0, r.stderr
    r = await ctl(url, "ReparentTablet", primary)
    assert r.code == 0 and r.json["primary"] == others[0], r.stderr

    r = await ctl(url, "TabletExternallyReparented", others[0])
    assert r.code == 0 and r.json["changed"] is False, r.stderr

    # The positional and the flag form of InitShardPrimary.
    r = await ctl(url, "InitShardPrimary", "commerce/0", others[0])
    assert r.code == 1 and "FAILED_PRECONDITION" in r.stderr and "already has primary" in r.stderr
    r = await ctl(url, "InitShardPrimary", "commerce/0", "--primary", others[0], "--force")
    assert r.code == 0 and r.json["new_primary"] == others[0], r.stderr

    r = await ctl(url, "StopReplication", primary)
    assert r.code == 0 and r.json["replication"] == "stopped"
    r = await ctl(url, "ShardReplicationPositions", "commerce/0")
    assert r.code == 0
    states = {t["alias"]: t for t in r.json["tablets"]}
    assert states[primary]["sql_running"] is False
    r = await ctl(url, "StartReplication", primary)
    assert r.code == 0 and r.json["replication"] == "started"
    assert await shard.check_invariants() == others[0]


async def test_ctl_unlock_shard_and_lock_held_error(shard_factory, service_factory) -> None:
    shard = await shard_factory(tablets=2)
    url = (await service_factory(shard, lock_timeout_s=0.3)).url
    holder = ShardLock(shard.store, "commerce", "0", action="Backup", timeout=2)
    await holder.acquire()
    try:
        r = await ctl(url, "PlannedReparentShard", "commerce/0")
        assert r.code == 1 and "LOCK_HELD" in r.stderr and "Backup" in r.stderr
        r = await ctl(url, "ShowLocks")
        assert [lk["action"] for lk in r.json["locks"]] == ["Backup"]
        r = await ctl(url, "UnlockShard", "commerce/0", "--reason", "stuck backup")
        assert r.code == 1 and "force is required" in r.stderr
        r = await ctl(url, "UnlockShard", "commerce/0", "--force", "--reason", "stuck backup")
        assert r.code == 0 and r.json["unlocked"] is True, r.stderr
    finally:
        await holder.release()


async def test_ctl_token_server_and_usage_errors(shard_factory, service_factory) -> None:
    shard = await shard_factory(tablets=1)
    url = (await service_factory(shard, api_token="tok-123")).url

    r = await ctl(url, "CreateKeyspace", "sales")
    assert r.code == 1 and "UNAUTHENTICATED" in r.stderr
    r = await ctl(url, "CreateKeyspace", "sales", "--token", "tok-123")  # after the name too
    assert r.code == 0 and r.json["name"] == "sales", r.stderr
    # Reads need no token, as GET /api/v1/locks does not (issue 11 item 12).
    r = await ctl(url, "ShowLocks")
    assert r.code == 0 and r.json == {"locks": []}
    r = await ctl(
        None, "GetShard", "commerce/0", env={"ORC_SERVER": url, "ORC_API_TOKEN": "tok-123"}
    )
    assert r.code == 0 and r.json["primary_alias"] == "zone1-101", r.stderr

    with refused_port() as port:  # held by this process, connections refused
        dead = f"http://127.0.0.1:{port}"
        r = await ctl(dead, "ShowLocks")
    assert r.code == 3 and f"cannot reach the orchestrator at {dead}" in r.stderr

    r = await ctl(url, "PlannedReparentShard")  # missing positional
    assert r.code == 2 and "KEYSPACE/SHARD" in r.stderr
    r = await ctl(url, "NoSuchCommand")
    assert r.code == 2 and "invalid choice" in r.stderr
    r = await ctl(url, "InitShardPrimary", "commerce/0", "zone1-101", "--primary", "zone1-102")
    assert r.code == 2 and "given twice" in r.stderr


def test_ctl_help_lists_every_command_and_each_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["ctl", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out, name
    for name, cmd in COMMANDS.items():
        with pytest.raises(SystemExit) as e:
            cli.main(["ctl", name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        for arg in cmd.args:
            if arg.cli == "flag" or arg.kind == "bool" or arg.cli == "either":
                assert arg.flag in out, (name, arg.flag)


def test_serve_refuses_bad_settings_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "orc.toml"
    bad.write_text("listen_port = 70000\n")
    assert cli.main(["serve", "--config", str(bad)]) == 2
    assert "bad listen port 70000" in capsys.readouterr().err
    assert cli.main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--listen", "no-port"])
    assert e.value.code == 2
