"""Inbound webhook: an external failover tool reports that it moved a shard's primary.

`POST /api/v1/webhooks/external-reparent` with body `{"tablet": "zone1-102"}` (or `"alias"`),
signed as described in `orchestrator.signing`. In order:

1. refuse (401) unless a webhook secret is configured and the signature verifies (present,
   well-formed, fresh, correct MAC);
2. refuse (400) a body that is not JSON naming a well-formed tablet alias;
3. refuse (409) a replay: the signature is claimed with a create-if-absent key in etcd,
   `{root}/global/webhook-nonces/<signature>`, bound to a lease that outlives the signature's
   validity, so a replay is refused by every instance and after a restart too;
4. run TabletExternallyReparented, publishing reparent.started / succeeded / failed events
   around it, and answer with its result (200) or the API's status for its error.

A request refused at steps 1-3 runs nothing and writes no workflow record.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from orchestrator import metrics
from orchestrator.errors import error_response
from orchestrator.signing import TIMESTAMP_HEADER, SignatureError, signature_of, verify
from topo.errors import NodeExistsError, TopoError
from workflows.externally_reparented import (
    ACTION,
    ExternallyReparentedOptions,
    tablet_externally_reparented,
)

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

ROUTE = "/api/v1/webhooks/external-reparent"


def _refuse(status: int, code: str, message: str, reason: str) -> web.Response:
    """A refusal in the API's error shape; `details.reason` says which check refused."""
    body = {"error": {"code": code, "message": message, "details": {"reason": reason}}}
    return web.json_response(body, status=status)


def parse_tablet(body: bytes) -> str:
    """The tablet alias named by the request body; ValueError says what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError('body must be a JSON object like {"tablet": "zone1-102"}')
    alias = doc.get("tablet", doc.get("alias"))
    if not isinstance(alias, str) or not alias:
        raise ValueError('body must name the new primary: {"tablet": "zone1-102"}')
    return alias


async def claim_signature(service: Service, signature: str, timestamp: int) -> None:
    """Remember an accepted signature until it would be stale anyway; NodeExistsError if it
    was already seen (a replay), by this or any other instance."""
    kv = service.store.kv
    max_age = service.settings.webhook_max_age_s
    # A timestamp up to max_age in the future stays acceptable until timestamp + max_age;
    # a few seconds more cover clock skew between instances.
    ttl = max(1, math.ceil(timestamp + max_age - time.time()) + 5)
    lease = await kv.grant_lease(ttl)
    key = f"{service.store.root}/global/webhook-nonces/{signature}"
    body = json.dumps({"time": time.time(), "instance_id": service.settings.instance_id})
    try:
        await kv.create(key, body.encode(), lease=lease)
    except BaseException:
        with contextlib.suppress(Exception):
            await kv.revoke_lease(lease)
        raise


async def handle_external_reparent(service: Service, request: web.Request) -> web.Response:
    settings = service.settings
    body = await request.read()
    peer = request.remote
    if not settings.webhook_secret:
        log.warning("webhook refused: no webhook secret configured", peer=peer)
        return _refuse(401, "UNAUTHENTICATED",
                       "webhooks are disabled: no webhook secret is configured", "disabled")  # fmt: skip
    try:
        verify(settings.webhook_secret, request.headers, body, max_age_s=settings.webhook_max_age_s)
    except SignatureError as e:
        log.warning("webhook refused: signature", reason=e.reason, detail=e.detail, peer=peer)
        return _refuse(401, "UNAUTHENTICATED", f"signature refused: {e}", e.reason)

    try:
        alias = parse_tablet(body)
        opts = ExternallyReparentedOptions(alias)
    except (ValueError, TopoError) as e:
        return _refuse(400, "INVALID_ARGUMENT", str(e), "body")

    signature = signature_of(request.headers)
    try:
        await claim_signature(service, signature, int(request.headers[TIMESTAMP_HEADER]))
    except NodeExistsError:
        log.warning("webhook refused: replayed signature", tablet=alias, peer=peer)
        return _refuse(409, "ALREADY_EXISTS",
                       "replayed request: this signature was already used", "replay")  # fmt: skip
    except TopoError as e:
        return error_response(e)

    log.info("webhook: external reparent", tablet=alias, peer=peer)
    args = {"tablet": alias, "source": "webhook"}
    started = time.monotonic()
    try:
        async with service.events.reparent(ACTION, args) as ev:
            result = await tablet_externally_reparented(
                service.env, opts, progress=metrics.lock_wait_observer()
            )
            ev.result = result.to_dict()
    except Exception as e:
        metrics.observe_reparent(ACTION, False, time.monotonic() - started)
        log.warning("webhook: external reparent failed", tablet=alias, error=str(e))
        return error_response(e)
    metrics.observe_reparent(ACTION, True, time.monotonic() - started)
    return web.json_response(result.to_dict())
