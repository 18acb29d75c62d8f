"""An Azure world on loopback for end-to-end tests: Azurite for storage and the ARM test server,
with a config, an environment for worker subprocesses, and ways to look at what happened.

Two ways in: connection strings (``azure_world``: Azurite over http, a pre-issued ARM token), or
Entra ID (``entra_world``: Azurite over HTTPS in OAuth mode, every token from a fake managed
identity through the production ``DefaultAzureCredential``, copies by user-delegation SAS).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from armserver.certs import ensure_certs
from armserver.process import ArmServerProcess
from azurite import AzuriteNotInstalled, AzuriteServer, start_azurite
from entra import ARM_AUDIENCE, FakeManagedIdentity, entra_environment, mint_token

from helpers import make_disk

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
class EntraWorld:
    """Azurite in OAuth mode (HTTPS, certificate of the ARM server's test CA) and the identity."""

    azurite: AzuriteServer
    identity: FakeManagedIdentity
    ca_file: Path


@pytest.fixture(scope="session")
def entra_world(arm_server: ArmServerProcess) -> Iterator[EntraWorld]:
    """Azurite accepting bearer tokens, with the staging and 30 target accounts, and a fake
    managed identity that hands out tokens per audience."""
    certs = ensure_certs(arm_server.cert_dir)  # the same CA as the ARM server: one bundle
    try:
        server = start_azurite(
            [STAGING, *TARGET_ACCOUNTS], tls=(certs.cert_file, certs.key_file, certs.ca_file)
        )
    except AzuriteNotInstalled as exc:
        print(exc)
        pytest.skip(str(exc))
    with server, FakeManagedIdentity() as identity:
        yield EntraWorld(server, identity, certs.ca_file)


@dataclass
class AzureSetup:
    """One test's config and the environment every imagedist process of the test runs with."""

    config: Path
    env: dict[str, str]
    azurite: AzuriteServer
    arm: ArmServerProcess
    targets: list[tuple[str, str, str]]  # (subscription, region, account)
    tokens: list[str] = field(default_factory=list)  # a pre-issued ARM token
    identity: FakeManagedIdentity | None = None  # hands out the tokens on the Entra ID path

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
        """Every account key and bearer token: none may show in a log, the state or output."""
        issued = self.identity.tokens if self.identity is not None else []
        return [*self.azurite.keys, *self.tokens, *issued]


def make_setup(
    tmp_path: Path,
    azurite: AzuriteServer,
    arm: ArmServerProcess,
    count: int,
    subscriptions: int = 3,
    poll_seconds: float = 0.1,
    *,
    identity: FakeManagedIdentity | None = None,
    ca_file: Path | None = None,
) -> AzureSetup:
    """A config of ``count`` targets and the environment of its processes.

    With ``identity`` (and Azurite in OAuth mode), the Entra ID path: ``auth = "default"``, no
    connection string nor pre-issued token in the environment, the CA given as ``ca_bundle``.
    """
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
{_auth_lines(identity, ca_file)}
arm_endpoint = "{arm.url}"
blob_endpoint = "{azurite.blob_endpoint(STAGING).replace(STAGING, "{account}")}"
table_endpoint = "{azurite.table_endpoint(STAGING).replace(STAGING, "{account}")}"
table_prefix = "{prefix}"

{blocks}""",
        encoding="utf-8",
    )
    # As Azure does, the server reads each image's source VHD before making the image.
    accounts = [STAGING, *TARGET_ACCOUNTS]
    arm.check_source_blobs({account: azurite.key(account) for account in accounts})
    if identity is not None:
        env = entra_environment(os.environ, identity)
        return AzureSetup(config, env, azurite, arm, targets, identity=identity)
    # A token the ARM test server accepts (its audience and tenant), for the whole test.
    token = mint_token(ARM_AUDIENCE, lifetime_seconds=6 * 3600)
    env = {**os.environ, **arm.client_env(), "IMAGEDIST_ARM_ACCESS_TOKEN": token}
    for account in accounts:
        env[f"IMAGEDIST_CONNECTION_STRING_{account.upper()}"] = azurite.connection_string(account)
    return AzureSetup(config, env, azurite, arm, targets, tokens=[token])


def _auth_lines(identity: FakeManagedIdentity | None, ca_file: Path | None) -> str:
    if identity is None:
        return 'auth = "connection-strings"'
    assert ca_file is not None, "the Entra ID path runs over HTTPS: give the CA"
    return f'auth = "default"\nca_bundle = "{ca_file}"'


def three_workers_one_killed(
    setup: AzureSetup, folder: Path, *, strike_after: int, patience: float
) -> tuple[str, list[Path]]:
    """Submit a small disk, run three worker processes, SIGKILL the first once ``strike_after``
    images are being created, and wait for all (``patience`` seconds for each step); returns
    the job id and the workers' logs. The other two must have finished the job."""
    disk = make_disk(folder / "golden.vhd", size_mib=2, data_mib=(0,))
    submit = setup.imagedist("submit", str(disk), "--image-name", "golden", "--os-type", "linux")
    assert submit.returncode == 0, submit.stderr
    logs = [folder / f"worker{i}.log" for i in range(3)]
    workers = [setup.worker(log) for log in logs]
    deadline = time.monotonic() + patience
    while setup.arm.total_image_creations() < strike_after:  # while images are being created
        assert time.monotonic() < deadline, "no image creation started"
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)
    job_id = submit.stdout.strip()
    try:
        for worker in workers:
            worker.wait(timeout=patience + 30)
    except subprocess.TimeoutExpired as exc:
        stuck = _progress(setup, job_id, logs)
        raise AssertionError(f"the workers did not finish: {stuck}") from exc
    finally:
        for worker in workers:  # none outlives the test, whatever failed
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [-signal.SIGKILL, 0, 0]
    return job_id, logs


def _progress(setup: AzureSetup, job_id: str, logs: list[Path]) -> str:
    """What a stuck run shows: the job's status, the end of its log and the workers' output."""
    status = setup.imagedist("status", job_id, "--json", timeout=60)
    log = setup.imagedist("logs", job_id, timeout=60)
    outputs = [f"{path.name}: {path.read_text(errors='replace')[-2000:]}" for path in logs]
    return "\n".join([status.stdout[-4000:], log.stdout[-4000:], *outputs])
