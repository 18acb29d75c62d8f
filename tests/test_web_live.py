"""Live updates (issue 12): the dashboard pushes a change made by another `Imagedist` (another
worker, another machine: anything writing the same state store) within two seconds."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imagedist import Imagedist, OsType, load_config
from imagedist._web import create_app

from helpers import call, make_disk
from web_helpers import FAILING, SECRETS, TOKEN, Leaky, live_server, make_fleet

# The dashboard reads the state store this often here; the promise is within 2 s.
POLL = 0.1
WITHIN = 2.0


class EventStream:
    """A server-sent event stream read line by line: (event, data) pairs."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.retry: int | None = None

    def next_event(self) -> tuple[str, Any]:
        event, data = "message", ""
        while True:
            line = self.response.readline().decode("utf-8")
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("retry:"):
                self.retry = int(line.split(":", 1)[1])
            elif line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif line == "" and data:
                return event, json.loads(data)


@contextmanager
def events(base: str, path: str, token: str | None = None) -> Iterator[EventStream]:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    headers = {"Accept": "text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-frame-options"] == "DENY"
        yield EventStream(response)
    finally:
        conn.close()


def _cell_state(status: dict[str, Any], name: str) -> str:
    state: str = next(
        t["state"] for g in status["subscriptions"] for t in g["targets"] if t["target"] == name
    )
    return state


def test_a_jobs_change_by_another_instance_arrives_within_two_seconds(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, ("golden-a",))
    job = fleet.jobs[0]
    with (
        live_server(create_app(fleet.factory(), poll_interval=POLL)) as base,
        events(base, f"/api/jobs/{job}/events") as stream,
    ):
        event, status = stream.next_event()
        assert stream.retry is not None and stream.retry > 0
        assert event == "status" and _cell_state(status, FAILING) == "failed"
        # Another Imagedist on the same state store (as a CLI on another machine would be).
        call(fleet.config_path, lambda app: app.retry(job, targets=[FAILING]))
        changed_at = time.monotonic()
        event, status = stream.next_event()
        assert time.monotonic() - changed_at < WITHIN
        assert event == "status"
        assert _cell_state(status, FAILING) != "failed"
        assert status["state"] == "active"


def test_a_new_job_shows_on_the_jobs_stream(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, ("golden-a",))
    disk = make_disk(tmp_path / "second.vhd")
    with (
        live_server(create_app(fleet.factory(), poll_interval=POLL)) as base,
        events(base, "/api/events?image=golden") as stream,
    ):
        event, jobs = stream.next_event()
        assert event == "jobs" and [j["job"] for j in jobs] == fleet.jobs

        async def submit(app: Imagedist) -> str:
            return (await app.submit(disk, "golden-new", OsType.LINUX)).id

        new = call(fleet.config_path, submit)
        changed_at = time.monotonic()
        event, jobs = stream.next_event()
        assert time.monotonic() - changed_at < WITHIN
        assert [j["job"] for j in jobs] == [new, *fleet.jobs]
        assert jobs[0]["state"] == "active"


def test_no_secret_reaches_a_live_event(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, ("golden-a",))
    config = load_config(fleet.config_path)
    app = create_app(lambda: Leaky(config), token=TOKEN, poll_interval=POLL)
    with live_server(app) as base:
        payloads = []
        for path in ("/api/events", f"/api/jobs/{fleet.jobs[0]}/events"):
            with events(base, path, TOKEN) as stream:
                payloads.append(json.dumps(stream.next_event()[1]))
    assert all("REDACTED" in payload for payload in payloads)
    for payload in payloads:
        for secret in SECRETS:
            assert secret not in payload, f"{secret[:12]}... leaked"
