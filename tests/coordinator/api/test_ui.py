"""The admin page over HTTP, in process: signing in, the session cookie, who sees and
may do what, escaping, and the headers every page carries. The browser tests
(tests/e2e/test_admin_page.py) drive the same pages in Chromium against real processes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy

from coordinator.api import _ui, build_app
from coordinator.api._auth import ACCESS
from coordinator.config import Settings
from tests.coordinator.conftest import TOKENS, Harness

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]


class Browser:
    """A browser's view of the page: its own cookie jar, no Authorization header."""

    def __init__(self, harness: Harness) -> None:
        self.base = str(harness.client.make_url("")).rstrip("/")
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str, CIMultiDictProxy[str]]:
        async with self.session.get(self.base + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, CIMultiDictProxy[str]]:
        async with self.session.post(self.base + path, data=data, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def sign_in(self, token_name: str) -> None:
        status, _, headers = await self.post("/ui/login", {"token": TOKENS[token_name]})
        assert (status, headers["Location"]) == (303, "/ui"), status

    async def csrf(self, path: str = "/ui") -> str:
        _, html, _ = await self.get(path)
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
        assert found, f"no CSRF token on {path}"
        return found.group(1)


@pytest.fixture
async def browser(harness: Harness) -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    opened: list[Browser] = []

    async def open_browser() -> Browser:
        opened.append(Browser(harness))
        return opened[-1]

    yield open_browser
    for each in opened:
        await each.session.close()


async def _committed_with_p2_silent(harness: Harness, **extra: Any) -> str:
    harness.participants["p2"].mode = "hang_commit"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO, **extra})
    assert status == 200 and body["outcome"] == "committed"
    return str(body["gtid"])


def _abandon_form(gtid: str) -> str:
    return f'action="/ui/transactions/{gtid}/abandon"'


# -- signing in ------------------------------------------------------------------------


async def test_signing_in_sets_an_httponly_strict_cookie_for_ui_only_that_is_not_the_token(
    browser: Callable[[], Awaitable[Browser]],
) -> None:
    page = await browser()
    status, _, headers = await page.post("/ui/login", {"token": TOKENS["reader"]})

    assert (status, headers["Location"]) == (303, "/ui")
    cookie = SimpleCookie(headers["Set-Cookie"])["twopc_session"]
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP here; over TLS it is Secure (test_tls)
    assert TOKENS["reader"] not in headers["Set-Cookie"]
    status, html, _ = await page.get("/ui")
    assert status == 200 and "reader" in html


async def test_a_wrong_token_is_refused_on_the_form_with_401_and_no_cookie(
    browser: Callable[[], Awaitable[Browser]],
) -> None:
    page = await browser()
    status, html, headers = await page.post("/ui/login", {"token": "twopc_not-a-token-anyone-has"})

    assert status == 401
    assert "That token is not one this coordinator accepts." in html
    assert "Set-Cookie" not in headers
    assert (await page.get("/ui"))[2]["Location"] == "/ui/login"


async def test_a_clients_token_is_refused_on_the_form_with_403_naming_the_roles(
    browser: Callable[[], Awaitable[Browser]],
) -> None:
    page = await browser()
    status, html, headers = await page.post("/ui/login", {"token": TOKENS["client-a"]})
    assert status == 403 and "needs the reader or operator role" in html and "Set-Cookie" not in headers


async def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_a_post_is_401(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    gtid = await _committed_with_p2_silent(harness)
    page = await browser()
    for path in ("/ui", f"/ui/transactions/{gtid}", "/ui/unfinished", "/ui/participants", "/ui/audit"):
        status, _, headers = await page.get(path)
        assert (status, headers["Location"]) == (303, "/ui/login"), path
    status, html, headers = await page.post(f"/ui/transactions/{gtid}/abandon", {"participant": "p2", "reason": "x"})
    assert status == 401 and headers["Content-Type"].startswith("text/html") and "sign in" in html


async def test_the_session_cookie_is_no_credential_for_the_json_api(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    page = await browser()
    await page.sign_in("operator")
    (cookie,) = list(page.session.cookie_jar)
    async with aiohttp.ClientSession() as bare:
        url = page.base + "/v1/transactions"
        async with bare.get(url, headers={"Cookie": f"twopc_session={cookie.value}"}) as response:
            assert response.status == 401
            assert orjson.loads(await response.read())["error"]["code"] == "unauthorized"


async def test_signing_out_ends_the_session_on_the_server_too(browser: Callable[[], Awaitable[Browser]]) -> None:
    page = await browser()
    await page.sign_in("reader")
    (cookie,) = list(page.session.cookie_jar)
    stolen = cookie.value

    status, _, headers = await page.post("/ui/logout", {"csrf": await page.csrf()})

    assert (status, headers["Location"]) == (303, "/ui/login")
    assert list(page.session.cookie_jar) == []
    replay = await browser()
    replay.session.cookie_jar.update_cookies({"twopc_session": stolen}, aiohttp.client.URL(replay.base + "/ui"))
    assert (await replay.get("/ui"))[2]["Location"] == "/ui/login"


# -- who sees and does what ------------------------------------------------------------


async def test_a_reader_sees_no_abandon_form_and_its_forged_post_is_refused_403(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    gtid = await _committed_with_p2_silent(harness)
    page = await browser()
    await page.sign_in("reader")

    status, html, _ = await page.get(f"/ui/transactions/{gtid}")
    assert status == 200 and "pending phase 2" in html
    assert _abandon_form(gtid) not in html and "Abandon phase 2" not in html
    assert '<meta http-equiv="refresh"' in html  # still moving: it follows phase 2

    forged = {"csrf": await page.csrf(), "participant": "p2", "reason": "a reader tries"}
    status, html, _ = await page.post(f"/ui/transactions/{gtid}/abandon", forged)
    assert status == 403 and "operator" in html
    _, shown = await harness.call("GET", f"/v1/transactions/{gtid}")
    assert [(b["name"], b["pending"]) for b in shown["branches"]] == [("p1", False), ("p2", True)]
    assert (await harness.call("GET", "/v1/audit"))[1]["acts"] == []


async def test_an_operator_abandons_a_pending_branch_from_the_page_and_the_act_is_audited(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    gtid = await _committed_with_p2_silent(harness)
    page = await browser()
    await page.sign_in("operator")
    _, html, _ = await page.get(f"/ui/transactions/{gtid}")
    assert html.count(_abandon_form(gtid)) == 1  # p2's only: p1 acknowledged
    assert 'http-equiv="refresh"' not in html  # a reload would wipe the reason being typed

    form = {"csrf": await page.csrf(f"/ui/transactions/{gtid}"), "participant": "p2", "reason": "p2's disk <is> gone"}
    status, _, headers = await page.post(f"/ui/transactions/{gtid}/abandon", form)

    assert (status, headers["Location"]) == (303, f"/ui/transactions/{gtid}?abandoned=p2")
    _, html, _ = await page.get(headers["Location"])
    assert "state-abandoned" in html and "p2&#39;s disk &lt;is&gt; gone" in html
    _, audit = await harness.call("GET", "/v1/audit")
    assert [(a["action"], a["actor"], a["gtid"], a["participant"], a["reason"]) for a in audit["acts"]] == [
        ("abandon", "operator", gtid, "p2", "p2's disk <is> gone")
    ]
    _, html, _ = await page.get("/ui/audit")
    assert gtid in html and "p2&#39;s disk &lt;is&gt; gone" in html


async def test_an_abandon_without_this_sessions_csrf_token_is_refused(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    gtid = await _committed_with_p2_silent(harness)
    other = await browser()
    await other.sign_in("operator")
    page = await browser()
    await page.sign_in("operator")
    for csrf in ("", "0" * 64, await other.csrf()):  # none, made up, another session's
        form = {"csrf": csrf, "participant": "p2", "reason": "forged"}
        status, html, _ = await page.post(f"/ui/transactions/{gtid}/abandon", form)
        assert status == 403 and "reload the page" in html, csrf
    assert (await harness.call("GET", "/v1/audit"))[1]["acts"] == []


async def test_an_abandon_without_a_reason_is_refused_naming_the_field(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    gtid = await _committed_with_p2_silent(harness)
    page = await browser()
    await page.sign_in("operator")
    form = {"csrf": await page.csrf(), "participant": "p2", "reason": "   "}
    status, html, _ = await page.post(f"/ui/transactions/{gtid}/abandon", form)
    assert status == 422 and "reason" in html


# -- what the pages show -----------------------------------------------------------------


async def test_payloads_metadata_and_search_input_are_shown_escaped(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    harness.participants["p2"].mode = "hang_commit"
    hostile = [{"name": "p1", "payload": {"html": "<img src=x onerror=alert(1)>"}}, {"name": "p2"}]
    _, body = await harness.call(
        "POST",
        "/v1/transactions:execute",
        json={"participants": hostile, "metadata": {"note": "<script>alert(2)</script>"}},
    )
    page = await browser()
    await page.sign_in("reader")

    _, html, _ = await page.get(f"/ui/transactions/{body['gtid']}")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "<script" not in html

    status, html, _ = await page.get("/ui?q=%3Cb%3Enope%3C%2Fb%3E")
    assert status == 404 and "No transaction &#39;&lt;b&gt;nope&lt;/b&gt;&#39; was found." in html
    assert "<b>nope" not in html


async def test_a_search_for_an_exact_gtid_opens_its_page_and_an_unknown_one_says_not_found(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    page = await browser()
    await page.sign_in("reader")

    status, _, headers = await page.get(f"/ui?q=+{body['gtid']}+")
    assert (status, headers["Location"]) == (303, f"/ui/transactions/{body['gtid']}")
    status, html, _ = await page.get("/ui?q=c1-0000000000000000000000000000")
    assert status == 404 and "was found" in html
    status, html, _ = await page.get("/ui/transactions/c1-0000000000000000000000000000")
    assert status == 404 and "no transaction" in html and html.lstrip().startswith("<!doctype html>")


async def test_the_timeline_lists_each_vote_and_acknowledgement_in_order(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    page = await browser()
    await page.sign_in("reader")
    _, html, _ = await page.get(f"/ui/transactions/{body['gtid']}")
    timeline = html.split('class="timeline', 1)[1].split("</ol>", 1)[0]
    order = [timeline.index(event) for event in ("began", "p1 voted yes", "p1 acknowledged: committed")]
    assert order == sorted(order)
    assert "p2 voted yes" in timeline and "p2 acknowledged: committed" in timeline


async def test_the_overview_filters_by_state_and_pages_with_the_logs_cursor(
    harness: Harness, browser: Callable[[], Awaitable[Browser]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ui, "PAGE_SIZE", 2)
    committed = []
    for _ in range(3):
        _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
        committed.append(body["gtid"])
    _, begun = await harness.call("POST", "/v1/transactions", json={})
    page = await browser()
    await page.sign_in("reader")

    _, first, _ = await page.get("/ui?state=committed")
    assert [g for g in committed if g in first] == committed[:2] and begun["gtid"] not in first
    after = re.search(r'rel="next" href="([^"]+)"', first)
    assert after is not None
    _, second, _ = await page.get(after.group(1).replace("&amp;", "&"))
    assert [g for g in committed if g in second] == committed[2:] and 'rel="next"' not in second
    _, active, _ = await page.get("/ui?state=active")
    assert begun["gtid"] in active and not any(g in active for g in committed)
    assert (await page.get("/ui?state=bogus"))[0] == 400


async def test_the_unfinished_page_lists_an_in_doubt_branch_with_its_age_oldest_first(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    _, begun = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    gtid = await _committed_with_p2_silent(harness)
    page = await browser()
    await page.sign_in("reader")

    status, html, _ = await page.get("/ui/unfinished")

    assert status == 200 and '<meta http-equiv="refresh"' in html
    assert html.index(begun["gtid"]) < html.index(gtid)  # oldest first
    row = html[html.index(f'data-gtid="{gtid}"') :].split("</tr>")[0]
    assert re.search(r'class="age">\d+s<', row) and 'data-branch="p2"' in row and "in doubt" in row
    assert "1</strong> in-doubt branch " in html


async def test_the_participants_page_shows_each_ones_health(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    await _committed_with_p2_silent(harness)  # p1 answered; p2 times out on phase 2
    page = await browser()
    await page.sign_in("reader")

    _, html, _ = await page.get("/ui/participants")

    rows = {name: html[html.index(f'data-participant="{name}"') :].split("</tr>")[0] for name in ("p1", "p2")}
    assert "health-ok" in rows["p1"]
    assert "health-unreachable" in rows["p2"] and "no answer" in rows["p2"]


# -- the edge -----------------------------------------------------------------------------


async def test_every_page_and_error_forbids_resources_from_elsewhere(
    harness: Harness, browser: Callable[[], Awaitable[Browser]]
) -> None:
    page = await browser()
    login = await page.get("/ui/login")
    await page.sign_in("reader")
    for status, html, headers in (login, await page.get("/ui"), await page.get("/ui/transactions/not-a-gtid!")):
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "style-src 'self'" in policy and "form-action 'self'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        assert not re.search(r'(src|href|action)="(https?:)?//', html), status
    status, css, headers = await page.get("/ui/static/admin.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "url(" not in css


async def test_the_json_apis_errors_stay_json(harness: Harness) -> None:
    status, body = await harness.call("GET", "/v1/transactions/c1-0000000000000000000000000000")
    assert (status, body["error"]["code"]) == (404, "transaction_not_found")


def test_every_page_has_an_access_rule_and_acting_needs_an_operator() -> None:
    pages = {name: rule for name, rule in ACCESS.items() if rule.page}
    assert set(pages) == {
        "ui_login_form", "ui_login", "ui_logout", "ui_stylesheet", "ui_overview", "ui_transaction",
        "ui_unfinished", "ui_participants", "ui_audit", "ui_abandon",
    }  # fmt: skip
    assert {name for name, rule in pages.items() if rule.public} == {
        "ui_login_form", "ui_login", "ui_logout", "ui_stylesheet"
    }  # fmt: skip
    assert pages["ui_abandon"].roles == {"operator"}
    assert all(rule.roles == {"reader"} for name, rule in pages.items() if not rule.public and name != "ui_abandon")


async def test_with_authentication_off_the_page_needs_no_sign_in(tmp_path: Path) -> None:
    app = build_app(Settings(log={"path": tmp_path / "c.db"}, auth={"enabled": False}))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/ui")
        html = await response.text()
        assert response.status == 200 and "anonymous" in html and "Sign out" not in html
        response = await client.get("/ui/login", allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/ui")


async def test_an_unknown_page_is_an_html_404(browser: Callable[[], Awaitable[Browser]]) -> None:
    page = await browser()
    status, html, headers = await page.get("/ui/nowhere")
    assert status == 404 and headers["Content-Type"].startswith("text/html") and "404" in html
    assert "default-src 'none'" in headers["Content-Security-Policy"]
