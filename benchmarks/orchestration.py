"""The control plane's cost per target: API calls by service and verb, and worker CPU.

    .venv/bin/python benchmarks/orchestration.py [--targets 300,1000] [--poll 2]
                                                 [--backends azure,local]

One whole job (submit of a small disk, upload, fan-out, images) run by one worker in this
process, on:

* ``azure``: the official SDKs against Azurite (its own process) and the ARM test server
  (``tests/armserver``, its own process). Every HTTP request the SDKs send, retries included, is
  counted at the transport (azure-core's ``AioHttpTransport.send``, which every client of the
  three services uses) and classed by service and verb+kind (``blob HEAD``, ``table PUT
  entity``, ``arm GET image``...). ``imagedist setup`` runs first and is not counted.
* ``local``: the folder + SQLite backend.

Worker CPU is this process's CPU time (``time.process_time``) over ``Imagedist.work``: the test
servers run in other processes, so none of theirs is in it. A fleet of ``N`` targets is
``subscriptions × regions`` (300 = 30 × 10, 1000 = 50 × 20).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from armserver.process import ArmServerProcess  # noqa: E402
from azurite import AzuriteServer, start_azurite  # noqa: E402
from entra import ARM_AUDIENCE, mint_token  # noqa: E402
from imagedist import Imagedist  # noqa: E402
from imagedist._config import generated_account_name, load_config  # noqa: E402
from imagedist._domain import OsType  # noqa: E402
from imagedist._domain.regions import REGIONS  # noqa: E402

from helpers import make_disk  # noqa: E402

STAGING = "stagingacct"
CERTS = Path(tempfile.gettempdir()) / "imagedist-orchestration-certs"
SHAPES = {300: (30, 10), 1000: (50, 20)}


@dataclass
class Result:
    backend: str
    targets: int
    wall: float
    cpu: float
    outcome: str
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def cpu_ms_per_target(self) -> float:
        return 1000 * self.cpu / self.targets


# -- counting requests at the transport ------------------------------------------------------------


class RequestCounter:
    """Counts what the SDKs send, by ``service verb kind``, knowing each service by its port,
    and the connections aiohttp opens, by service."""

    def __init__(self) -> None:
        self.ports: dict[int, str] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.connections: collections.Counter[str] = collections.Counter()
        self.on = False

    def count(self, request: Any) -> None:
        if not self.on:
            return
        parts = urlsplit(str(request.url))
        service = self.ports.get(parts.port or 0, parts.hostname or "?")
        kind = {"blob": _blob_kind, "table": _table_kind, "arm": _arm_kind}.get(service)
        label = kind(request, parts) if kind else ""
        self.calls[f"{service} {request.method} {label}".strip()] += 1

    @contextmanager
    def installed(self) -> Iterator[None]:
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport

        original, connect = AioHttpTransport.send, aiohttp.TCPConnector._create_connection
        counter = self

        async def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            counter.count(request)
            return await original(transport, request, **kwargs)

        async def create_connection(connector: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
            if counter.on:
                counter.connections[counter.ports.get(req.url.port or 0, "other")] += 1
            return await connect(connector, req, *args, **kwargs)

        AioHttpTransport.send = send
        aiohttp.TCPConnector._create_connection = create_connection  # type: ignore[method-assign]
        try:
            yield
        finally:
            AioHttpTransport.send = original
            aiohttp.TCPConnector._create_connection = connect  # type: ignore[method-assign]


def _blob_kind(request: Any, parts: Any) -> str:
    query = parse_qs(parts.query)
    comp = str(query.get("comp", [""])[0])
    if query.get("restype", [""])[0] == "container":
        return "container list" if comp == "list" else "container"
    if "x-ms-copy-source" in {k.lower() for k in request.headers}:
        return "copy"
    return {"pagelist": "page list", "page": "page", "": "blob"}.get(comp, comp)


def _table_kind(request: Any, parts: Any) -> str:
    path = parts.path
    if path.endswith("$batch"):
        return "batch"
    if "/Tables" in path:
        return "table"
    if "(PartitionKey=" in path:
        return "entity"
    return "query" if request.method == "GET" else "entity"


def _arm_kind(request: Any, parts: Any) -> str:
    segments = [s.lower() for s in parts.path.split("/") if s]
    for kind, name in (
        ("images", "image"),
        ("operations", "operation"),
        ("storageaccounts", "account"),
        ("resourcegroups", "resource group"),
    ):
        if kind in segments:
            at = segments.index(kind)
            return name if at + 1 < len(segments) else f"{name} list"
    return segments[-1] if segments else ""


# -- runs -------------------------------------------------------------------------------------------


def fleet(targets: int) -> tuple[list[str], list[str]]:
    subscriptions, regions = SHAPES.get(targets, (targets // 10, 10))
    names = [r for r in REGIONS if r != "westeurope"][: regions - 1]
    return [f"sub-{i:03d}" for i in range(subscriptions)], ["westeurope", *names]


def config_text(
    subscriptions: list[str], regions: list[str], poll: float, backend: str, extra: str
) -> str:
    subs = ", ".join(f'"{s}"' for s in subscriptions)
    regs = ", ".join(f'"{r}"' for r in regions)
    return f"""backend = "{backend}"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "{STAGING}"

[fleet]
subscriptions = [{subs}]
regions = [{regs}]
account_prefix = "bench"

[concurrency]
poll_interval_seconds = {poll}

{extra}
"""


#: --profile: where the worker's cProfile statistics go. Timed by the process's CPU clock: the
#: default, wall time, counts every wait for the network (and for the other process's CPU on a
#: shared machine) against whatever function was running.
PROFILE: str | None = None


async def run_job(config_path: Path, disk: Path) -> tuple[float, float, str]:
    """Submit and work the job in this process; the worker's wall and CPU seconds."""
    async with Imagedist(load_config(config_path)) as app:
        job = await app.submit(disk, "golden", OsType.LINUX)
        profile = cProfile.Profile(time.process_time) if PROFILE else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        await app.work([job.id])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profile is not None and PROFILE:
            profile.disable()
            profile.dump_stats(PROFILE)
        status = await app.status(job.id)
    outcome = "completed" if status.completed else f"{status.state.value} ({status.counts})"
    return wall, cpu, outcome


async def setup(config_path: Path) -> None:
    async with Imagedist(load_config(config_path)) as app:
        await app.setup()


def azure_run(targets: int, poll: float, folder: Path) -> Result:
    subscriptions, regions = fleet(targets)
    accounts = [generated_account_name("bench", s, r) for s in subscriptions for r in regions]
    azurite = start_azurite([STAGING, *accounts])
    # One certificate folder for every run: aiohttp reads the CA bundle once per process.
    arm = ArmServerProcess(CERTS).start()
    try:
        return _azure_job(targets, poll, folder, azurite, arm, subscriptions, regions)
    finally:
        arm.stop()
        azurite.stop()


def _azure_job(
    targets: int,
    poll: float,
    folder: Path,
    azurite: AzuriteServer,
    arm: ArmServerProcess,
    subscriptions: list[str],
    regions: list[str],
) -> Result:
    arm.check_source_blobs(dict(azurite.accounts))
    os.environ.update(arm.client_env())
    os.environ["IMAGEDIST_ARM_ACCESS_TOKEN"] = mint_token(ARM_AUDIENCE, lifetime_seconds=6 * 3600)
    for account in azurite.accounts:
        os.environ[f"IMAGEDIST_CONNECTION_STRING_{account.upper()}"] = azurite.connection_string(
            account
        )
    endpoint = azurite.blob_endpoint(STAGING).replace(STAGING, "{account}")
    tables = azurite.table_endpoint(STAGING).replace(STAGING, "{account}")
    azure = f"""[azure]
auth = "connection-strings"
arm_endpoint = "{arm.url}"
blob_endpoint = "{endpoint}"
table_endpoint = "{tables}"
"""
    setup_config = folder / "setup.toml"  # setup polls fast: it is not what is measured
    setup_config.write_text(config_text(subscriptions, regions, 0.1, "azure", azure))
    config = folder / "imagedist.toml"
    config.write_text(config_text(subscriptions, regions, poll, "azure", azure))
    began = time.perf_counter()
    asyncio.run(setup(setup_config))
    print(f"  setup of {targets} targets: {time.perf_counter() - began:.0f} s", flush=True)
    counter = RequestCounter()
    counter.ports = {azurite.blob_port: "blob", azurite.table_port: "table", arm.port: "arm"}
    disk = make_disk(folder / "golden.raw", size_mib=2, data_mib=(0,))
    with counter.installed():
        counter.on = True
        wall, cpu, outcome = asyncio.run(run_job(config, disk))
    return Result("azure", targets, wall, cpu, outcome, counter.calls, counter.connections)


def local_run(targets: int, poll: float, folder: Path) -> Result:
    subscriptions, regions = fleet(targets)
    config = folder / "imagedist.toml"
    config.write_text(
        config_text(subscriptions, regions, poll, "local", '[local]\nroot = "state"\n')
    )
    disk = make_disk(folder / "golden.raw", size_mib=2, data_mib=(0,))
    wall, cpu, outcome = asyncio.run(run_job(config, disk))
    return Result("local", targets, wall, cpu, outcome)


# -- report -----------------------------------------------------------------------------------------


def report(results: list[Result]) -> str:
    lines = ["| backend | targets | outcome | worker wall s | CPU ms / target | calls / target |"]
    lines.append("|---|---:|---|---:|---:|---:|")
    for r in results:
        calls = f"{sum(r.calls.values()) / r.targets:.2f}" if r.calls else "-"
        lines.append(
            f"| {r.backend} | {r.targets} | {r.outcome} | {r.wall:.1f} |"
            f" {r.cpu_ms_per_target:.1f} | {calls} |"
        )
    counted = [r for r in results if r.calls]
    if counted:
        kinds = sorted({k for r in counted for k in r.calls})
        lines += ["", "| request | " + " | ".join(f"{r.targets}" for r in counted) + " |"]
        lines.append("|---|" + "---:|" * len(counted))
        for kind in kinds:
            row = " | ".join(f"{r.calls[kind] / r.targets:.2f}" for r in counted)
            lines.append(f"| {kind} | {row} |")
        services = sorted({k for r in counted for k in r.connections})
        lines += [
            "",
            "| connections opened | " + " | ".join(f"{r.targets}" for r in counted) + " |",
        ]
        lines.append("|---|" + "---:|" * len(counted))
        for service in services:
            row = " | ".join(f"{r.connections[service]}" for r in counted)
            lines.append(f"| {service} | {row} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="300", help="comma-separated, e.g. 300,1000")
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval, seconds")
    parser.add_argument("--backends", default="azure,local")
    parser.add_argument("--profile", help="write the worker's cProfile statistics (CPU time) here")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    results = []
    for backend in args.backends.split(","):
        for targets in (int(n) for n in args.targets.split(",")):
            print(f"{backend}, {targets} targets, poll {args.poll} s ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="orchestration-") as tmp:
                run = azure_run if backend == "azure" else local_run
                result = run(targets, args.poll, Path(tmp))
            print(
                f"  {result.outcome} in {result.wall:.1f} s,"
                f" {result.cpu_ms_per_target:.1f} ms CPU per target",
                flush=True,
            )
            results.append(result)
    print()
    print(report(results))


if __name__ == "__main__":
    main()
