"""Schemathesis against the OpenAPI document of a running service: generated valid and invalid
requests to every operation (the endless watch stream excepted) must never get a 5xx, and every
answer must match the document (status, content type, schema).

Two 5xx answers are the API's documented behaviour, not failures, and are allowed:
- 503 from the Patroni-style `/tablets/{alias}/primary|replica` checks (with their `ok: false`
  body): that is how a load balancer learns "not a primary";
- 502 with a TABLET_* or PARTIAL_FAILURE code: a MySQL server behind the orchestrator failed
  (the fuzzer registers tablets at addresses where no server listens, then runs commands on
  them).
A 500, a 503 from etcd (it is up), or a 5xx in the last line of a progress stream fails.

The schemathesis CLI runs as a subprocess (the service answers from this test's event loop); it
loads this module for the check below through SCHEMATHESIS_HOOKS.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

schemathesis = pytest.importorskip("schemathesis")

CHECK_ROUTES = {"/api/v1/tablets/{alias}/primary", "/api/v1/tablets/{alias}/replica"}
UPSTREAM_CODES = {"TABLET_UNAVAILABLE", "TABLET_ERROR", "PARTIAL_FAILURE"}
CHECK_NAME = "no_server_error_but_documented_ones"
REPO = Path(__file__).resolve().parents[2]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _allowed_5xx(path: str, status: int, body: Any) -> bool:
    if status == 503 and path in CHECK_ROUTES:
        return isinstance(body, dict) and body.get("ok") is False
    if status == 502 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code") in UPSTREAM_CODES
    return False


@schemathesis.check
def no_server_error_but_documented_ones(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx except the documented ones (see the module docstring), streams included."""
    path = case.operation.path
    status = response.status_code
    if status >= 500 and not _allowed_5xx(path, status, _json(response.text)):
        raise AssertionError(f"{status} from {case.method} {path}: {response.text[:500]}")
    if "ndjson" in response.headers.get("Content-Type", [""])[0]:
        lines = [ln for ln in response.text.splitlines() if ln.strip()]
        last = _json(lines[-1]) if lines else None
        assert isinstance(last, dict) and ("result" in last or "error" in last), (
            f"stream of {path} did not end with a result or an error: {response.text[-500:]}"
        )
        if "error" in last and last.get("status", 0) >= 500:
            assert _allowed_5xx(path, last["status"], last), f"stream of {path} ended in {last}"


FUZZ_TIMEOUT_S = 110


async def test_generated_requests_never_get_an_undocumented_server_error(
    shard_factory, service_factory, tmp_path: Path
) -> None:
    shard = await shard_factory(tablets=1)
    token = "fuzz-token"
    rs = await service_factory(shard, api_token=token, webhook_secret="fuzz-secret")
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.service.test_api_fuzz",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    args = [
        str(st), "run", f"{rs.url}/api/v1/openapi.json",
        "--checks", ",".join([CHECK_NAME, "status_code_conformance", "content_type_conformance",
                              "response_schema_conformance", "negative_data_rejection",
                              "unsupported_method"]),
        "--phases", "examples,coverage,fuzzing",
        "--mode", "all",
        "--max-examples", "40",
        "--seed", "20261122",
        "--exclude-operation-id", "watchServingGraph",
        "--header", f"Authorization: Bearer {token}",
        "--request-timeout", "20",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Well inside pytest's own timeout (150 s), so that a hung run fails here, with the
        # fuzzer stopped, rather than being killed by pytest with the fuzzer left running.
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=FUZZ_TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"schemathesis did not finish within {FUZZ_TIMEOUT_S} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    print(text[-4000:])
    print(f"schemathesis took {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, text[-20000:]
    assert "Tested: " in text
    # The service still answers afterwards (the fuzzer may have run any command, including
    # DeleteTablet of the primary, so the shard itself is not checked).
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{rs.url}/readyz") as r:
            assert r.status == 200
