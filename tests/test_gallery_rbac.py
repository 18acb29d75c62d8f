"""RBAC sharing of the central gallery (issue 11, ``[gallery] share = "rbac"``, the default): setup
grants each principal of ``[gallery] readers`` the Reader role on the gallery, once, and shows it in
a dry run; check names a principal that lacks it. On the local backend (role assignments in its
provisioner's file); the Azure backend's are in tests/test_azure_gallery_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result

from imagedist import Imagedist
from imagedist._domain.changes import ResourceRole
from imagedist._domain.gallery import GalleryRef
from imagedist._engine._gallery_setup import gallery_scope

from helpers import call, config_text

Cli = Callable[..., Result]
GALLERY = GalleryRef("sub-staging", "imagedist-gallery", "golden_gallery")
READER_A = "11111111-2222-4333-8444-555555555555"
READER_B = "66666666-7777-4888-9999-000000000000"


def write(folder: Path, readers: dict[str, str]) -> Path:
    path = folder / "imagedist.toml"
    definition = {
        "publisher": "contoso",
        "offer": "ubuntu",
        "sku": "22_04",
        "os_type": "linux",
        "hyper_v_generation": "V1",
    }
    text = config_text(
        fleet={"subscriptions": ["sub-a", "sub-b"], "regions": ["eastus"]},
        publish={"to": ["gallery"]},
        gallery={"name": GALLERY.name, "readers": readers, "definitions": {"gold": definition}},
    )
    path.write_text(text, encoding="utf-8")
    return path


def planned(cli: Cli, config: Path) -> list[dict[str, Any]]:
    result = cli(config, "setup", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    changes: list[dict[str, Any]] = json.loads(result.stdout)["changes"]
    return changes


def readers_of(config: Path) -> set[str]:
    async def body(app: Imagedist) -> set[str]:
        prov, scope = app.ctx.backend.provisioner, gallery_scope(GALLERY)
        principals = (READER_A, READER_B)
        return {p for p in principals if await prov.has_role_at(scope, p, ResourceRole.READER)}

    return call(config, body)


def test_setup_grants_each_reader_the_reader_role_on_the_gallery_once(
    tmp_path: Path, cli: Cli
) -> None:
    config = write(tmp_path, {"sub-a": READER_A, "sub-b": READER_B})

    grants = [c for c in planned(cli, config) if c["action"] == "grant" and c["kind"] == "gallery"]
    dry = cli(config, "setup", "--dry-run")

    assert {(c["name"], c["principal"]) for c in grants} == {
        (GALLERY.name, READER_A),
        (GALLERY.name, READER_B),
    }
    assert f"grant role Reader on gallery {GALLERY.name}" in dry.output
    assert readers_of(config) == set()  # a dry run changes nothing

    assert cli(config, "setup").exit_code == 0
    assert readers_of(config) == {READER_A, READER_B}
    assert planned(cli, config) == []  # idempotent
    assert cli(config, "check").exit_code == 0


def test_check_names_a_reader_without_the_role(tmp_path: Path, cli: Cli) -> None:
    assert cli(write(tmp_path, {"sub-a": READER_A}), "setup").exit_code == 0

    result = cli(write(tmp_path, {"sub-a": READER_A, "sub-b": READER_B}), "check")

    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if "Reader" in line]
    assert READER_B in line and "sub-b" in line and "imagedist setup" in line
    assert READER_A not in line


def test_direct_sharing_grants_no_role(tmp_path: Path, cli: Cli) -> None:
    config = write(tmp_path, {"sub-a": READER_A})
    config.write_text(
        config.read_text(encoding="utf-8").replace("readers = {", 'share = "direct"\nreaders = {'),
        encoding="utf-8",
    )

    assert not [c for c in planned(cli, config) if c["action"] == "grant"]
