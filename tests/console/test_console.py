"""The web console in a real browser against a real shard: the fleet page lists the tablets; a
PlannedReparentShard made through the API shows on the open shard page within 2 s, without a
reload; a SIGKILLed primary shows dead, then its recovery; an action without the token is
refused in the page. Screenshots of each page, at 1400x900 and at a phone's width, are saved
under .local/screenshots/."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.console.browser import DESKTOP, PHONE, Browser
from tests.fixtures_cluster import ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import start_service, wait_for
from tests.service import command
from topo.lock import ShardLock
from workflows.faults import FaultPoints

pytestmark = pytest.mark.slow

SHARD_PAGE = "/#/shard/commerce/0"
# Is the shard page drawn, with this primary? (the badge next to the shard's name)
PRIMARY_IS = """
const b = [...document.querySelectorAll('.shard-head .badge')].map(e => e.textContent);
return b.includes('primary ' + arguments[0]);
"""
# Records, on every redraw, what the page showed: the test needs the short moment when the
# primary is dead but not yet replaced, which a check now and then could miss.
OBSERVE = """
window.__seen = [];
new MutationObserver(() => {
  const node = document.querySelector('svg.tree g[data-alias="' + arguments[0] + '"] rect');
  const head = [...document.querySelectorAll('.shard-head .badge')].map(e => e.textContent);
  window.__seen.push({down: !!node && node.classList.contains('down'),
                      primary: head.find(t => t.startsWith('primary ')) || null,
                      text: document.querySelector('main').innerText});
}).observe(document.getElementById('view'), {childList: true, subtree: true});
window.__marker = 'not reloaded';
"""


async def _shots(browser: Browser, name: str) -> None:
    """Screenshots at the desktop size and at a phone's width (then back to the desktop)."""
    await browser.screenshot(f"{name}-1400x900")
    await browser.size(*PHONE)
    await browser.js("window.scrollTo(0, 0)")
    await browser.screenshot(f"{name}-phone")
    await browser.size(*DESKTOP)


async def test_fleet_page_lists_the_tablets(
    shard_factory: ShardFactory, service_factory: ServiceFactory, browser: Browser
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    await browser.open(rs.url + "/")
    await browser.wait(
        "return arguments[0].every(a => document.querySelector('main').innerText.includes(a))",
        10, "every tablet on the fleet page", shard.aliases,
    )  # fmt: skip
    text = await browser.text()
    assert "commerce/0" in text and "serving" in text
    for alias, kind in (
        ("zone1-101", "primary"),
        ("zone1-102", "replica"),
        ("zone1-103", "replica"),
    ):
        assert f"{alias} {kind}" in text, text
    assert "no primary" not in text
    # The shard's link opens its page (hash routing: no reload).
    await browser.click('a[href="#/shard/commerce/0"]')
    await browser.wait(PRIMARY_IS, 10, "the shard page", "zone1-101")
    await browser.open(rs.url + "/")
    await browser.wait("return document.querySelector('main').innerText.includes('zone1-103')",
                       10, "the fleet page again")  # fmt: skip
    await _shots(browser, "fleet")


async def test_prs_through_the_api_shows_on_the_open_shard_page_within_2s(
    shard_factory: ShardFactory, service_factory: ServiceFactory, browser: Browser, http
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    await browser.open(rs.url + SHARD_PAGE)
    await browser.wait(PRIMARY_IS, 10, "the shard page with zone1-101 primary", "zone1-101")
    await browser.wait("return document.querySelectorAll('svg.tree g.node').length === 3",
                       10, "three tablets in the tree")  # fmt: skip
    await browser.js(OBSERVE, "zone1-101")
    await browser.js("document.getElementById('pause').focus()")  # a keyboard user's place

    status, body = await command(http, rs.url, "PlannedReparentShard",
                                 {"keyspace_shard": "commerce/0", "new_primary": "zone1-102"})  # fmt: skip
    answered = time.monotonic()
    assert status == 200, body
    await browser.wait(PRIMARY_IS, 2.0, "the new primary on the page within 2 s", "zone1-102")
    shown_s = time.monotonic() - answered
    print(f"\nPRS answered -> new primary drawn on the open page in {shown_s * 1000:.0f} ms")
    assert await browser.js("return window.__marker") == "not reloaded"
    # Redrawn, the page keeps the keyboard focus where it was.
    assert await browser.js("return document.activeElement.dataset.k") == "pause"
    # The tree now hangs from zone1-102; the run is in the shard's workflow history.
    await browser.wait(
        "return [...document.querySelectorAll('tr[data-workflow]')].some(r => "
        "r.innerText.includes('PlannedReparentShard') && r.innerText.includes('succeeded'))",
        5, "the PRS in the shard's workflows",
    )  # fmt: skip
    rect = await browser.js(
        "return document.querySelector('svg.tree g[data-alias=\"zone1-102\"] rect').className.baseVal"
    )
    assert rect == "primary"
    await browser.wait("return document.querySelector('main').innerText.includes('zone1-102') &&"
                       " document.querySelectorAll('svg.tree path.edge').length === 2",
                       5, "both replicas under the new primary")  # fmt: skip
    await _shots(browser, "shard")


async def test_killed_primary_shows_dead_then_its_recovery(
    shard_factory: ShardFactory, service_factory: ServiceFactory, browser: Browser
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory, recovery_block_s=30)
    # On loopback the failover takes ~0.1 s, less than one health cycle: held 1.5 s before its
    # promotion (as waiting for a distant replica would), its lock and steps are seen live.
    rs.service.env.faults = FaultPoints(hooks={"ers.before_promote": lambda: asyncio.sleep(1.5)})
    await browser.open(rs.url + SHARD_PAGE)
    await browser.wait(PRIMARY_IS, 10, "the shard page with zone1-101 primary", "zone1-101")
    await browser.js(OBSERVE, "zone1-101")

    shard.server("zone1-101").kill()
    await browser.wait("return window.__seen.some(s => s.down && s.primary === 'primary zone1-101')",
                       10, "the dead primary drawn as down")  # fmt: skip
    # While the recovery runs: its lock, its steps so far.
    await browser.wait(
        "return document.querySelector('.shard-head').innerText.includes('locked by') &&"
        " [...document.querySelectorAll('div.card[data-workflow]')].some(c =>"
        " c.innerText.includes('EmergencyReparentShard'))",
        5, "the running recovery's lock and steps",
    )  # fmt: skip
    await browser.screenshot("dead-primary-1400x900")
    await browser.wait(
        "return window.__seen.some(s => s.primary && s.primary !== 'primary zone1-101')",
        20, "a new primary after the recovery",
    )  # fmt: skip
    await browser.wait(
        "return [...document.querySelectorAll('tr[data-result=\"succeeded\"]')].some(r =>"
        " r.innerText.includes('DeadPrimary') && r.innerText.includes('EmergencyReparentShard'))",
        10, "the recovery in the shard's recoveries",
    )  # fmt: skip
    seen = await browser.js("return window.__seen.map(s => [s.down, s.primary])")
    first_dead = next(i for i, (down, p) in enumerate(seen) if down and p == "primary zone1-101")
    first_new = next(i for i, (_, p) in enumerate(seen) if p and p != "primary zone1-101")
    assert first_dead < first_new, seen  # dead first, then the recovery
    new_primary = await shard.check_invariants()
    assert new_primary != "zone1-101"
    assert await browser.js(PRIMARY_IS, new_primary)
    await browser.screenshot("recovered-1400x900")
    # The other pages have it too: the run with its steps, the recovery with what ran.
    await browser.open(rs.url + "/#/recoveries")
    await browser.wait(
        "return document.querySelector('main').innerText.includes('EmergencyReparentShard')",
        5, "the recovery on the recoveries page",
    )  # fmt: skip
    await _shots(browser, "recoveries")
    await browser.open(rs.url + "/#/workflows")
    await browser.wait(
        "return document.querySelector('main').innerText.includes('ers.before_promote') ||"
        " document.querySelector('main').innerText.includes('EmergencyReparentShard')",
        5, "the run on the workflows page",
    )  # fmt: skip
    await _shots(browser, "workflows")


async def test_action_without_the_token_is_refused_in_the_page(
    shard_factory: ShardFactory, service_factory: ServiceFactory, browser: Browser
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory, api_token="console-secret")
    await browser.open(rs.url + SHARD_PAGE)
    await browser.js("sessionStorage.clear()")
    await browser.wait(PRIMARY_IS, 10, "the shard page", "zone1-101")
    await browser.wait("return document.querySelectorAll('#prs-elect option').length === 2",
                       10, "two healthy replicas to choose from")  # fmt: skip

    async def act(button: str, fields: dict[str, str] | None = None) -> str:
        """Click an action, fill its confirmation, confirm: the outcome shown in the page."""
        await browser.click("#" + button)
        await browser.wait("return document.getElementById('confirm').open", 5, "the confirmation")
        for name, value in (fields or {}).items():
            await browser.js("document.getElementById(arguments[0]).value = arguments[1]",
                             "f-" + name, value)  # fmt: skip
        count = "return document.querySelectorAll('#actions-list li.action').length"
        before = await browser.js(count)
        await browser.click("#confirm-ok")
        return str(await browser.wait(
            "const all = document.querySelectorAll('#actions-list li.action');"
            " const a = all.length > arguments[0] ? all[0] : null;"  # the newest comes first
            " return a && a.dataset.outcome ? a.dataset.outcome + ': ' + a.innerText : null",
            30, "the action's outcome", before,
        ))  # fmt: skip

    async def prs(elect: str) -> str:
        await browser.wait(
            "const s = document.getElementById('prs-elect');"
            " if (!s || ![...s.options].some(o => o.value === arguments[0])) return false;"
            " s.value = arguments[0]; s.dispatchEvent(new Event('change')); return true;",
            10, f"{elect} to choose", elect,
        )  # fmt: skip
        await browser.click("#prs")
        await browser.wait("return document.getElementById('confirm').open", 5, "the confirmation")
        assert elect in await browser.text("#confirm-text")
        await browser.js("document.getElementById('confirm').close('cancel')")
        return await act("prs")

    outcome = await prs("zone1-103")
    assert outcome.startswith("failed:") and "Refused (401 UNAUTHENTICATED)" in outcome, outcome
    assert "paste the API token" in outcome
    assert (await shard.store.get_shard("commerce", "0")).primary_alias == "zone1-101"
    await browser.screenshot("refused-1400x900")

    # With the token pasted, the same action runs, its steps shown as they come.
    await browser.js("document.getElementById('token').value = arguments[0];"
                     " document.querySelector('#token-form button[type=submit]').click();",
                     "console-secret")  # fmt: skip
    assert await browser.js("return sessionStorage.getItem('orchestrator-console-token')")
    outcome = await prs("zone1-103")
    assert outcome.startswith("succeeded:") and "zone1-103 is the new primary" in outcome, outcome
    assert await browser.js("return document.querySelectorAll('#actions-list li.action')[0]"
                            ".querySelectorAll('ul.steps li').length") >= 3  # fmt: skip
    await wait_for(
        lambda: browser.js(PRIMARY_IS, "zone1-103"), 5, "the new primary on the page"
    )  # fmt: skip
    assert await shard.check_invariants() == "zone1-103"
    await browser.screenshot("action-1400x900")

    # The other actions, through the page too: pause and resume the shard's recovery, then
    # break a lock someone else holds.
    outcome = await act("pause", {"reason": "console test"})
    assert outcome.startswith("succeeded:"), outcome
    await browser.wait("return document.querySelector('.shard-head').innerText"
                       ".includes('recovery paused')", 5, "the pause on the page")  # fmt: skip
    outcome = await act("resume")
    assert outcome.startswith("succeeded:"), outcome
    await browser.wait("return document.querySelector('.shard-head').innerText"
                       ".includes('recovery active')", 5, "the resume on the page")  # fmt: skip
    # The holder runs in a task of its own: a lock whose lease is revoked cancels its holder.
    held, lost = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with ShardLock(shard.store, "commerce", "0", action="SchemaMigration",
                             reason="console test holds it", timeout=2):  # fmt: skip
            held.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                lost.set()
                raise

    holder = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(held.wait(), 10)
        await browser.wait("return document.querySelector('.shard-head').innerText"
                           ".includes('locked by SchemaMigration')", 5, "the lock")  # fmt: skip
        outcome = await act("unlock", {"reason": "console test breaks it"})
        assert outcome.startswith("succeeded:"), outcome
        await browser.wait("return document.querySelector('.shard-head').innerText"
                           ".includes('unlocked')", 5, "the lock gone from the page")  # fmt: skip
        assert await shard.store.get_lock("commerce", "0") is None
        await asyncio.wait_for(lost.wait(), 10)  # the holder learnt it lost the lock
        await browser.screenshot("actions-1400x900")
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
