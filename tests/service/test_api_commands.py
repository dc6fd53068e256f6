"""Every command through `POST /api/v1/commands/<Name>` of a running service, with its error
paths, against a real shard (etcd + MariaDB)."""

from __future__ import annotations

import asyncio
import json

from tests.service import command, error_code, get
from topo.lock import ShardLock


async def test_topology_commands_create_add_change_and_delete(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url

    status, body = await command(http, url, "CreateKeyspace",
                                 {"keyspace": "sales", "durability_policy": "semi_sync"})  # fmt: skip
    assert status == 200, body
    assert body["name"] == "sales" and body["durability_policy"] == "semi_sync"
    status, body = await command(http, url, "CreateKeyspace", {"keyspace": "sales"})
    assert (status, error_code(body)) == (409, "ALREADY_EXISTS")

    status, body = await command(http, url, "CreateShard", {"keyspace_shard": "sales/-80"})
    assert status == 200 and body["key_range_end"] == "80", body
    status, body = await command(http, url, "CreateShard", {"keyspace_shard": "nosuch/0"})
    assert (status, error_code(body)) == (404, "NOT_FOUND")

    status, body = await command(http, url, "AddTablet", {
        "alias": "zone2-201", "keyspace_shard": "sales/-80", "mysql_host": "db-201.example",
        "mysql_port": 3306, "type": "rdonly",
    })  # fmt: skip
    assert status == 200, body
    assert body["type"] == "rdonly" and body["keyspace"] == "sales"
    status, body = await command(http, url, "GetTablet", {"alias": "zone2-201"})
    assert status == 200 and body["mysql_host"] == "db-201.example" and body["cell"] == "zone2"
    status, body = await command(http, url, "GetKeyspace", {"keyspace": "sales"})
    assert status == 200 and body["shards"] == ["-80"]
    status, body = await command(http, url, "GetShard", {"keyspace_shard": "sales/-80"})
    assert status == 200 and body["primary_alias"] is None
    assert [t["alias"] for t in body["tablets"]] == ["zone2-201"]

    # A replica taken out of serving leaves the serving graph; back in, it returns.
    status, body = await command(http, url, "ChangeTabletType",
                                 {"alias": "zone1-103", "type": "drained"})  # fmt: skip
    assert status == 200 and body["old_type"] == "replica" and body["changed"] is True
    status, graph = await get(http, url, "/api/v1/serving/zone1/commerce")
    assert [r["alias"] for r in graph["shards"][0]["replicas"]] == ["zone1-102"]
    status, body = await command(http, url, "ChangeTabletType",
                                 {"alias": "zone1-103", "type": "replica"})  # fmt: skip
    assert status == 200 and body["type"] == "replica"
    status, graph = await get(http, url, "/api/v1/serving/zone1/commerce")
    assert [r["alias"] for r in graph["shards"][0]["replicas"]] == ["zone1-102", "zone1-103"]

    # Never to or from primary: that is what reparents are for.
    status, body = await command(http, url, "ChangeTabletType",
                                 {"alias": "zone1-101", "type": "rdonly"})  # fmt: skip
    assert (status, error_code(body)) == (409, "FAILED_PRECONDITION")
    assert "PlannedReparentShard" in body["error"]["message"]
    status, body = await command(http, url, "ChangeTabletType",
                                 {"alias": "zone1-102", "type": "primary"})  # fmt: skip
    assert (status, error_code(body)) == (400, "INVALID_ARGUMENT")

    status, body = await command(http, url, "DeleteTablet", {"alias": "zone1-101"})
    assert (status, error_code(body)) == (409, "FAILED_PRECONDITION")
    status, body = await command(http, url, "DeleteTablet", {"alias": "zone2-201"})
    assert status == 200 and body == {"alias": "zone2-201", "deleted": True, "was_primary": False}
    status, body = await command(http, url, "GetTablet", {"alias": "zone2-201"})
    assert (status, error_code(body)) == (404, "NOT_FOUND")
    status, body = await command(http, url, "DeleteTablet", {"alias": "zone2-201"})
    assert (status, error_code(body)) == (404, "NOT_FOUND")
    assert await shard.check_invariants() == "zone1-101"


async def test_reparent_and_replication_commands_keep_the_shard_consistent(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard, recoveries_enabled=False)).url

    status, body = await command(http, url, "InitShardPrimary",
                                 {"keyspace_shard": "commerce/0", "primary": "zone1-102"})  # fmt: skip
    assert (status, error_code(body)) == (409, "FAILED_PRECONDITION")
    assert "already has primary zone1-101" in body["error"]["message"]
    assert body["error"]["details"]["workflow_id"].startswith("isp-")

    status, body = await command(http, url, "PlannedReparentShard", {
        "keyspace_shard": "commerce/0", "new_primary": "zone1-102",
        "wait_replicas_timeout": "20s", "expected_primary": "zone1-101",
    })  # fmt: skip
    assert status == 200, body
    assert body["new_primary"] == "zone1-102" and body["old_primary"] == "zone1-101"
    assert body["changed"] is True
    assert await shard.check_invariants() == "zone1-102"

    # ERS with the primary alive: it is fenced, becomes spare, and is left out of replication.
    status, body = await command(http, url, "EmergencyReparentShard", {
        "keyspace_shard": "commerce/0", "new_primary": "zone1-103", "wait_replicas_timeout": 10,
    })  # fmt: skip
    assert status == 200, body
    assert body["new_primary"] == "zone1-103"
    assert await shard.check_invariants() == "zone1-103"
    status, tablet = await command(http, url, "GetTablet", {"alias": "zone1-102"})
    assert tablet["type"] == "spare"

    # Bring the old primary back: replica again, then pointed at the new primary.
    status, body = await command(http, url, "ChangeTabletType",
                                 {"alias": "zone1-102", "type": "replica"})  # fmt: skip
    assert status == 200, body
    status, body = await command(http, url, "ReparentTablet", {"alias": "zone1-102"})
    assert status == 200, body
    assert body["primary"] == "zone1-103"

    status, body = await command(http, url, "StopReplication", {"alias": "zone1-101"})
    assert status == 200 and body["replication"] == "stopped"
    status, body = await command(http, url, "ShardReplicationPositions",
                                 {"keyspace_shard": "commerce/0"})  # fmt: skip
    states = {t["alias"]: t for t in body["tablets"]}
    assert states["zone1-101"]["io_running"] is False
    status, body = await command(http, url, "StartReplication", {"alias": "zone1-101"})
    assert status == 200 and body["replication"] == "started"
    status, body = await command(http, url, "StartReplication", {"alias": "zone1-103"})
    assert (status, error_code(body)) == (409, "FAILED_PRECONDITION")

    status, body = await command(http, url, "TabletExternallyReparented", {"alias": "zone1-103"})
    assert status == 200 and body["changed"] is False, body

    status, body = await command(http, url, "InitShardPrimary", {
        "keyspace_shard": "commerce/0", "primary": "zone1-101", "force": True,
    })  # fmt: skip
    assert status == 200, body
    assert await shard.check_invariants() == "zone1-101"

    status, text = await get(http, url, "/metrics")
    for line in (
        'orc_reparent_total{action="PlannedReparentShard",result="succeeded"}',
        'orc_reparent_total{action="InitShardPrimary",result="failed"}',
        'orc_commands_total{command="InitShardPrimary",result="FAILED_PRECONDITION"}',
        'orc_lock_wait_seconds_count{action="EmergencyReparentShard"}',
    ):
        assert line in text, line


async def test_prs_streams_one_ndjson_line_per_step_then_the_result(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url
    body = {"keyspace_shard": "commerce/0", "new_primary": "zone1-103"}
    async with http.post(f"{url}/api/v1/commands/PlannedReparentShard?stream=1", json=body) as r:
        assert r.status == 200
        assert r.content_type == "application/x-ndjson"
        lines = [json.loads(line) async for line in r.content if line.strip()]
    progress = [m["progress"] for m in lines[:-1]]
    assert all(set(m) == {"progress"} for m in lines[:-1])
    assert progress[0]["event"] == "started"
    done = [p["step"] for p in progress if p.get("event") == "step" and p["status"] == "done"]
    for step in ("lock_shard", "read_shard", "demote_primary", "promote_elect",
                 "wait_journal_on_replicas"):  # fmt: skip
        assert step in done, (step, done)
    assert done.index("demote_primary") < done.index("promote_elect")
    assert progress[-1]["event"] == "finished" and progress[-1]["status"] == "succeeded"
    assert lines[-1]["result"]["new_primary"] == "zone1-103"
    assert await shard.check_invariants() == "zone1-103"

    # Accept: application/x-ndjson asks for the same; a failure is the last line.
    headers = {"Accept": "application/x-ndjson"}
    bad = {
        "keyspace_shard": "commerce/0",
        "new_primary": "zone1-103",
        "expected_primary": "zone1-101",
    }
    async with http.post(f"{url}/api/v1/commands/PlannedReparentShard", json=bad,
                         headers=headers) as r:  # fmt: skip
        assert r.status == 200 and r.content_type == "application/x-ndjson"
        lines = [json.loads(line) async for line in r.content if line.strip()]
    assert lines[-1]["status"] == 409
    assert error_code(lines[-1]) == "FAILED_PRECONDITION"
    assert "not the expected zone1-101" in lines[-1]["error"]["message"]

    # Bad input is refused before the stream starts, with its own status.
    async with http.post(f"{url}/api/v1/commands/PlannedReparentShard?stream=1",
                         json={"keyspace_shard": "commerce"}) as r:  # fmt: skip
        assert r.status == 400 and error_code(await r.json()) == "INVALID_ARGUMENT"


async def test_bad_input_is_400_and_unknown_objects_404_never_500(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=1)
    url = (await service_factory(shard)).url
    cases = [
        ("PlannedReparentShard", b"{not json", 400, "INVALID_ARGUMENT", "not valid JSON"),
        ("PlannedReparentShard", b"[1, 2]", 400, "INVALID_ARGUMENT", "JSON object"),
        ("PlannedReparentShard", b"[" * 100_000, 400, "INVALID_ARGUMENT", "not valid JSON"),
        ("NoSuchCommand", b"{}", 400, "INVALID_ARGUMENT", "unknown command 'NoSuchCommand'"),
        ("PlannedReparentShard", b'{"keyspace_shard": "commerce/0", "new_primray": "zone1-101"}',
         400, "INVALID_ARGUMENT", "unknown argument(s) 'new_primray'"),
        ("PlannedReparentShard", b'{"keyspace_shard": 7}', 400, "INVALID_ARGUMENT",
         "keyspace_shard: want a string"),
        ("PlannedReparentShard", b'{}', 400, "INVALID_ARGUMENT", "keyspace_shard is required"),
        ("PlannedReparentShard", b'{"keyspace_shard": "commerce/0", "new_primary": "zone 1"}',
         400, "INVALID_ARGUMENT", "malformed tablet alias"),
        ("PlannedReparentShard",
         b'{"keyspace_shard": "commerce/0", "wait_replicas_timeout": "soon"}',
         400, "INVALID_ARGUMENT", "malformed duration"),
        ("EmergencyReparentShard",
         b'{"keyspace_shard": "commerce/0", "ignore_replicas": "zone1-101"}',
         400, "INVALID_ARGUMENT", "array of tablet aliases"),
        ("InitShardPrimary", b'{"keyspace_shard": "commerce/0", "primary": "zone1-101", '
         b'"force": "yes"}', 400, "INVALID_ARGUMENT", "force: want true or false"),
        ("AddTablet", b'{"alias": "zone1-200", "keyspace_shard": "commerce/0", '
         b'"mysql_host": "h", "mysql_port": 70000}', 400, "INVALID_ARGUMENT", "out of range"),
        ("CreateKeyspace", b'{"keyspace": "ks\\n"}', 400, "INVALID_ARGUMENT", "control"),
        ("PlannedReparentShard", b'{"keyspace_shard": "nosuch/0"}', 404, "NOT_FOUND",
         "nosuch"),
        ("PlannedReparentShard", b'{"keyspace_shard": "commerce/0", "new_primary": "zone1-999"}',
         400, "INVALID_ARGUMENT", "zone1-999"),
        ("StopReplication", b'{"alias": "zone1-999"}', 404, "NOT_FOUND", "tablet zone1-999"),
        ("UnlockShard", b'{"keyspace_shard": "commerce/0", "reason": "x"}', 400,
         "INVALID_ARGUMENT", "force is required"),
        ("UnlockShard", b'{"keyspace_shard": "commerce/0", "reason": "x", "force": false}',
         400, "INVALID_ARGUMENT", "needs force"),
        ("UnlockShard", b'{"keyspace_shard": "commerce/0", "reason": "x", "force": true}',
         409, "FAILED_PRECONDITION", "not locked"),
    ]  # fmt: skip
    for name, raw, want_status, want_code, want_text in cases:
        status, body = await command(http, url, name, raw=raw)
        assert (status, error_code(body)) == (want_status, want_code), (name, raw[:80], body)
        assert want_text in body["error"]["message"], (name, body)
    status, body = await command(http, url, "ShowLocks")  # an empty body is {}
    assert status == 200 and body == {"locks": []}


async def test_lock_held_is_409_naming_the_holder_and_unlock_shard_breaks_it(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=2)
    url = (await service_factory(shard, lock_timeout_s=0.5)).url
    holder = ShardLock(shard.store, "commerce", "0", action="SchemaMigration",
                       reason="test holds it", timeout=2)  # fmt: skip
    await holder.acquire()
    try:
        status, body = await command(http, url, "PlannedReparentShard",
                                     {"keyspace_shard": "commerce/0"})  # fmt: skip
        assert (status, error_code(body)) == (409, "LOCK_HELD")
        assert "SchemaMigration" in body["error"]["message"]
        assert body["error"]["details"]["holder"]["action"] == "SchemaMigration"

        status, body = await command(http, url, "ShowLocks")
        (lock,) = body["locks"]
        assert lock["action"] == "SchemaMigration" and lock["age_s"] >= 0
        status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0")
        assert body["lock"]["action"] == "SchemaMigration"

        status, body = await command(http, url, "UnlockShard", {
            "keyspace_shard": "commerce/0", "force": True, "reason": "holder is stuck",
        })  # fmt: skip
        assert status == 200 and body["holder"]["action"] == "SchemaMigration"
        assert holder.lost or (await shard.store.get_lock("commerce", "0")) is None
        status, body = await command(http, url, "ShowLocks")
        assert body == {"locks": []}
        (audit,) = await shard.store.list_audit()
        assert audit["action"] == "UnlockShard" and audit["reason"] == "holder is stuck"
    finally:
        await holder.release()
    status, body = await command(http, url, "PlannedReparentShard",
                                 {"keyspace_shard": "commerce/0"})  # fmt: skip
    assert status == 200 and body["new_primary"] == "zone1-102", body


async def test_commands_need_the_bearer_token_when_one_is_set(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=1)
    url = (await service_factory(shard, api_token="s3cret-token")).url
    for token in (None, "wrong", "s3cret-token-and-more"):
        status, body = await command(http, url, "CreateKeyspace", {"keyspace": "sales"},
                                     token=token)  # fmt: skip
        assert (status, error_code(body)) == (401, "UNAUTHENTICATED"), token
    assert [k.name for k in await shard.store.list_keyspaces()] == ["commerce"]
    async with http.post(f"{url}/api/v1/commands/NoSuchCommand", json={}) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    status, body = await command(http, url, "CreateKeyspace", {"keyspace": "sales"},
                                 token="s3cret-token")  # fmt: skip
    assert status == 200 and body["name"] == "sales"
    # Reads stay open, and read commands agree with the GET routes they mirror.
    status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0")
    assert status == 200 and body["primary_alias"] == "zone1-101"
    status, body = await command(http, url, "ShowLocks")
    assert status == 200 and body == {"locks": []}
    status, body = await get(http, url, "/api/v1/locks")
    assert status == 200 and body == {"locks": []}


async def test_disabled_active_reparents_refuse_prs_but_not_ter(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=2)
    url = (await service_factory(shard, disable_active_reparents=True)).url
    status, body = await command(http, url, "PlannedReparentShard",
                                 {"keyspace_shard": "commerce/0"})  # fmt: skip
    assert (status, error_code(body)) == (409, "FAILED_PRECONDITION")
    assert "disable_active_reparents" in body["error"]["message"]
    status, body = await command(http, url, "TabletExternallyReparented", {"alias": "zone1-101"})
    assert status == 200, body


async def test_a_client_that_leaves_mid_stream_does_not_cancel_the_reparent(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url
    body = {"keyspace_shard": "commerce/0", "new_primary": "zone1-102"}
    r = await http.post(f"{url}/api/v1/commands/PlannedReparentShard?stream=1", json=body)
    first = json.loads(await r.content.readline())
    workflow_id = first["progress"]["workflow_id"]
    r.close()  # gone after the first line

    deadline = asyncio.get_running_loop().time() + 15
    while True:
        status, wf = await get(http, url, f"/api/v1/workflows/{workflow_id}")
        if status == 200 and wf["status"] != "running":
            break
        assert asyncio.get_running_loop().time() < deadline, wf
        await asyncio.sleep(0.05)
    assert wf["status"] == "succeeded", wf
    assert await shard.check_invariants() == "zone1-102"
