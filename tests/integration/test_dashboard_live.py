"""The dashboard's second increment in a real browser (Debian's Chromium driven by Playwright): the
charts per release moving under a bounded load, the event stream filtered and live, an instance's
log followed, scale and quarantine from the page, a canary's two sides live and its abort and
promote from the page; every action refused without the session or its CSRF token. Screenshots
go to test-artifacts/dashboard/ as in test_dashboard.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Load, free_port, herd, stop_project, wait_for
from tests.integration.test_canary import project as canary_project
from tests.integration.test_dashboard import shot


def token_of(root: Path) -> str:
    return (root / ".herd" / "agent-production.token").read_text().strip()


def logged_in(chromium: Any, ui: str, root: Path) -> tuple[Any, Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(ui + "/login")
    page.fill("input[name=token]", token_of(root))
    page.click("button[type=submit]")
    page.wait_for_url(ui + "/")
    return context, page


def reload_until(page: Any, selector: str, tries: int = 120) -> Any:
    """Reload the page until ``selector`` shows (what an action started in the agent finished)."""
    for _ in range(tries):
        if page.locator(selector).count():
            return page.locator(selector)
        page.wait_for_timeout(500)
        page.reload()
    raise AssertionError(f"{selector} never showed:\n{page.locator('main').inner_text()}")


def rows_until(page: Any, count: int, tries: int = 60) -> None:
    """Reload until the page lists ``count`` instances (a heal on a loaded machine, with checks
    every 100 ms, may surge one more for a while)."""
    for _ in range(tries):
        if page.locator("tr.instance").count() == count:
            return
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator("tr.instance").count() == count, page.locator("#services").inner_text()


def test_every_new_page_and_action_needs_the_session_and_its_csrf_token(
    hello_with_dashboard: tuple[Path, str, int],
) -> None:
    root, ui, _ = hello_with_dashboard
    web = next(i["id"] for i in _instances(root))
    for path in ("/events", "/events/live", f"/instances/{web}/log", f"/instances/{web}/log/live"):
        answer = httpx.get(ui + path, cookies={"herd_session": "forged"})
        assert answer.status_code in (303, 401), (path, answer.status_code)
        assert "web-1" not in answer.text and "hello listening" not in answer.text
    actions = {
        "/scale": {"service": "web", "replicas": "3"},
        "/quarantine": {"instance": web},
        "/canary": {"service": "web", "decision": "abort"},
    }
    for path, fields in actions.items():
        refused = httpx.post(ui + path, data=fields)
        assert refused.status_code == 303 and refused.headers["location"] == "/ui/login", path
    with httpx.Client() as browser:
        browser.post(ui + "/login", data={"token": token_of(root)})
        for path, fields in actions.items():
            for csrf in ({}, {"csrf": "wrong"}):
                refused = browser.post(ui + path, data={**fields, **csrf})
                assert refused.status_code == 403, (path, csrf, refused.status_code)
        page = browser.get(ui + "/").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        assert (
            browser.post(ui + "/scale", data={"service": "web", "replicas": "-1", "csrf": csrf}).status_code
            == 400
        )
        assert (
            browser.post(ui + "/scale", data={"service": "nope", "replicas": "1", "csrf": csrf}).status_code
            == 404
        )
        missing = browser.post(ui + "/quarantine", data={"instance": "web-9-none", "csrf": csrf})
        assert missing.status_code == 404
        nothing = browser.post(ui + "/canary", data={"service": "web", "decision": "abort", "csrf": csrf})
        assert nothing.status_code == 404, "no canary is being judged"
        assert browser.get(ui + "/instances/..%2Fstate.db/log").status_code == 404
        assert browser.get(ui + "/quarantine/nope/log").status_code == 404
    assert herd(root, "ps").stdout.count("web-1-") == 2, "nothing refused was done"

    # the CLI's way to the same API call the page makes
    wrong = herd(root, "quarantine", "add", "web-9-none", check=False)
    assert wrong.returncode != 0 and "no running instance 'web-9-none'" in wrong.stderr, wrong.stderr
    asked = herd(root, "quarantine", "add", web, "--reason", "looked odd").stdout
    assert f"{web} (web): being replaced, then kept" in asked
    wait_for(lambda: web in herd(root, "quarantine").stdout, 60, 0.5)
    record = json.loads(herd(root, "inspect", web, "--json").stdout)
    assert record["reason"] == "quarantined by hand: looked odd"
    wait_for(lambda: len(_instances(root)) == 2 and web not in {i["id"] for i in _instances(root)}, 60, 0.5)


def test_charts_events_logs_scale_and_quarantine_from_the_page(
    hello_with_dashboard: tuple[Path, str, int], chromium: Any, tmp_path: Path
) -> None:
    root, ui, route = hello_with_dashboard
    context, page = logged_in(chromium, ui, root)

    chart = '.chart[data-service="web"][data-release="1"]'
    with Load(f"http://127.0.0.1:{route}/", workers=2) as load:
        page.wait_for_function(
            f"() => parseFloat(document.querySelector('{chart} [data-metric=rate]')?.textContent) > 1",
            timeout=30_000,
        )
        page.wait_for_function(
            f"() => /ms/.test(document.querySelector('{chart} [data-metric=p99]')?.textContent || '')",
            timeout=30_000,
        )
        page.wait_for_function(
            f"() => (document.querySelector('{chart} polyline.rate')?.getAttribute('points') || '')"
            ".split(' ').length >= 4",
            timeout=30_000,
        )
        first = page.locator(f"{chart} polyline.rate").get_attribute("points")
        page.wait_for_function(
            f"(before) => document.querySelector('{chart} polyline.rate').getAttribute('points') !== before",
            arg=first,
            timeout=30_000,
        )
        assert page.locator(f"{chart} [data-metric=errors]").inner_text() == "0.0%"
        shot(page, tmp_path, "5-charts-per-release")
    assert not load.failures, load.failures[:3]

    # the event stream, filtered, and live in another tab
    events = context.new_page()
    events.goto(ui + "/events")
    assert events.locator("tr.event").count() >= 1
    one = events.locator("tr.event td:nth-child(4):not(:empty)").first.inner_text()
    events.goto(ui + f"/events?instance={one}")
    shown = events.locator("tr.event td:nth-child(4)").all_inner_texts()
    assert shown and set(shown) == {one}, shown
    events.goto(ui + "/events")
    events.select_option("select[name=kind]", "agent")
    events.click(".filter button[type=submit]")
    events.wait_for_url(re.compile(r".*kind=agent.*"))
    kinds = set(events.locator("tr.event").evaluate_all("rows => rows.map(r => r.dataset.kind)"))
    assert kinds == {"agent"}, kinds
    events.goto(ui + "/events?kind=scale&service=web")
    assert events.locator("tr.event").count() == 0

    # scale from the page; the filtered stream shows it without a reload
    page.bring_to_front()
    page.fill('.service[data-service="web"] input[name=replicas]', "3")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click('.service[data-service="web"] .scale button')
    assert page.locator(".notice").count() == 0, "a dismissed confirmation does nothing"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('.service[data-service="web"] .scale button')
    page.wait_for_url(ui + "/")
    assert "scale web to 3: asked" in page.locator(".notice").first.inner_text()
    reload_until(page, '.service[data-service="web"] .running:text-is("3")')
    rows_until(page, 3)
    assert page.locator('.service[data-service="web"] .replicas').inner_text() == "3"
    events.wait_for_selector("tr.event.fresh[data-kind=scale]", timeout=30_000)
    assert "3" in events.locator("tr.event.fresh").first.inner_text()
    shot(events, tmp_path, "6-events-filtered-live")
    events.close()

    # an instance's log, followed live
    instance = page.locator("tr.instance").first.get_attribute("data-instance")
    page.click(f'tr.instance[data-instance="{instance}"] a.follow')
    page.wait_for_url(f"{ui}/instances/{instance}/log")
    page.wait_for_function("() => document.querySelector('#following').textContent === 'following'")
    before = page.locator("#log").inner_text()
    with Load(f"http://127.0.0.1:{route}/", workers=1):
        page.wait_for_function(
            "(before) => document.querySelector('#log').textContent.length > before.length + 20",
            arg=before,
            timeout=30_000,
        )
    assert re.search(r'"GET / HTTP/1\.1" 200', page.locator("#log").inner_text()[len(before) :])
    shot(page, tmp_path, "7-log-followed")

    # quarantine from the page: replaced first, then kept with its record and log
    page.goto(ui + "/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f'tr.instance[data-instance="{instance}"] button.quarantine')
    page.wait_for_url(ui + "/")
    kept = reload_until(page, f'details.kept[data-instance="{instance}"]')
    assert "quarantined by hand: from the dashboard" in kept.inner_text()
    assert kept.locator("pre.tail").inner_text().strip()
    full = kept.locator("a.full-log").get_attribute("href")
    answer = context.request.get(ui.removesuffix("/ui") + full)
    assert answer.status == 200 and "hello listening" in answer.text()
    reload_until(page, '.service[data-service="web"] .running:text-is("3")')
    for _ in range(60):  # stopped after its record was written: gone from the list soon after
        if page.locator(f'tr.instance[data-instance="{instance}"]').count() == 0:
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator(f'tr.instance[data-instance="{instance}"]').count() == 0
    shot(page, tmp_path, "8-quarantined-from-the-page")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling of the page"
    shot(page, tmp_path, "9-narrow-screen-second")
    context.close()


def test_a_canary_live_and_aborted_then_promoted_from_the_page(chromium: Any, tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = canary_project(root)
    api = free_port()
    ui = f"http://127.0.0.1:{api}/ui"
    toml = root / "herd.toml"
    herd(root, "up", "-d", "--api", f"127.0.0.1:{api}")
    try:
        context, page = logged_in(chromium, ui, root)
        with Load(f"http://127.0.0.1:{port}/", workers=2) as load:
            canary_project(root, delay_ms=2)
            toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "10m"'))
            deploying = _deploy(root)
            side = 'tr.canary[data-service="web"][data-side="canary"]'
            page.wait_for_selector(f"{side}.state-judging", timeout=120_000)  # live: no reload
            page.wait_for_function(
                f"() => parseInt(document.querySelector('{side} td:nth-child(7)').textContent) > 0",
                timeout=60_000,
            )
            assert page.locator(".rollout .step").count() >= 2, "the rollout's steps"
            assert "baseline (fresh)" in page.locator("table.canaries").inner_text()
            shot(page, tmp_path, "10-canary-judging")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click('.canary-actions[data-service="web"] button.abort')
            page.wait_for_url(ui + "/")
            out, _ = deploying.communicate(timeout=120)
            assert deploying.returncode != 0 and "aborted by hand" in out, out
            page.wait_for_selector(f"{side}.state-failed", timeout=30_000)
            assert page.locator(".canary-actions").count() == 0
            shot(page, tmp_path, "11-canary-aborted")

            canary_project(root, delay_ms=3)
            toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "10m"'))
            app = root / "app" / "app.py"
            app.write_text(app.read_text() + "# release 3: a new app layer\n")  # a layer diff to show
            deploying = _deploy(root)
            page.wait_for_selector(f"{side}.state-judging", timeout=120_000)
            page.once("dialog", lambda dialog: dialog.accept())
            page.click('.canary-actions[data-service="web"] button.promote')
            page.wait_for_url(ui + "/")
            out, _ = deploying.communicate(timeout=120)
            assert deploying.returncode == 0 and "promoted by hand" in out, out
        assert load.failures == []
        third = reload_until(page, 'li.release.current[data-release="3"]')
        assert "failed" in page.locator('li.release[data-release="2"]').inner_text()
        third.locator("details.diff summary").click()
        diff = third.locator("details.diff").inner_text()
        assert "web.env.DELAY_MS" in diff and "web.image" in diff, diff
        layers = third.locator('.layers[data-service="web"]')
        assert layers.locator(".before").count() == 1 and layers.locator(".after").count() == 1, diff
        shot(page, tmp_path, "12-canary-promoted")
        context.close()
    finally:
        stop_project(root)


def _deploy(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "deploy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _instances(root: Path) -> list[dict[str, str]]:
    from tests.helpers import instances

    return wait_for(lambda: [i for i in instances(root) if i["state"] == "running"], 30)
