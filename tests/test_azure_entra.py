"""The Entra ID path end to end: DefaultAzureCredential for ARM and storage, no key anywhere.

Azurite runs in OAuth mode over HTTPS (it checks each bearer token's issuer, audience and
lifetime) and the ARM test server takes bearer tokens; every token comes from a fake managed
identity through the production ``DefaultAzureCredential``. No connection string and no account
key is in any process, so every copy can only be authorised by a user-delegation SAS.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.storage.blob.aio import BlobServiceClient

from armserver.process import ArmServerProcess
from azure_env import (  # noqa: F401
    STAGING,
    AzureSetup,
    EntraWorld,
    entra_world,
    make_setup,
    three_workers_one_killed,
)
from entra import ARM_AUDIENCE, STORAGE_AUDIENCE, claims, mint_token
from imagedist import load_config
from imagedist._backends.azure import TOKEN_VARIABLE, open_backend
from imagedist.abc import GroupInfo
from test_azure_e2e import _check_no_secret, _state_dump

from helpers import make_disk


def _entra_setup(
    tmp_path: Path, world: EntraWorld, arm: ArmServerProcess, count: int, poll: float = 0.1
) -> AzureSetup:
    return make_setup(
        tmp_path,
        world.azurite,
        arm,
        count,
        poll_seconds=poll,
        identity=world.identity,
        ca_file=world.ca_file,
    )


def _no_key_in(env: dict[str, str], setup: AzureSetup) -> None:
    assert not any(name.startswith("IMAGEDIST_CONNECTION_STRING_") for name in env)
    assert TOKEN_VARIABLE not in env
    assert not any(key in value for key in setup.azurite.keys for value in env.values())


class _OneAudience:
    """A credential that hands out tokens of one audience whatever scope is asked."""

    def __init__(self, audience: str) -> None:
        self._audience = audience

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        token = mint_token(self._audience)
        return AccessToken(token, int(claims(token)["exp"]))

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _OneAudience:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


def test_azurite_refuses_an_arm_token_on_storage(
    entra_world: EntraWorld,  # noqa: F811 (a fixture)
) -> None:
    url = entra_world.azurite.blob_endpoint(STAGING)

    async def list_with(audience: str) -> None:
        async with BlobServiceClient(
            url, credential=_OneAudience(audience), connection_verify=str(entra_world.ca_file)
        ) as service:
            async for _ in service.list_containers():
                pass

    asyncio.run(list_with(STORAGE_AUDIENCE))
    with pytest.raises(ClientAuthenticationError, match="audience"):
        asyncio.run(list_with(ARM_AUDIENCE))


def test_storage_asks_storage_tokens_and_arm_keeps_its_pre_issued_one(
    tmp_path: Path,
    entra_world: EntraWorld,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _entra_setup(tmp_path, entra_world, arm, 3)
    for name, value in setup.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(TOKEN_VARIABLE, mint_token(ARM_AUDIENCE))
    entra_world.identity.clear()
    backend = open_backend(load_config(setup.config))

    async def use_both_planes() -> GroupInfo | None:
        try:
            await backend.blobs.ensure_container(STAGING, "imagedist")
            await backend.state.ensure_ready()
            assert backend.provisioner is not None
            return await backend.provisioner.get_resource_group("sub-0", "imagedist-images")
        finally:
            await backend.aclose()

    assert asyncio.run(use_both_planes()) is None  # ARM answered: no such group yet
    # Storage signed in for storage (Azurite refuses any other audience); ARM used the
    # pre-issued token and never asked the identity for one.
    assert set(entra_world.identity.resources) == {STORAGE_AUDIENCE}


def test_setup_check_run_and_retry_on_entra_id(
    tmp_path: Path,
    entra_world: EntraWorld,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    setup = _entra_setup(tmp_path, entra_world, arm, 6)
    _no_key_in(setup.env, setup)
    entra_world.identity.clear()
    assert setup.imagedist("setup").returncode == 0
    check = setup.imagedist("check")
    assert check.returncode == 0, check.stdout + check.stderr
    failing_sub, failing_region, _ = setup.targets[0]
    arm.fail_image_creation(failing_sub, failing_region, code="InvalidParameter")
    disk = make_disk(tmp_path / "golden.vhd", size_mib=2, data_mib=(0,))
    run = setup.imagedist(
        "run", str(disk), "--image-name", "golden", "--os-type", "linux", "--json"
    )
    assert run.returncode == 1, run.stderr
    status = json.loads(run.stdout)
    assert status["phases"]["copies"] == 100  # every copy by user-delegation SAS
    failed = [t for t in status["targets"] if t["state"] == "failed"]
    assert [(t["subscription"], t["region"]) for t in failed] == [(failing_sub, failing_region)]

    arm.clear_faults()
    retry = setup.imagedist("retry", status["job"], "--failed-only", "--wait", "--json")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    final = json.loads(setup.imagedist("status", status["job"], "--json").stdout)
    assert final["completed"] and {t["state"] for t in final["targets"]} == {"done"}
    assert set(entra_world.identity.resources) == {ARM_AUDIENCE, STORAGE_AUDIENCE}
    _check_no_secret(setup, run.stdout, run.stderr, retry.stdout, _state_dump(setup, final["job"]))


@pytest.mark.timeout(180)
def test_three_workers_on_entra_id_survive_a_kill(
    tmp_path: Path,
    entra_world: EntraWorld,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    arm.configure(image_delay=1.0)
    setup = _entra_setup(tmp_path, entra_world, arm, 9, poll=0.25)
    assert setup.imagedist("setup").returncode == 0
    job_id, logs = three_workers_one_killed(setup, tmp_path, strike_after=2, patience=90)
    status = json.loads(setup.imagedist("status", job_id, "--json").stdout)
    assert status["completed"], status["counts"]
    counts = arm.counters()["image_creations"]
    assert len(counts) == 9 and {entry["count"] for entry in counts} == {1}
    _check_no_secret(setup, *(log.read_text() for log in logs), _state_dump(setup, job_id))
