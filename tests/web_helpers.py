"""What the dashboard's tests share: a fleet with finished jobs, clients, and a live server."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from imagedist import Imagedist, JobStatus, LogFilter, OsType, load_config
from imagedist._domain import LogRecord

from helpers import config_text, make_disk, run

BASE = "http://127.0.0.1"
TOKEN = "a-dashboard-token-long-enough-0123456789"
# One target whose image the local backend fails, so every job has a failed cell.
FAILING = "sub-bravo/eastus"


@dataclass(frozen=True)
class Fleet:
    """A config on the local backend and the jobs run on it (newest last)."""

    config_path: Path
    jobs: list[str]

    def factory(self) -> Callable[[], Imagedist]:
        config = load_config(self.config_path)
        return lambda: Imagedist(config)


def make_fleet(folder: Path, images: tuple[str, ...] = ("golden-a", "golden-b")) -> Fleet:
    """A config whose image for :data:`FAILING` fails, with one finished job per image."""
    path = folder / "imagedist.toml"
    path.write_text(config_text(local={"fail_images_in": [FAILING]}), encoding="utf-8")
    disk = make_disk(folder / "golden.vhd")
    config = load_config(path)

    async def submit_and_run(image: str) -> str:
        async with Imagedist(config) as app:
            job = await app.submit(disk, image, OsType.LINUX, f"{image} for the dashboard")
            await app.upload(job.id)
            await app.run(job.id)
            return job.id

    return Fleet(path, [run(submit_and_run(image)) for image in images])


@contextmanager
def client(app: Starlette, **headers: str) -> Iterator[TestClient]:
    """A client of ``app`` (its lifespan run) on a loopback host."""
    with TestClient(app, base_url=BASE, headers=headers) as c:
        yield c


def csrf_headers(c: TestClient) -> dict[str, str]:
    """What the page's script sends with a change: its session's CSRF token and the Origin."""
    token = c.get("/api/session").json()["csrf_token"]
    return {"X-CSRF-Token": token, "Origin": BASE}


@contextmanager
def live_server(app: Starlette) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the dashboard did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def every_route(job: str) -> list[str]:
    """Every GET the dashboard answers, for one job."""
    return [
        "/",
        "/?state=failed&image=golden",
        f"/jobs/{job}",
        f"/jobs/{job}?level=error",
        "/targets",
        f"/plan?job={job}",
        "/api/session",
        "/api/jobs",
        f"/api/jobs/{job}",
        f"/api/jobs/{job}/logs",
        f"/api/jobs/{job}/plan",
        "/api/targets",
        "/api/plan?disk_bytes=268435456",
        "/static/app.js",
        "/static/style.css",
        "/no-such-page",
    ]


def json_of(response: Any) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


SAS = "https://acct.blob.core.windows.net/c/b.vhd?sv=2024-08-04&se=2030-01-01&sr=b&sp=r&sig=c2VjcmV0c2lnbmF0dXJl"
KEY = "A" * 86 + "=="
BEARER = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
PLANTED = f"copy failed: {SAS} AccountKey={KEY} Authorization: {BEARER}"
SECRETS = ("c2VjcmV0c2lnbmF0dXJl", KEY, "eyJhbGciOiJSUzI1NiJ9", "sig=c2V", TOKEN)


class Leaky(Imagedist):
    """The library, as if a platform's error had slipped secrets past the state store into job
    errors, descriptions and log lines: the dashboard must redact them on its own."""

    async def status(self, job_id: str) -> JobStatus:
        status = await super().status(job_id)
        job = dataclasses.replace(status.job, description=PLANTED, source_path=SAS)
        targets = [dataclasses.replace(t, error=PLANTED) for t in status.targets]
        return dataclasses.replace(status, job=job, targets=targets)

    async def jobs(self) -> list[JobStatus]:
        return [await self.status(s.job.id) for s in await super().jobs()]

    async def logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        records = await super().logs(job_id, where)
        return [dataclasses.replace(r, message=PLANTED, extra={"url": SAS}) for r in records]
