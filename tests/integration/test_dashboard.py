"""The agent's web dashboard in a real browser (Debian's Chromium driven by Playwright): refused
without a session, a login with the token, the release and instances of a running examples/hello,
the request rate moving under a bounded load, and a rollback from the page. Screenshots are saved
in the test's tmp_path and copied to test-artifacts/dashboard/ for a person to look at."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx

from herdsman.state import asker
from tests.helpers import Load, herd

REPO = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


def test_nothing_is_readable_without_a_session(hello_with_dashboard: tuple[Path, str, int]) -> None:
    root, ui, _ = hello_with_dashboard
    for path in ("/", "/live"):
        for cookies in ({}, {"herd_session": "forged"}):
            answer = httpx.get(ui + path, cookies=cookies)
            assert answer.status_code in (303, 401), (path, answer.status_code)
            assert "web-1" not in answer.text and "sha256" not in answer.text
            if answer.status_code == 303:
                assert answer.headers["location"] == "/ui/login"
    token = (root / ".herd" / "agent-production.token").read_text().strip()
    assert httpx.post(ui + "/rollback", data={"release": "1"}).status_code == 303  # to the login
    api_status = httpx.get(ui.removesuffix("/ui") + "/v1/status")
    assert api_status.status_code == 401, "the API still needs the token"
    assert httpx.post(ui + "/login", data={"token": "nope"}).status_code == 401
    with httpx.Client() as browser:
        browser.post(ui + "/login", data={"token": token})
        assert browser.get(ui + "/").status_code == 200
        refused = browser.post(ui + "/rollback", data={"release": "1", "csrf": "wrong"})
        assert refused.status_code == 403, "an action needs the session's CSRF token"


def test_the_dashboard_in_chromium(
    hello_with_dashboard: tuple[Path, str, int], chromium: Any, tmp_path: Path
) -> None:
    root, ui, route = hello_with_dashboard
    token = (root / ".herd" / "agent-production.token").read_text().strip()
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()

    page.goto(ui + "/")
    assert page.url == ui + "/login", "no session: the login form"
    assert page.locator("tr.instance").count() == 0
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")
    assert page.locator("#wrong").is_visible()
    shot(page, tmp_path, "1-login-refused")

    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(ui + "/")
    (cookie,) = context.cookies()
    assert cookie["name"] == "herd_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]
    assert page.locator('li.release.current[data-release="1"]').is_visible()
    for _ in range(60):  # a heal on a loaded machine (100 ms checks) may surge a third for a while
        if page.locator("tr.instance").count() == 2:
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator("tr.instance").count() == 2, page.locator("#services").inner_text()
    assert re.search(r"web-1-\w+", page.locator("#services").inner_text())

    rate = page.locator('.rate[data-service="web"]')
    with Load(f"http://127.0.0.1:{route}/", workers=2) as load:
        page.wait_for_function(
            "() => parseFloat(document.querySelector('.rate[data-service=web]').textContent) > 1",
            timeout=20_000,
        )
        page.wait_for_function(
            "() => document.querySelector('polyline[data-service=web]').getAttribute('points')"
            ".split(' ').length >= 4",
            timeout=20_000,
        )
        shot(page, tmp_path, "2-live-under-load")
    assert not load.failures, load.failures[:3]
    assert float(rate.inner_text()) > 1

    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace("Hello from herdsman", "Hello again"))
    herd(root, "deploy", timeout=180)
    page.reload()
    assert page.locator('li.release.current[data-release="2"]').is_visible()

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click('li.release[data-release="1"] button')
    assert page.locator(".notice").count() == 0, "a dismissed confirmation does nothing"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('li.release[data-release="1"] button')
    page.wait_for_url(ui + "/")
    assert "rollback to release 1: started" in page.locator(".notice").first.inner_text()
    for _ in range(120):
        if page.locator('li.release.current[data-release="3"]').count():
            break
        page.wait_for_timeout(500)
        page.reload()
    third = page.locator('li.release.current[data-release="3"]')
    assert third.is_visible(), page.locator("#releases").inner_text()
    assert "copy of #1" in third.inner_text()
    assert "by the dashboard (127.0.0.1)" in third.inner_text(), "who asked for it"
    assert f"by {asker()}" in page.locator('li.release[data-release="2"]').inner_text(), (
        "herd deploy's user@host"
    )
    assert "release 3 deployed" in page.locator("main").inner_text()
    shot(page, tmp_path, "3-rolled-back")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling of the page"
    shot(page, tmp_path, "4-narrow-screen")
    context.close()


def test_forms_that_are_not_ours_are_refused(hello_with_dashboard: tuple[Path, str, int]) -> None:
    _, ui, _ = hello_with_dashboard
    assert httpx.post(ui + "/login", content=b"token=" + b"x" * 20000).status_code == 413
    assert httpx.post(ui + "/login", content=b"&".join([b"a=1"] * 20)).status_code == 413
