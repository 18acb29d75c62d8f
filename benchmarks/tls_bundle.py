"""Requests through a client given a CA bundle (``[azure] ca_bundle``): our transport against
azure-core's own, in the same run.

    .venv/bin/python benchmarks/tls_bundle.py [--requests 300] [--rounds 3]

Starts the ARM test server (HTTPS, its own CA), and lists the images of one resource group
``--requests`` times in a row through the image service's ARM client, once with azure-core's
aiohttp transport (the baseline: a TLS context made from the bundle for every request) and once
with ours (one context per bundle), alternating ``--rounds`` times. Prints a markdown table of the
median CPU and wall time per request of this process, the TLS handshakes the server counted, and
the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from azure.core.pipeline.transport import AioHttpTransport

from armserver.credentials import AsyncStaticTokenCredential
from armserver.process import ArmServerProcess
from imagedist._backends.azure import transport as ours
from imagedist._backends.azure.images import AzureImageService

GROUP = "rg-bench"


async def _round(arm: ArmServerProcess, requests: int) -> tuple[float, float, int]:
    service = AzureImageService(
        AsyncStaticTokenCredential(),
        arm_endpoint=arm.url,
        blob_url=lambda ref: "",
        client_kwargs={"connection_verify": str(arm.ca_file), "retry_total": 0},
    )
    try:
        await service.ensure_resource_group("sub-0", GROUP, "westeurope")
        await service.list_images("sub-0", GROUP)  # the client and its connection, made
        before = int(arm.counters()["tls_handshakes"])
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            await service.list_images("sub-0", GROUP)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        handshakes = int(arm.counters()["tls_handshakes"]) - before - 1  # not the count's own
    finally:
        await service.aclose()
    return cpu / requests, wall / requests, handshakes


def _measure(arm: ArmServerProcess, baseline: bool, requests: int) -> tuple[float, float, int]:
    # The baseline is azure-core's transport as it is: without our override of its TLS config.
    saved: Any = ours.Transport._build_ssl_config
    if baseline:
        ours.Transport._build_ssl_config = AioHttpTransport._build_ssl_config  # type: ignore[method-assign]
    try:
        return asyncio.run(_round(arm, requests))
    finally:
        ours.Transport._build_ssl_config = saved  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    with ArmServerProcess(Path(tempfile.mkdtemp(prefix="tls-bench-"))) as arm:
        for _ in range(args.rounds):
            for baseline in (True, False):
                results[baseline].append(_measure(arm, baseline, args.requests))
    base_cpu = statistics.median(r[0] for r in results[True])
    base_wall = statistics.median(r[1] for r in results[True])
    print(f"{args.requests} ARM requests in a row, median of {args.rounds} rounds\n")
    print(
        "| transport | CPU ms / request | wall ms / request | TLS handshakes | CPU ratio | wall ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for baseline, name in ((True, "azure-core's (baseline)"), (False, "ours")):
        cpu = statistics.median(r[0] for r in results[baseline])
        wall = statistics.median(r[1] for r in results[baseline])
        shakes = max(r[2] for r in results[baseline])
        print(
            f"| {name} | {cpu * 1000:.2f} | {wall * 1000:.2f} | {shakes} |"
            f" {cpu / base_cpu:.2f} | {wall / base_wall:.2f} |"
        )


if __name__ == "__main__":
    main()
