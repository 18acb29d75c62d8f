"""What the browser tests share: headless Chromium (Debian's, driven by playwright), a job on the
local backend, the dashboard served for real on a loopback port, and a worker in a thread."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import uvicorn

from imagedist import Imagedist, OsType, load_config
from imagedist._web import create_app

from helpers import config_text, make_disk, run
from web_helpers import live_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T = TypeVar("T")

INSTALL = (
    "install them to run it: `apt-get install chromium` and"
    " `pip install playwright` (no browser download: the tests use Debian's chromium)"
)
# How long a page may take to show a change on a loaded machine: generous, as only a failure
# waits this long.
PATIENCE_MS = 30_000
# The dashboard reads the state store this often here (0.5 s when served).
POLL = 0.2
SUBSCRIPTIONS = ("sub-alpha", "sub-bravo")
REGIONS = ("westeurope", "eastus", "southeastasia")


def launch_chromium() -> Iterator[Browser]:
    """Headless Chromium, or a skip that says what to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"the browser tests need playwright; {INSTALL}")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(f"the browser tests need chromium on PATH; {INSTALL}")
    with sync_playwright() as playwright:
        # Root (as in CI containers) cannot use Chromium's sandbox.
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a fresh context (no cookie), about as wide as a laptop's screen."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PATIENCE_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass(frozen=True)
class Setup:
    """A config on the local backend, one job submitted and uploaded on it, and a second config
    on the same state whose backend fails nothing (the injected failures "repaired")."""

    config_path: Path
    repaired_path: Path
    job: str

    def factory(self) -> Callable[[], Imagedist]:
        config = load_config(self.config_path)
        return lambda: Imagedist(config)


def uploaded_job(
    folder: Path,
    *,
    subscriptions: Sequence[str] = SUBSCRIPTIONS,
    regions: Sequence[str] = REGIONS,
    bandwidth_mib_s: float = 0.0,
    image_seconds: float = 0.0,
    fail_images_in: Sequence[str] = (),
) -> Setup:
    """A job submitted and uploaded (no target worked on yet) on a fresh local backend."""
    fleet = {"subscriptions": list(subscriptions), "regions": list(regions)}
    local = {"copy_bandwidth_mib_s": bandwidth_mib_s, "image_create_seconds": image_seconds}
    path = folder / "imagedist.toml"
    path.write_text(
        config_text(fleet=fleet, local={**local, "fail_images_in": list(fail_images_in)}),
        encoding="utf-8",
    )
    repaired = folder / "repaired.toml"
    repaired.write_text(config_text(fleet=fleet, local=local), encoding="utf-8")
    disk = make_disk(folder / "golden.vhd")

    async def submit_and_upload() -> str:
        async with Imagedist(load_config(path)) as app:
            job = await app.submit(disk, "golden", OsType.LINUX, "for the browser tests")
            await app.upload(job.id)
            return job.id

    return Setup(path, repaired, in_thread(submit_and_upload))


def in_thread(body: Callable[[], Awaitable[T]]) -> T:
    """``body()`` run to its end in a thread of its own: playwright's sync API holds an event
    loop in this one, where another cannot run."""
    results: list[T] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run(body()))
        except BaseException as exc:  # raised again below, in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return results[0]


async def working(config_path: Path, job: str) -> None:
    """Work on ``job`` until no work is left, as a worker on another machine would."""
    async with Imagedist(load_config(config_path)) as app:
        await app.work([job])


def work(config_path: Path, job: str) -> None:
    """:func:`working` to its end."""
    in_thread(lambda: working(config_path, job))


@contextmanager
def worker(config_path: Path, job: str) -> Iterator[None]:
    """:func:`work` in a thread while the block runs; joined (the job finished) at its end."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            run(working(config_path, job))
        except BaseException as exc:  # reported to the test below
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(PATIENCE_MS / 1000 * 2)
    assert not thread.is_alive(), "the worker did not finish"
    assert not failures, failures


@contextmanager
def dashboard(setup: Setup, page: Page, **options: Any) -> Iterator[str]:
    """The dashboard over ``setup``'s config, served by uvicorn on a free loopback port, for
    ``page``; yields its base URL."""
    app = create_app(setup.factory(), poll_interval=POLL, **options)
    with live_server(app) as base:
        try:
            yield base
        finally:
            # The page's event stream would hold the server's graceful shutdown open.
            page.goto("about:blank")


@contextmanager
def served_on(app: Any, port: int) -> Iterator[str]:
    """``app`` served on loopback ``port`` (one the test already had) until the block ends, then
    stopped at once, open event streams cut, as a crashed or restarted dashboard would be."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + PATIENCE_MS / 1000
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the dashboard did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = server.force_exit = True
        thread.join(PATIENCE_MS / 1000)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
