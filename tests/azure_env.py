"""An Azure world on loopback for end-to-end tests: Azurite for storage and the ARM test server,
with a config, an environment for worker subprocesses, and ways to look at what happened."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from armserver.process import ArmServerProcess
from armserver.tokens import mint_token
from azurite import AzuriteNotInstalled, AzuriteServer, start_azurite

STAGING = "stagingacct"
TARGET_ACCOUNTS = [f"t2acct{i:02d}" for i in range(30)]
REGIONS = [
    "westeurope",
    "eastus",
    "japaneast",
    "northeurope",
    "westus2",
    "uksouth",
    "centralindia",
    "brazilsouth",
    "australiaeast",
    "canadacentral",
]


@pytest.fixture(scope="session")
def azure_world() -> Iterator[AzuriteServer]:
    """Azurite with the staging account and 30 target accounts."""
    try:
        server = start_azurite([STAGING, *TARGET_ACCOUNTS])
    except AzuriteNotInstalled as exc:
        print(exc)
        pytest.skip(str(exc))
    with server:
        yield server


@dataclass
class AzureSetup:
    """One test's config and the environment every imagedist process of the test runs with."""

    config: Path
    env: dict[str, str]
    azurite: AzuriteServer
    arm: ArmServerProcess
    targets: list[tuple[str, str, str]]  # (subscription, region, account)

    def imagedist(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imagedist", "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def worker(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "imagedist", "-c", str(self.config), "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def secrets(self) -> list[str]:
        return self.azurite.keys


def make_setup(
    tmp_path: Path,
    azurite: AzuriteServer,
    arm: ArmServerProcess,
    count: int,
    subscriptions: int = 3,
    poll_seconds: float = 0.1,
) -> AzureSetup:
    per_sub = max(1, count // subscriptions)
    targets = [
        (f"sub-{i // per_sub}", REGIONS[i % per_sub], TARGET_ACCOUNTS[i]) for i in range(count)
    ]
    blocks = "\n".join(
        f'[[targets]]\nsubscription = "{sub}"\nregion = "{region}"\naccount = "{account}"\n'
        for sub, region, account in targets
    )
    prefix = "t" + secrets.token_hex(4)  # each test its own state tables in the shared Azurite
    config = tmp_path / "imagedist.toml"
    config.write_text(
        f"""backend = "azure"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "{STAGING}"

[fanout]
tier1_copies = 2
max_reads_per_source = 4

[concurrency]
poll_interval_seconds = {poll_seconds}
lease_seconds = 3

[azure]
auth = "connection-strings"
arm_endpoint = "{arm.url}"
blob_endpoint = "http://127.0.0.1:{azurite.blob_port}/{{account}}"
table_endpoint = "http://127.0.0.1:{azurite.table_port}/{{account}}"
table_prefix = "{prefix}"

{blocks}""",
        encoding="utf-8",
    )
    # A token the ARM test server accepts (its audience and tenant), for the whole test.
    token = mint_token(lifetime_seconds=6 * 3600)
    env = {**os.environ, **arm.client_env(), "IMAGEDIST_ARM_ACCESS_TOKEN": token}
    accounts = [STAGING, *TARGET_ACCOUNTS]
    for account in accounts:
        env[f"IMAGEDIST_CONNECTION_STRING_{account.upper()}"] = azurite.connection_string(account)
    # As Azure does, the server reads each image's source VHD before making the image.
    arm.check_source_blobs({account: azurite.key(account) for account in accounts})
    return AzureSetup(config, env, azurite, arm, targets)
