"""The dashboard in a real browser (issue 12): headless Chromium drives the pages served for real,
over a job a worker in another thread works on, and checks what a user sees and can do.

Skipped, saying what to install, where chromium or playwright is missing (tests/browser.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagedist import Imagedist, load_config
from imagedist._backends.local import images as _local_images
from imagedist._web import create_app

from browser import (
    INSTALL,
    PATIENCE_MS,
    POLL,
    Setup,
    chromium,
    dashboard,
    free_port,
    in_thread,
    page,
    served_on,
    uploaded_job,
    work,
    worker,
)
from test_redaction import FORMS, leaks

pytest.importorskip("playwright", reason=f"the browser tests need playwright; {INSTALL}")
from playwright.sync_api import Locator, Page, Response, expect

__all__ = ["chromium", "page"]  # fixtures, used by name

expect.set_options(timeout=PATIENCE_MS)

FAILING = "sub-bravo/eastus"
TOKEN = "browser-test-token-0123456789abcdef"

# Every state-changing request the page can make, as its script makes it.
POST_EVERY_ACTION = """async ([job, target]) => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const requests = [
    ["/api/jobs/" + job + "/retry", {failed_only: true}],
    ["/api/jobs/" + job + "/retry", {targets: [target]}],
    ["/api/jobs/" + job + "/cleanup", {force: true}],
    ["/api/targets/enable", {names: [target]}],
    ["/api/targets/disable", {subscriptions: ["sub-alpha"]}],
  ];
  const answers = [];
  for (const [url, body] of requests) {
    const r = await fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)});
    answers.push([url, r.status, await r.text()]);
  }
  return answers;
}"""

# The first event of a server-sent event stream, as the page's EventSource receives it.
FIRST_EVENT = """([url, name]) => new Promise((resolve, reject) => {
  const source = new EventSource(url);
  source.addEventListener(name, (event) => { source.close(); resolve(event.data); });
  source.addEventListener("problem", (event) => { source.close(); reject(event.data); });
})"""

# The jobs table's rows as served, kept before the page's script runs (it draws them again).
SERVED_ROWS = """document.addEventListener("readystatechange", () => {
  if (document.readyState === "interactive") {
    window.servedRows = Array.from(document.querySelectorAll("#jobs-body tr"));
  }
});"""

# Every state a grid cell takes, recorded as it changes (the record lives as long as the page).
WATCH_CELLS = """() => {
  window.seenStates = {};
  const record = (cell) => {
    const seen = window.seenStates[cell.dataset.target] ??= [];
    if (seen[seen.length - 1] !== cell.dataset.state) seen.push(cell.dataset.state);
  };
  document.querySelectorAll("#grid .cell").forEach(record);
  new MutationObserver((changes) => changes.forEach((c) => record(c.target)))
    .observe(document.getElementById("grid"), {subtree: true, attributeFilter: ["data-state"]});
}"""


def failed_job(folder: Path) -> Setup:
    """A job worked to its end whose image in :data:`FAILING` failed."""
    setup = uploaded_job(folder, fail_images_in=[FAILING])
    work(setup.config_path, setup.job)
    return setup


def cell(page: Page, target: str) -> Locator:
    return page.locator(f'#grid .cell[data-target="{target}"]')


def test_the_grid_fills_in_live_without_a_reload(page: Page, tmp_path: Path) -> None:
    # Slow enough that the page must show targets on their way.
    setup = uploaded_job(tmp_path, bandwidth_mib_s=8, image_seconds=2.0)
    page.add_init_script(SERVED_ROWS)
    with dashboard(setup, page) as base:
        page.goto(f"{base}/")
        row = page.locator(f'#jobs-table tr[data-job-id="{setup.job}"]')
        expect(row).to_have_attribute("data-state", "active")
        # The phases in the order they run, also once the first live update drew the row again.
        page.wait_for_function("() => window.servedRows.every((tr) => !tr.isConnected)")
        phases = row.locator("progress[data-phase]")
        expect(phases).to_have_count(4)
        assert phases.evaluate_all("bars => bars.map(b => b.dataset.phase)") == [
            "upload",
            "tier1",
            "copies",
            "images",
        ]
        expect(row.locator('progress[data-phase="upload"]')).to_have_attribute("value", "100")
        row.get_by_role("link", name=setup.job).click()

        expect(page.locator("body")).to_have_attribute("data-page", "job")
        cells = page.locator("#grid .cell")
        expect(cells).to_have_count(6)
        expect(page.locator('#grid .cell[data-state="pending"]')).to_have_count(6)
        expect(page.locator("#connection")).to_have_attribute("data-connection", "live")
        page.evaluate(WATCH_CELLS)

        with worker(setup.config_path, setup.job):
            expect(page.locator('#grid .cell[data-state="done"]')).to_have_count(6)
            expect(page.locator("#job-state")).to_have_attribute("data-state", "completed")

        expect(cells.locator(".label-text")).to_have_text(["done"] * 6)
        expect(page.locator('#phases progress[data-phase="images"]')).to_have_attribute(
            "value", "100"
        )
        # The same document all along (a reload or navigation would have lost the record).
        seen: dict[str, list[str]] = page.evaluate("window.seenStates")
        assert sorted(seen) == sorted(cells.evaluate_all("cs => cs.map(c => c.dataset.target)"))
        for target, states in seen.items():
            assert states[0] == "pending" and states[-1] == "done", (target, states)
        # ... and the steps between, as they happened (the images alone take two seconds).
        between = {"copying", "copied", "imaging"}
        assert any(between & set(states) for states in seen.values()), seen


def test_a_failed_cell_says_why_and_a_retry_from_it_turns_it_done(
    page: Page, tmp_path: Path
) -> None:
    setup = failed_job(tmp_path)
    with dashboard(setup, page) as base:
        page.goto(f"{base}/jobs/{setup.job}")
        failed = cell(page, FAILING)
        expect(failed).to_have_attribute("data-state", "failed")
        # Not colour only: a word and an icon.
        expect(failed.locator(".label-text")).to_have_text("failed")
        expect(failed.locator(".icon")).to_have_text("✗")
        expect(page.locator("#job-state")).to_have_text("failed")

        reason = page.locator(f"#{failed.get_attribute('aria-describedby')}")
        expect(reason).to_be_hidden()
        failed.hover()
        expect(reason).to_be_visible()
        expect(reason).to_contain_text("injected image creation failure")
        page.mouse.move(0, 0)
        expect(reason).to_be_hidden()
        failed.focus()
        expect(reason).to_be_visible()

        failed.click()
        expect(page.locator("#confirm-dialog")).to_be_visible()
        expect(page.locator("#confirm-message")).to_contain_text(f"Retry target {FAILING}")
        page.locator("#confirm-ok").click()
        expect(page.locator("#confirm-dialog")).to_be_hidden()
        result = page.locator("#action-result")
        expect(result).to_have_attribute("data-outcome", "ok")
        expect(result).to_contain_text(FAILING)
        expect(failed).not_to_have_attribute("data-state", "failed")
        expect(page.locator("#job-state")).to_have_text("active")

        # The failure repaired (a worker whose backend no longer fails it) finishes the job.
        with worker(setup.repaired_path, setup.job):
            expect(failed).to_have_attribute("data-state", "done")
            expect(failed.locator(".label-text")).to_have_text("done")
            expect(page.locator("#job-state")).to_have_text("completed")


def test_read_only_renders_no_action_and_refuses_every_change(page: Page, tmp_path: Path) -> None:
    setup = failed_job(tmp_path)
    with dashboard(setup, page, read_only=True) as base:
        for path in ("/", f"/jobs/{setup.job}", "/targets", f"/plan?job={setup.job}"):
            page.goto(base + path)
            expect(page.locator("body")).to_have_attribute("data-read-only", "true")
            expect(page.locator("#read-only-badge")).to_be_visible()
            expect(page.locator("[data-action]")).to_have_count(0)
            expect(page.locator("#confirm-dialog")).to_have_count(0)

        page.goto(f"{base}/jobs/{setup.job}")
        failed = cell(page, FAILING)
        failed.click()  # a cell still shows its reason, and does nothing else
        expect(page.locator("dialog")).to_have_count(0)

        answers = page.evaluate(POST_EVERY_ACTION, [setup.job, FAILING])
        assert [status for _, status, _ in answers] == [403] * len(answers), answers
        for url, _, body in answers:
            assert "read-only" in body, (url, body)
        page.reload()
        expect(cell(page, FAILING)).to_have_attribute("data-state", "failed")
        page.goto(f"{base}/targets")
        expect(page.locator('#targets-table tr[data-enabled="false"]')).to_have_count(0)


def test_with_a_token_only_the_login_form_shows_until_it_is_entered(
    page: Page, tmp_path: Path
) -> None:
    setup = failed_job(tmp_path)
    with dashboard(setup, page, token=TOKEN) as base:
        page.goto(f"{base}/jobs/{setup.job}")
        expect(page.locator("body")).to_have_attribute("data-page", "login")
        expect(page.locator("#grid")).to_have_count(0)
        assert page.request.get(f"{base}/api/jobs").status == 401
        answers = page.evaluate(POST_EVERY_ACTION, [setup.job, FAILING])
        assert [status for _, status, _ in answers] == [401] * len(answers), answers

        page.locator("#token").fill("not-the-token-0123456789")
        page.locator("#login-submit").click()
        expect(page.locator("#login-error")).to_be_visible()
        expect(page.locator("body")).to_have_attribute("data-page", "login")

        page.locator("#token").fill(TOKEN)
        page.locator("#login-submit").click()
        expect(page.locator("body")).to_have_attribute("data-page", "job")
        expect(page).to_have_url(re.compile(f"/jobs/{setup.job}$"))
        expect(cell(page, FAILING)).to_have_attribute("data-state", "failed")
        expect(page.locator("#connection")).to_have_attribute("data-connection", "live")

        cookies = page.context.cookies()
        assert cookies, "the login set no cookie"
        for cookie in cookies:
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
            assert TOKEN not in cookie["value"], "the cookie holds the token itself"

        cell(page, FAILING).click()
        page.locator("#confirm-ok").click()
        expect(page.locator("#action-result")).to_have_attribute("data-outcome", "ok")
        expect(cell(page, FAILING)).not_to_have_attribute("data-state", "failed")


def test_no_secret_in_any_page_or_response_the_page_fetched(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a platform's error might quote: every form of SAS, key and token.
    planted = "PLANTED " + " | ".join(FORMS.values())
    monkeypatch.setattr(
        _local_images,
        "INJECTED_IMAGE_FAILURE",
        planted.replace("{", "{{").replace("}", "}}"),
    )
    setup = failed_job(tmp_path)
    responses: list[Response] = []
    page.on("response", lambda response: responses.append(response))
    read: dict[str, str] = {}

    def read_responses() -> None:
        """The bodies of the responses so far (readable only until the page navigates away);
        an event stream never ends: its events are read below, as the page's script reads them."""
        for response in responses:
            kind = response.headers.get("content-type") or ""
            if "event-stream" not in kind and response.status != 303:
                read[response.url] = response.text()
        responses.clear()

    with dashboard(setup, page) as base:
        for path in (
            "/",
            f"/jobs/{setup.job}",
            f"/jobs/{setup.job}?level=error",
            f"/jobs/{setup.job}?target={FAILING}",
            "/targets",
            f"/plan?job={setup.job}",
        ):
            page.goto(base + path)
            page.wait_for_load_state("load")
            assert not leaks(page.content()), path
            read_responses()

        page.goto(f"{base}/jobs/{setup.job}")
        failed = cell(page, FAILING)
        failed.hover()
        reason = page.locator(f"#{failed.get_attribute('aria-describedby')}")
        expect(reason).to_contain_text("PLANTED")  # the error did reach the page
        assert not leaks(reason.inner_text())
        assert not leaks(failed.get_attribute("title") or "")

        for path in (f"/api/jobs/{setup.job}", f"/api/jobs/{setup.job}/logs", "/api/jobs"):
            page.evaluate("(path) => fetch(path).then((r) => r.text())", path)
        read_responses()
        read["job events"] = page.evaluate(FIRST_EVENT, [f"/api/jobs/{setup.job}/events", "status"])
        read["jobs events"] = page.evaluate(FIRST_EVENT, ["/api/events", "jobs"])

    assert "PLANTED" in read[f"{base}/api/jobs/{setup.job}"]
    assert "PLANTED" in read["job events"]
    assert len(read) >= 12, sorted(read)
    for url, text in read.items():
        assert not leaks(text), url


def test_cells_and_actions_work_from_the_keyboard(page: Page, tmp_path: Path) -> None:
    setup = failed_job(tmp_path)
    with dashboard(setup, page) as base:
        page.goto(f"{base}/jobs/{setup.job}")
        expect(page.locator("#connection")).to_have_attribute("data-connection", "live")
        reached: list[str] = []
        for _ in range(60):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                "() => { const e = document.activeElement;"
                " return (e.dataset.action || e.tagName) + ':' + (e.dataset.target || e.dataset.mode || e.dataset.force || ''); }"
            )
            reached.append(focused)
            if focused == f"retry-target:{FAILING}":
                break
        for mode in ("retry:all", "retry:failed", "retry:phase"):
            assert mode in reached, reached
        assert "cleanup:false" in reached and "cleanup:true" in reached, reached
        assert reached[-1] == f"retry-target:{FAILING}", reached
        failed = cell(page, FAILING)
        expect(failed).to_be_focused()
        expect(page.locator(f"#{failed.get_attribute('aria-describedby')}")).to_be_visible()

        # Enter opens the confirmation; Escape closes it, and nothing happened.
        page.keyboard.press("Enter")
        expect(page.locator("#confirm-dialog")).to_be_visible()
        expect(page.locator("#confirm-cancel")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.locator("#confirm-dialog")).to_be_hidden()
        expect(page.locator("#action-result")).to_have_text("")

        # Space opens it too; Tab to Confirm, Enter: the retry is done.
        failed.focus()
        page.keyboard.press("Space")
        expect(page.locator("#confirm-dialog")).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.locator("#confirm-ok")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#action-result")).to_have_attribute("data-outcome", "ok")
        expect(failed).not_to_have_attribute("data-state", "failed")

        # An action button: Enter asks, Space on Cancel declines.
        button = page.locator('button[data-action="retry"][data-mode="failed"]')
        button.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#confirm-message")).to_contain_text("Retry the failed targets")
        page.keyboard.press("Space")  # on Cancel, which has the focus
        expect(page.locator("#confirm-dialog")).to_be_hidden()


def test_the_page_says_when_it_lost_the_dashboard_and_catches_up_when_back(
    page: Page, tmp_path: Path
) -> None:
    setup = failed_job(tmp_path)
    port = free_port()
    with served_on(create_app(setup.factory(), poll_interval=POLL), port) as base:
        page.goto(f"{base}/jobs/{setup.job}")
        expect(page.locator("#connection")).to_have_attribute("data-connection", "live")
        expect(cell(page, FAILING)).to_have_attribute("data-state", "failed")
        page.evaluate("window.stayed = true")

    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-connection", "lost")
    expect(connection).to_have_text("connection lost — reconnecting")
    # A change while the dashboard is down (by the CLI, say), then the dashboard back.
    in_thread(lambda: retrying(setup.config_path, setup.job, FAILING))
    with served_on(create_app(setup.factory(), poll_interval=POLL), port):
        expect(connection).to_have_attribute("data-connection", "live")
        expect(cell(page, FAILING)).not_to_have_attribute("data-state", "failed")
        expect(page.locator("#job-state")).to_have_text("active")
        assert page.evaluate("window.stayed") is True  # caught up without a reload
        page.goto("about:blank")  # the stream would hold the server's shutdown open


async def retrying(config_path: Path, job: str, target: str) -> list[str]:
    async with Imagedist(load_config(config_path)) as app:
        return await app.retry(job, targets=[target])
