"""Builders shared by the end-to-end tests: configs, disks, and a look at what the backend holds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from imagedist import Config, Imagedist, load_config
from imagedist.abc import Clock

T = TypeVar("T")
MIB = 1024 * 1024

BASE_CONFIG = """\
backend = "local"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "stagingacct"

[fleet]
subscriptions = ["sub-a", "sub-b", "sub-c"]
regions = ["westeurope", "eastus", "japaneast"]

[fanout]
tier1_copies = 2
max_reads_per_source = 3

[concurrency]
poll_interval_seconds = 0.05
lease_seconds = {lease}

[local]
root = "state"
copy_bandwidth_mib_s = {bandwidth}
image_create_seconds = {image_seconds}
fail_copies_to_accounts = {fail_copies}
fail_images_in = {fail_images}
"""


def write_config(
    folder: Path,
    *,
    lease: float = 3.0,
    bandwidth: float = 0.0,
    image_seconds: float = 0.1,
    fail_copies: list[str] | None = None,
    fail_images: list[str] | None = None,
) -> Path:
    path = folder / "imagedist.toml"
    text = BASE_CONFIG.format(
        lease=lease,
        bandwidth=bandwidth,
        image_seconds=image_seconds,
        fail_copies=_toml_list(fail_copies or []),
        fail_images=_toml_list(fail_images or []),
    )
    path.write_text(text, encoding="utf-8")
    return path


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def make_disk(path: Path, size_mib: int = 8, data_mib: tuple[int, ...] = (0, 3, 7)) -> Path:
    """A sparse disk with one MiB of random data at each of the given MiB offsets."""
    with path.open("wb") as file:
        file.truncate(size_mib * MIB)
        for at in data_mib:
            file.seek(at * MIB)
            file.write(os.urandom(MIB))
    return path


def run(coro: Awaitable[T]) -> T:
    """Run one awaitable to its end, in a new event loop (the tests are sync, no pytest-asyncio)."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


class FakeClock(Clock):
    """Virtual time: ``now`` is settable and ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def with_app(config: Config, body: Callable[[Imagedist], Awaitable[T]]) -> T:
    async with Imagedist(config) as app:
        return await body(app)


def call(config_path: Path, body: Callable[[Imagedist], Awaitable[T]]) -> T:
    """Open the library on the config and run ``body(app)``."""
    return asyncio.run(with_app(load_config(config_path), body))


async def leftover_blobs(app: Imagedist) -> list[str]:
    """Every blob in the staging account and the targets' accounts."""
    config = app.config
    places = {(config.staging.account, config.staging.container)}
    places |= {(t.account, t.container) for t in config.fleet_targets()}
    found = []
    for account, container in sorted(places):
        for name in await app.ctx.backend.blobs.list_blobs(account, container):
            found.append(f"{account}/{container}/{name}")
    return found
