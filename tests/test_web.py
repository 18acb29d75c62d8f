"""The web dashboard's pages and JSON API on the local backend (issue 12), without a browser:
shapes, filters, actions under the CLI's rules, read-only mode, the token and the CSRF
defence, security headers, and no secret in any response."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from imagedist import Imagedist, OsType
from imagedist._domain import TargetState
from imagedist._web import create_app

from helpers import call, config_text, make_disk
from web_helpers import (
    BASE,
    FAILING,
    SECRETS,
    TOKEN,
    Fleet,
    Leaky,
    client,
    csrf_headers,
    every_route,
    json_of,
    make_fleet,
)

GIB = 1024**3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Two finished jobs (newest last), each with one failed target; tests here only look."""
    return make_fleet(tmp_path_factory.mktemp("web"))


@pytest.fixture
def fresh(tmp_path: Path) -> Fleet:
    """One finished job with a failed target, for a test that changes things."""
    return make_fleet(tmp_path, ("golden-a",))


@pytest.fixture
def web(fleet: Fleet) -> Iterator[TestClient]:
    with client(create_app(fleet.factory(), poll_interval=0.05)) as c:
        yield c


# shapes


def test_jobs_are_listed_newest_first_with_their_phases(web: TestClient, fleet: Fleet) -> None:
    jobs = json_of(web.get("/api/jobs"))
    assert [j["job"] for j in jobs] == fleet.jobs[::-1]
    newest = jobs[0]
    assert newest["image_name"] == "golden-b"
    assert newest["os_type"] == "linux"
    assert newest["source"].endswith(".vhd")
    assert newest["state"] == "failed"
    assert set(newest["phases"]) == {"upload", "tier1", "copies", "images"}
    assert newest["phases"]["upload"] == 100
    assert newest["error_count"] == 1
    assert newest["counts"] == {"done": 5, "failed": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", newest["submitted_at"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=failed", ["golden-b", "golden-a"]),
        ("state=completed", []),
        ("image=GOLDEN-A", ["golden-a"]),
        ("state=failed&image=-b", ["golden-b"]),
    ],
)
def test_jobs_filter_by_state_and_image_name(
    web: TestClient, query: str, expected: list[str]
) -> None:
    assert [j["image_name"] for j in json_of(web.get(f"/api/jobs?{query}"))] == expected


def test_an_unknown_state_filter_is_one_sentence(web: TestClient) -> None:
    response = web.get("/api/jobs?state=sleeping")
    assert response.status_code == 400
    assert json_of(response) == {
        "error": "state 'sleeping' is unknown; use one of active, completed, failed."
    }


def test_a_job_has_its_grid_error_log_and_timeline(web: TestClient, fleet: Fleet) -> None:
    job = json_of(web.get(f"/api/jobs/{fleet.jobs[0]}"))
    assert job["regions"] == ["eastus", "southeastasia", "westeurope"]
    groups = {g["subscription"]: g for g in job["subscriptions"]}
    assert set(groups) == {"sub-alpha", "sub-bravo"}
    assert groups["sub-alpha"]["finished"] is True
    assert groups["sub-bravo"]["finished"] is False
    failed = next(t for t in groups["sub-bravo"]["targets"] if t["target"] == FAILING)
    assert failed["state"] == "failed"
    assert failed["label"] == "failed"
    assert failed["icon"] == "✗"
    assert failed["failed_phase"] == "image"
    assert failed["error"]
    assert failed["percent"] is None
    assert [e["target"] for e in job["error_log"] if e["target"]] == [FAILING]
    steps = [s["step"] for s in job["timeline"]]
    assert steps[:2] == ["submit", "upload"]
    assert {"copy", "image", "job"} <= set(steps)
    for span in job["timeline"]:
        assert span["seconds"] >= 0 and span["offset_seconds"] >= 0
    assert job["gallery"] == []


def test_an_unknown_job_is_404_on_every_job_route(web: TestClient) -> None:
    for path in ("/api/jobs/nope", "/api/jobs/nope/logs", "/api/jobs/nope/events", "/jobs/nope"):
        response = web.get(path)
        assert response.status_code == 404, path
        assert json_of(response) == {"error": "No job 'nope'; the jobs page lists them."}


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("level=error", lambda r: r["level"] == "error"),
        ("step=image", lambda r: r["step"] == "image"),
        (f"target={FAILING}", lambda r: r["target"] == FAILING),
    ],
)
def test_logs_filter_by_step_level_and_target(
    web: TestClient, fleet: Fleet, query: str, check: Any
) -> None:
    records = json_of(web.get(f"/api/jobs/{fleet.jobs[0]}/logs?{query}"))
    assert records and all(check(r) for r in records)
    everything = json_of(web.get(f"/api/jobs/{fleet.jobs[0]}/logs"))
    assert len(everything) > len(records)
    assert set(everything[0]) == {"ts", "level", "step", "target", "message", "extra"}


def test_a_bad_log_level_is_one_sentence(web: TestClient, fleet: Fleet) -> None:
    response = web.get(f"/api/jobs/{fleet.jobs[0]}/logs?level=loud")
    assert response.status_code == 400
    assert json_of(response) == {
        "error": "level 'loud' is unknown; use one of info, warning, error."
    }


def test_targets_list_the_fleet_with_switches(web: TestClient) -> None:
    targets = json_of(web.get("/api/targets"))
    assert len(targets) == 6
    assert set(targets[0]) == {"target", "subscription", "region", "account", "enabled"}
    assert all(t["enabled"] for t in targets)


def test_the_plan_predicts_both_strategies_and_shows_what_happened(
    web: TestClient, fleet: Fleet
) -> None:
    plan = json_of(web.get(f"/api/jobs/{fleet.jobs[0]}/plan?disk_bytes={GIB}"))
    assert set(plan["predictions"]) == {"broadcast", "original"}
    for name, prediction in plan["predictions"].items():
        assert prediction["strategy"] == name
        assert prediction["targets"] == 6
        assert 0 < len(prediction["done_at"]) <= 6
        assert prediction["done_at"] == sorted(prediction["done_at"])
        assert prediction["done_at"][-1] <= prediction["makespan_seconds"]
    assert plan["job"]["job"] == fleet.jobs[0]
    assert len(plan["job"]["done_at"]) == 5  # the failed target never got its image
    assert plan["disk_bytes"] == GIB
    assert plan["occupied_bytes"] == GIB // 2


def test_a_bad_plan_size_is_one_sentence(web: TestClient) -> None:
    response = web.get("/api/plan?disk_bytes=lots")
    assert response.status_code == 400
    assert json_of(response) == {"error": "disk_bytes 'lots' is not a whole number of bytes."}


# pages


def test_the_jobs_page_lists_every_job_with_its_bars(web: TestClient, fleet: Fleet) -> None:
    page = web.get("/").text
    rows = re.findall(r'<tr data-job-id="([^"]+)" data-state="([^"]+)"', page)
    assert rows == [(fleet.jobs[1], "failed"), (fleet.jobs[0], "failed")]
    assert page.count('<progress data-phase="upload"') == 2
    assert 'data-events="/api/events?state=&amp;image="' in page
    filtered = web.get("/?image=golden-a").text
    assert re.findall(r'<tr data-job-id="([^"]+)"', filtered) == [fleet.jobs[0]]


def test_the_job_page_shows_each_cell_as_text_and_collapses_finished_rows(
    web: TestClient, fleet: Fleet
) -> None:
    page = web.get(f"/jobs/{fleet.jobs[0]}").text
    cells = re.findall(r'class="cell state-(\w+)" id="cell-\d+" data-target="([^"]+)"', page)
    assert len(cells) == 6
    assert (TargetState.FAILED.value, FAILING) in cells
    # Colour is not the only signal: each cell names its state, and its reason is a description.
    assert page.count('<span class="label-text">done</span>') == 5
    assert page.count('<span class="label-text">failed</span>') == 1
    assert re.search(r'aria-describedby="reason-\d+"', page)
    assert re.search(r'<span class="reason" id="reason-\d+" role="tooltip">image failed: ', page)
    assert re.search(
        r'<details class="sub-row" data-subscription="sub-alpha" data-finished="true"\s*>', page
    )
    assert re.search(r'data-subscription="sub-bravo" data-finished="false" open>', page)
    for hook in (
        'id="phases"',
        'id="error-log"',
        'id="timeline"',
        'id="log-table"',
        'id="confirm-dialog"',
    ):
        assert hook in page
    assert 'data-action="retry-target"' in page


def test_pages_carry_no_inline_script_or_style(web: TestClient, fleet: Fleet) -> None:
    for path in ("/", f"/jobs/{fleet.jobs[0]}", "/targets", f"/plan?job={fleet.jobs[0]}", "/login"):
        page = web.get(path).text
        assert "<script>" not in page and re.search(r"<script(?![^>]*\bsrc=)", page) is None, path
        assert " style=" not in page and "<style" not in page, path
        assert re.search(r"\son[a-z]+=", page) is None, path


def test_the_plan_page_draws_the_chart_on_the_server(web: TestClient, fleet: Fleet) -> None:
    page = web.get(f"/plan?job={fleet.jobs[0]}").text
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page
    series = re.findall(r'<polyline class="series [^"]+" data-series="([^"]+)"', page)
    assert series == ["series-broadcast", "series-original", "series-actual"]
    assert 'role="img"' in page and "<desc" in page


# actions


def test_actions_follow_the_clis_rules(fresh: Fleet) -> None:
    job = fresh.jobs[0]
    with client(create_app(fresh.factory())) as c:
        headers = csrf_headers(c)
        # A failed target still needs its blob: cleanup refuses, as the CLI does.
        refused = c.post(f"/api/jobs/{job}/cleanup", json={}, headers=headers)
        assert refused.status_code == 400
        assert "still needs its blobs" in json_of(refused)["error"]
        retried = c.post(f"/api/jobs/{job}/retry", json={"targets": [FAILING]}, headers=headers)
        assert json_of(retried) == {"job": job, "retried": [FAILING]}
        cell = _cell(json_of(c.get(f"/api/jobs/{job}")), FAILING)
        assert cell["state"] != "failed"
        unknown = c.post(f"/api/jobs/{job}/retry", json={"targets": ["sub-x/y"]}, headers=headers)
        assert unknown.status_code == 400
        bad = c.post(f"/api/jobs/{job}/retry", json={"phase": "dance"}, headers=headers)
        assert json_of(bad) == {"error": "phase 'dance' is unknown; use copy or image."}
        off = c.post("/api/targets/disable", json={"regions": ["eastus"]}, headers=headers)
        assert json_of(off) == {"enabled": False, "targets": ["sub-alpha/eastus", FAILING]}
        switches = {t["target"]: t["enabled"] for t in json_of(c.get("/api/targets"))}
        assert [name for name, on in switches.items() if not on] == ["sub-alpha/eastus", FAILING]
        nothing = c.post("/api/targets/enable", json={}, headers=headers)
        assert json_of(nothing) == {
            "error": "Say which targets: give --region, --subscription or --name."
        }
        forced = c.post(f"/api/jobs/{job}/cleanup", json={"force": True}, headers=headers)
        assert forced.status_code == 200
        assert json_of(forced)["deleted_blobs"] >= 1


def test_an_action_wants_a_json_object(fresh: Fleet) -> None:
    with client(create_app(fresh.factory())) as c:
        url = f"/api/jobs/{fresh.jobs[0]}/cleanup"
        form = c.post(url, data={"force": "true"}, headers=csrf_headers(c))
        assert form.status_code == 415
        array = c.post(url, json=[1], headers=csrf_headers(c))
        assert json_of(array) == {"error": "The request body must be a JSON object."}
        flag = c.post(url, json={"force": "yes"}, headers=csrf_headers(c))
        assert json_of(flag) == {"error": "force must be true or false."}


def _cell(job: dict[str, Any], name: str) -> dict[str, Any]:
    cell: dict[str, Any] = next(
        t for g in job["subscriptions"] for t in g["targets"] if t["target"] == name
    )
    return cell


ACTIONS = [
    ("retry", {"failed_only": True}),
    ("cleanup", {"force": True}),
    ("enable", {"names": [FAILING]}),
    ("disable", {"names": [FAILING]}),
]


def _action_url(job: str, action: str) -> str:
    return (
        f"/api/targets/{action}" if action in ("enable", "disable") else f"/api/jobs/{job}/{action}"
    )


@pytest.mark.parametrize(("action", "body"), ACTIONS, ids=[a for a, _ in ACTIONS])
def test_read_only_refuses_every_action_and_shows_none(
    fresh: Fleet, action: str, body: dict[str, Any]
) -> None:
    job = fresh.jobs[0]
    before = _snapshot(fresh)
    with client(create_app(fresh.factory(), read_only=True)) as c:
        response = c.post(_action_url(job, action), json=body, headers=csrf_headers(c))
        assert response.status_code == 403
        assert "read-only" in json_of(response)["error"]
        for path in ("/", f"/jobs/{job}", "/targets"):
            page = c.get(path).text
            assert "data-action" not in page and "confirm-dialog" not in page, path
    assert _snapshot(fresh) == before


def _snapshot(fleet: Fleet) -> tuple[Any, ...]:
    async def look(app: Imagedist) -> tuple[Any, ...]:
        status = await app.status(fleet.jobs[0])
        return (
            [(t.target, t.state, t.blob_deleted) for t in status.targets],
            await app.targets(),
        )

    return call(fleet.config_path, look)


# the token and the CSRF defence


def test_with_a_token_nothing_is_shown_without_it(fleet: Fleet) -> None:
    with client(create_app(fleet.factory(), token=TOKEN)) as c:
        for path in ("/api/jobs", f"/api/jobs/{fleet.jobs[0]}", "/api/targets", "/api/events"):
            response = c.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = c.get("/api/jobs", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        page = c.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert c.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_login_form_sets_a_strict_http_only_cookie(fleet: Fleet) -> None:
    with client(create_app(fleet.factory(), token=TOKEN)) as c:
        bad = c.post("/login", data={"token": "guess"}, follow_redirects=False)
        assert bad.status_code == 401 and "That is not the token." in bad.text
        good = c.post("/login?next=/targets", data={"token": TOKEN}, follow_redirects=False)
        assert good.status_code == 303 and good.headers["location"] == "/targets"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        assert c.get("/api/jobs").status_code == 200
        offsite = c.post(
            "/login?next=//evil.example", data={"token": TOKEN}, follow_redirects=False
        )
        assert offsite.headers["location"] == "/"


def test_a_change_needs_the_token_and_the_csrf_defence(fresh: Fleet) -> None:
    url = f"/api/jobs/{fresh.jobs[0]}/retry"
    with client(create_app(fresh.factory(), token=TOKEN)) as c:
        assert c.post(url, json={}).status_code == 401
        c.post("/login", data={"token": TOKEN})
        headers = csrf_headers(c)
        no_csrf = c.post(url, json={}, headers={"Origin": BASE})
        assert no_csrf.status_code == 403 and "CSRF" in json_of(no_csrf)["error"]
        no_origin = c.post(url, json={}, headers={"X-CSRF-Token": headers["X-CSRF-Token"]})
        assert no_origin.status_code == 403 and "Origin" in json_of(no_origin)["error"]
        elsewhere = c.post(url, json={}, headers={**headers, "Origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        wrong = c.post(url, json={}, headers={**headers, "X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403
        assert c.post(url, json={}, headers=headers).status_code == 200
    with client(create_app(fresh.factory(), token=TOKEN)) as c:
        # A bearer header is a defence of its own: a browser never sends it across origins.
        bearer = c.post(url, json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200


def test_without_a_token_changes_still_need_the_csrf_defence(fresh: Fleet) -> None:
    url = f"/api/jobs/{fresh.jobs[0]}/retry"
    with client(create_app(fresh.factory())) as c:
        assert c.post(url, json={}).status_code == 403
        assert c.post(url, json={}, headers={"Origin": BASE}).status_code == 403
        assert c.post(url, json={}, headers=csrf_headers(c)).status_code == 200


def test_without_a_token_only_a_loopback_host_is_answered(fleet: Fleet) -> None:
    with TestClient(create_app(fleet.factory()), base_url="http://attacker.example") as c:
        response = c.get("/api/jobs")
        assert response.status_code == 403
        assert "loopback" in json_of(response)["error"]
    with TestClient(create_app(fleet.factory()), base_url="http://localhost:8080") as c:
        assert c.get("/api/jobs").status_code == 200


# headers and secrets


EXPECTED_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize("token", [None, TOKEN], ids=["loopback", "token"])
def test_every_response_carries_the_security_headers(fleet: Fleet, token: str | None) -> None:
    with client(create_app(fleet.factory(), token=token)) as c:
        responses = [c.get(path, follow_redirects=False) for path in every_route(fleet.jobs[0])]
        responses.append(c.post(f"/api/jobs/{fleet.jobs[0]}/retry", json={}))
        responses.append(c.put("/api/jobs"))
        for response in responses:
            for name, value in EXPECTED_HEADERS.items():
                assert response.headers.get(name) == value, (response.url, name)
            csp = response.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp


def test_no_secret_reaches_any_page_or_api_response(fleet: Fleet) -> None:
    factory = fleet.factory()

    def leaky() -> Imagedist:
        return Leaky(factory().config)

    with client(create_app(leaky, token=TOKEN)) as c:
        c.post("/login", data={"token": TOKEN})
        bodies = [c.get(path).text for path in every_route(fleet.jobs[0])]
    assert any("REDACTED" in body for body in bodies), "the planted secrets never showed up"
    _assert_clean(bodies)


def _assert_clean(bodies: Sequence[str]) -> None:
    for body in bodies:
        for secret in SECRETS:
            assert secret not in body, f"{secret[:12]}... leaked"


def test_a_running_copy_shows_its_percent(tmp_path: Path) -> None:
    """The state store keeps no copy's progress: the dashboard asks the blob (via the API)."""
    path = tmp_path / "imagedist.toml"
    path.write_text(config_text(local={"copy_bandwidth_mib_s": 2}), encoding="utf-8")
    disk = make_disk(tmp_path / "golden.vhd")

    async def submit(app: Imagedist) -> str:
        job = await app.submit(disk, "golden-slow", OsType.LINUX)
        await app.upload(job.id)
        return job.id

    job = call(path, submit)
    worker = threading.Thread(target=call, args=(path, lambda app: app.work([job])))
    worker.start()
    seen: list[int] = []
    try:
        with client(create_app(Fleet(path, [job]).factory())) as c:
            while not seen and worker.is_alive():
                status = json_of(c.get(f"/api/jobs/{job}"))
                seen = [
                    t["percent"]
                    for g in status["subscriptions"]
                    for t in g["targets"]
                    if t["state"] == "copying" and t["percent"] is not None
                ]
                time.sleep(0.05)
    finally:
        worker.join(120)
    assert seen, "no running copy was ever seen with its percent"
    assert all(0 <= pct <= 99 for pct in seen)


def test_a_gallery_job_shows_its_replication_per_region(tmp_path: Path) -> None:
    path = tmp_path / "imagedist.toml"
    path.write_text(
        config_text(
            fleet={"subscriptions": ["sub-a"], "regions": ["eastus", "japaneast"]},
            local={"gallery_replication_seconds": 0.1, "fail_gallery_regions": ["japaneast"]},
            publish={"to": ["gallery"]},
            gallery={
                "name": "golden_gallery",
                "definitions": {"gold": {"publisher": "p", "offer": "o", "sku": "s"}},
            },
        ),
        encoding="utf-8",
    )
    disk = make_disk(tmp_path / "golden.vhd")

    async def distribute(app: Imagedist) -> str:
        job = await app.submit(disk, "gold", OsType.LINUX)
        await app.upload(job.id)
        await app.run(job.id)
        return job.id

    job = call(path, distribute)
    with client(create_app(Fleet(path, [job]).factory())) as c:
        status = json_of(c.get(f"/api/jobs/{job}"))
        assert "gallery" in status["phases"]
        [version] = status["gallery"]
        regions = {r["region"]: r for r in version["regions"]}
        assert regions["japaneast"]["state"] == "failed" and regions["japaneast"]["error"]
        assert regions["eastus"]["state"] == "completed"
        page = c.get(f"/jobs/{job}").text
        assert 'id="gallery-grid"' in page
        assert re.search(r'data-region="japaneast" data-state="failed"', page)
        listed = json_of(c.get("/api/jobs"))[0]
        assert listed["phases"]["gallery"] == status["phases"]["gallery"]


def test_a_worker_in_the_dashboard_finishes_a_job(tmp_path: Path) -> None:
    path = tmp_path / "imagedist.toml"
    path.write_text(config_text(), encoding="utf-8")
    disk = make_disk(tmp_path / "golden.vhd")

    async def submit(app: Imagedist) -> str:
        job = await app.submit(disk, "golden-served", OsType.LINUX)
        await app.upload(job.id)
        return job.id

    job = call(path, submit)
    with client(create_app(Fleet(path, [job]).factory(), worker=True)) as c:
        state = "active"
        deadline = time.monotonic() + 120
        while state == "active" and time.monotonic() < deadline:
            time.sleep(0.05)
            state = json_of(c.get(f"/api/jobs/{job}"))["state"]
    assert state == "completed"
