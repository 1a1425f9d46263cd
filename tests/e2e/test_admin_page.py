"""The admin page in a real browser (Debian's headless Chromium, driven by playwright)
against real processes: a coordinator and two mock queues, one of which dies after its
vote so that its branch is left in doubt.

``TWOPC_SCREENSHOTS=docs`` makes the tests also save the README's screenshots there.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import FAST, QUEUES, payloads
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Long enough for a page's automatic reload to bring news, on a busy machine.
SEEN = 15_000


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must run these, never skip them
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium_path),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def signed_in(browser: Browser, cluster: LocalCluster, token_name: str) -> Page:
    """A fresh browser profile signed in to the page with one of the cluster's tokens."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{cluster.coordinator_url}/ui")
    await expect(page).to_have_url(re.compile(r"/ui/login$"))  # no session yet
    await page.fill("#token", cluster.tokens[token_name])
    await page.click("button:has-text('Sign in')")
    await expect(page).to_have_url(re.compile(r"/ui$"))
    await expect(page.locator(".who")).to_contain_text(token_name)
    return page


def _screenshot_path(name: str) -> Path | None:
    directory = os.environ.get("TWOPC_SCREENSHOTS")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / name


async def screenshot(page: Page, name: str) -> None:
    """Save the page as ``name`` when TWOPC_SCREENSHOTS names a directory."""
    path = _screenshot_path(name)
    if path is not None:
        await page.screenshot(path=str(path), full_page=True)


async def test_a_committed_transaction_is_listed_found_and_shown_with_both_branches(
    tmp_path: Path, browser: Browser
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, inquiry_interval=0.3)
    try:
        cluster.start()
        async with CoordinatorClient(cluster.coordinator_url, token=cluster.tokens["client"]) as client:
            answer = await client.execute(payloads("<b>shown</b>"))
        gtid = answer["gtid"]
        assert answer["outcome"] == "committed"

        # A wrong token is refused on the form, and no session comes of it.
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{cluster.coordinator_url}/ui/login")
        await page.fill("#token", "twopc_not-a-token-anyone-has")
        async with page.expect_response(lambda r: r.request.method == "POST") as refused:
            await page.click("button:has-text('Sign in')")
        assert (await refused.value).status == 401
        await expect(page.locator(".message")).to_have_text("That token is not one this coordinator accepts.")
        assert await context.cookies() == []

        page = await signed_in(browser, cluster, "reader")
        await expect(page.locator("table")).to_contain_text(gtid)
        await page.goto(f"{cluster.coordinator_url}/ui?state=committed")
        await expect(page.locator(f"a.gtid:has-text('{gtid}')")).to_be_visible()

        await page.fill("#q", gtid)
        await page.click("button:has-text('Find')")
        await expect(page).to_have_url(re.compile(f"/ui/transactions/{gtid}$"))
        await expect(page.locator("#tx-state")).to_have_text("committed")
        await expect(page.locator("#tx-decision")).to_have_text("committed")
        rows = page.locator("#branches tbody tr")
        await expect(rows).to_have_count(2)
        for queue in QUEUES:
            await expect(page.locator(f"tr[data-participant='{queue}'] .branch-state")).to_have_text("committed")

        await page.fill("#q", "c1-nosuchtransaction")
        await page.click("button:has-text('Find')")
        await expect(page.locator(".message")).to_have_text("No transaction 'c1-nosuchtransaction' was found.")
    finally:
        cluster.stop()


async def test_an_in_doubt_branch_shows_its_age_and_an_operator_abandons_it_where_a_reader_cannot(
    tmp_path: Path, browser: Browser
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, inquiry_interval=0.3)
    # queue-b votes yes, then dies as its commit arrives: its branch stays in doubt.
    cluster.nodes["queue-b"].env["TWOPC_FAILPOINTS"] = "participant.before_commit_applied=crash"
    try:
        cluster.start()
        url = cluster.coordinator_url
        async with CoordinatorClient(url, token=cluster.tokens["client"]) as client:
            answer = await client.execute(payloads("in-doubt"))
            gtid = answer["gtid"]
            victim = cluster.nodes["queue-b"]
            await wait_until(lambda: not victim.running, timeout=10, message="queue-b to die at its commit")
            for n in range(3):  # queue-a alone still commits: company for the screenshot
                await client.execute([{"name": "queue-a", "payload": {"items": [f"order-{n}"]}}])
        assert answer["outcome"] == "committed"

        reader = await signed_in(browser, cluster, "reader")
        await reader.goto(f"{url}/ui/unfinished")
        row = reader.locator(f"#unfinished tr[data-gtid='{gtid}']")
        await expect(row.locator("[data-branch='queue-b']")).to_contain_text("in doubt")
        await expect(row.locator(".age")).to_have_text(re.compile(r"^\d+(s|m \d\ds|h \d\dm)$"))
        await screenshot(reader, "admin-unfinished.png")
        await reader.goto(f"{url}/ui/participants")
        await expect(reader.locator("tr[data-participant='queue-b'] .health")).to_have_text("unreachable", timeout=SEEN)
        await expect(reader.locator("tr[data-participant='queue-a'] .health")).to_have_text("ok")

        # A reader sees the pending branch but no operator's form, and a forged POST is refused.
        await reader.goto(f"{url}/ui/transactions/{gtid}")
        await expect(reader.locator("tr[data-participant='queue-b']")).to_contain_text("pending phase 2")
        await expect(reader.locator("form.abandon")).to_have_count(0)
        csrf = await reader.locator("input[name=csrf]").first.get_attribute("value")
        forged = await reader.request.post(
            f"{url}/ui/transactions/{gtid}/abandon",
            form={"csrf": csrf or "", "participant": "queue-b", "reason": "a reader tries"},
            max_redirects=0,
        )
        assert forged.status == 403

        operator = await signed_in(browser, cluster, "operator")
        await screenshot(operator, "admin-page.png")
        await operator.goto(f"{url}/ui/transactions/{gtid}")
        forms = operator.locator("form.abandon")
        await expect(forms).to_have_count(1)  # queue-b's: queue-a acknowledged
        await operator.fill("#reason-queue-b", "queue-b's disk is gone for good")
        await screenshot(operator, "admin-transaction.png")
        await operator.click("button:has-text('Abandon phase 2 to queue-b')")

        await expect(operator.locator(".message")).to_contain_text("Phase 2 to 'queue-b' was abandoned")
        await expect(operator.locator("tr[data-participant='queue-b'] .branch-state")).to_have_text("abandoned")
        await expect(operator.locator("tr[data-participant='queue-b']")).to_contain_text("operator")
        await operator.goto(f"{url}/ui/audit")
        act = operator.locator("#audit tbody tr").first
        for shown in ("operator", "abandon", gtid, "queue-b", "queue-b's disk is gone for good"):
            await expect(act).to_contain_text(shown)
        await operator.goto(f"{url}/ui/unfinished")
        await expect(operator.locator(f"#unfinished tr[data-gtid='{gtid}']")).to_have_count(0, timeout=SEEN)
    finally:
        cluster.stop()
