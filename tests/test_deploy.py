"""deploy/ checked offline: the container runs a command the CLI has, and the Bicep template holds
the job, its identity and the roles docs/deploy.md promises.

There is no Docker daemon nor Azure here; what can be checked without them is: the Dockerfile's
entrypoint is a command of this CLI (its ``--help`` works), the image is not root, installs the
azure extra and qemu-utils; the template declares the resources and built-in role ids it needs.
Where a ``bicep`` CLI is installed, the template is also built.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagedist._cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
BICEP = (DEPLOY / "main.bicep").read_text(encoding="utf-8")
MODULES = {path.name: path.read_text(encoding="utf-8") for path in DEPLOY.glob("modules/*.bicep")}

#: The built-in roles the workers need, by their (global) role definition ids.
ROLES = {
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Contributor": "b24988ac-6180-42dd-a0bd-a68e2c03a0c7",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
}


def _instruction(name: str) -> list[str]:
    """Every argument of a Dockerfile instruction, joined across continuation lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [m.strip() for m in re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)]


def test_the_entrypoint_is_a_command_of_the_cli() -> None:
    (entrypoint,) = _instruction("ENTRYPOINT")
    program, *command = json.loads(entrypoint)  # exec form: no shell between signals and worker
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert program in scripts["scripts"]
    assert command == ["worker"]  # the command tests/test_azure_e2e.py runs

    result = CliRunner().invoke(cli, [*command, "--help"])

    assert result.exit_code == 0, result.output
    assert "Work on every active job" in result.output


def test_the_image_runs_as_a_user_with_the_azure_extra_and_qemu() -> None:
    (user,) = _instruction("USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert any("qemu-utils" in run for run in _instruction("RUN"))
    assert any(re.search(r"pip install .*\"\.\[azure\]\"", run) for run in _instruction("RUN"))
    assert re.match(r"python:3\.1[1-9]-slim", _instruction("FROM")[0])
    assert any("IMAGEDIST_CONFIG=" in env for env in _instruction("ENV"))


def test_the_template_declares_the_job_its_identity_and_its_roles() -> None:
    for resource in (
        "Microsoft.App/jobs@",
        "Microsoft.App/managedEnvironments@",
        "Microsoft.ManagedIdentity/userAssignedIdentities@",
        "Microsoft.Authorization/roleAssignments@",
    ):
        assert f"'{resource}" in BICEP, resource
    for role, role_id in ROLES.items():
        assert f"'{role_id}'" in BICEP, role
    for module in re.findall(r"module \w+ '(modules/[\w.-]+\.bicep)'", BICEP):
        text = MODULES[Path(module).name]
        assert "'Microsoft.Authorization/roleAssignments@" in text
        assert "principalType: 'ServicePrincipal'" in text


def test_the_template_takes_image_config_and_scale_and_wires_the_identity() -> None:
    params = dict(re.findall(r"^param (\w+) (\w+)", BICEP, flags=re.MULTILINE))
    for name, kind in {
        "image": "string",
        "configToml": "string",
        "triggerType": "string",
        "parallelism": "int",
        "replicaTimeoutSeconds": "int",
        "storageResourceGroups": "array",
        "stateAccount": "object",
        "imagesResourceGroups": "array",
    }.items():
        assert params.get(name) == kind, name
    assert re.search(r"@secure\(\)\s*param configToml", BICEP)  # the config holds no key, still
    assert "type: 'UserAssigned'" in BICEP
    assert "name: 'AZURE_CLIENT_ID', value: identity.properties.clientId" in BICEP
    assert "name: 'IMAGEDIST_CONFIG'" in BICEP
    assert "storageType: 'Secret'" in BICEP


def test_the_template_builds_with_bicep(tmp_path: Path) -> None:
    bicep = shutil.which("bicep")
    if bicep is None:
        pytest.skip("the bicep CLI is not installed (it ships from NuGet and GitHub, not PyPI/npm)")
    out = tmp_path / "main.json"
    result = subprocess.run(
        [bicep, "build", str(DEPLOY / "main.bicep"), "--outfile", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    template = json.loads(out.read_text(encoding="utf-8"))
    assert "Microsoft.App/jobs" in json.dumps(template)
