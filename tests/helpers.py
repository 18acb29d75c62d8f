"""What the tests share: `run`, a FakeClock, the config builder, disks, and a look at what the backend holds."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from imagedist import Config, Imagedist, load_config
from imagedist._domain import BlobRef
from imagedist.abc import BlobStore, Clock

T = TypeVar("T")
MIB = 1024 * 1024

STAGING_ACCOUNT = "imgdstaging"
SUBSCRIPTIONS = ["sub-alpha", "sub-bravo"]
REGIONS = ["westeurope", "eastus", "southeastasia"]

DEFAULT_SECTIONS: dict[str, Any] = {
    "backend": "local",
    "staging": {"subscription": "sub-staging", "region": "westeurope", "account": STAGING_ACCOUNT},
    "fleet": {"subscriptions": SUBSCRIPTIONS, "regions": REGIONS},
    "fanout": {"tier1_copies": 1, "max_reads_per_source": 4},
    "concurrency": {"poll_interval_seconds": 0.05, "lease_seconds": 3},
    "local": {"root": "state", "image_create_seconds": 0.1, "copy_bandwidth_mib_s": 0},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(header: str, body: dict[str, Any]) -> str:
    return header + "\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items())


def config_text(**sections: Any) -> str:
    """TOML for the default config with ``sections`` merged in.

    A dict updates that table key by key, a list of dicts (``targets``) becomes an array of
    tables, any other value is a top-level key, and ``None`` drops the section or key.
    """
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in DEFAULT_SECTIONS.items()
    }
    for key, value in sections.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
            merged[key] = {k: v for k, v in merged[key].items() if v is not None}
        else:
            merged[key] = value
    scalars = [
        f"{k} = {_toml_value(v)}\n"
        for k, v in merged.items()
        if not isinstance(v, dict | list) or (isinstance(v, list) and not v)
    ]
    blocks = ["".join(scalars)]
    for key, value in merged.items():
        if isinstance(value, dict):
            blocks.append(_table(f"[{key}]", value))
        elif isinstance(value, list) and value:
            blocks += [_table(f"[[{key}]]", item) for item in value]
    return "\n".join(blocks)


def write_config(
    folder: Path,
    *,
    lease: float = 3.0,
    bandwidth: float = 0.0,
    image_seconds: float = 0.1,
    fail_copies: list[str] | None = None,
    fail_images: list[str] | None = None,
) -> Path:
    """``folder/imagedist.toml``: 3 subscriptions x 3 regions on the local backend, two tier-1
    copies, and the local backend's knobs (see :func:`config_text`)."""
    path = folder / "imagedist.toml"
    text = config_text(
        staging={"subscription": "sub-staging", "region": "westeurope", "account": "stagingacct"},
        fleet={
            "subscriptions": ["sub-a", "sub-b", "sub-c"],
            "regions": ["westeurope", "eastus", "japaneast"],
        },
        fanout={"tier1_copies": 2, "max_reads_per_source": 3},
        concurrency={"lease_seconds": lease},
        local={
            "copy_bandwidth_mib_s": bandwidth,
            "image_create_seconds": image_seconds,
            "fail_copies_to_accounts": fail_copies or [],
            "fail_images_in": fail_images or [],
        },
    )
    path.write_text(text, encoding="utf-8")
    return path


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


def pattern(length: int, seed: int = 1) -> bytes:
    """Random bytes, so a misplaced or missing page is noticed."""
    return random.Random(seed).randbytes(length)


async def make_blob(store: BlobStore, ref: BlobRef, size: int, writes: dict[int, bytes]) -> None:
    await store.create_page_blob(ref, size)
    for offset, data in writes.items():
        await store.write_pages(ref, offset, data)
