"""`orchestrator ctl` errors as a person meets them, through the real CLI as a subprocess: one
line `error: CODE: message` with a hint where there is one, the documented exit codes, and no
Python traceback for any input."""

from __future__ import annotations

from tests.service.test_ctl import ctl


async def test_ctl_server_addresses_are_accepted_or_refused_in_one_line() -> None:
    for server, code in (("nonsense", 3), ("127.0.0.1:1", 3), ("http://127.0.0.1:99999", 2),
                         ("ftp://127.0.0.1:1", 2), ("http://", 2)):  # fmt: skip
        r = await ctl(server, "GetShard", "commerce/0")
        assert r.code == code, (server, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = await ctl(None, "GetShard", "commerce/0", env={"ORC_SERVER": "127.0.0.1:1"})
    assert r.code == 3 and "http://127.0.0.1:1" in r.stderr  # $ORC_SERVER, no scheme needed


async def test_ctl_bad_usage_exits_2_with_hints(shard_factory, service_factory) -> None:  # type: ignore[no-untyped-def]
    shard = await shard_factory(tablets=2)
    url = (await service_factory(shard)).url
    host_port = url.removeprefix("http://")
    r = await ctl(host_port, "--timeout", "30s", "GetShard", "commerce/0")
    assert r.code == 0, r.stderr
    assert r.json["primary_alias"] == "zone1-101"
    r = await ctl(url, "--timeout", "soon", "GetShard", "commerce/0")
    assert r.code == 2 and "malformed duration 'soon'" in r.stderr
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new_primary", "zone1-102")
    assert r.code == 2 and "--new_primary is spelled --new-primary here" in r.stderr
    assert "Traceback" not in r.stderr
    assert await shard.primary_alias() == "zone1-101"


async def test_ctl_missing_token_says_how_to_pass_one(shard_factory, service_factory) -> None:  # type: ignore[no-untyped-def]
    shard = await shard_factory(tablets=2)
    url = (await service_factory(shard, api_token="tok-123")).url
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102")
    assert r.code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: UNAUTHENTICATED: ")
    assert "hint: pass --token or set ORC_API_TOKEN" in r.stderr
    r = await ctl(url, "--token", "tok-123", "GetShard", "commerce/0")
    assert r.code == 0, r.stderr
