"""The gallery adapters as the local and sim backends assemble them from a config: the
``[local]`` knobs and the sim's faults reach them, and a local read leaves no file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagedist._backends import open_backend
from imagedist._backends.sim import SimFaults, SimModel, heal, open_sim_backend, run_virtual
from imagedist._config import Config, parse_config
from imagedist._domain import BlobRef, OsType
from imagedist._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    ImageVersion,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
)
from imagedist._exceptions import NotFound
from imagedist._vhd._footer import fixed_footer
from imagedist.abc import Backend, GalleryService

from helpers import run

MIB = 1024 * 1024
GALLERY = GalleryRef("sub-a", "rg-gallery", "galmain")
REGIONS = ("westeurope", "northeurope")


def config(tmp_path: Path, **local: Any) -> Config:
    raw: dict[str, Any] = {
        "staging": {"subscription": "sub-a", "region": "westeurope", "account": "imgdstaging"},
        "fleet": {"subscriptions": ["sub-a"], "regions": list(REGIONS)},
        "local": {"root": str(tmp_path / "root"), **local},
    }
    return parse_config(raw, tmp_path)


async def publish(backend: Backend) -> None:
    """A gallery, a definition and version 1.0.0 of a fixed VHD in the staging account, to
    every region of the fleet."""
    gallery = _gallery(backend)
    blob = BlobRef("imgdstaging", "vhds", "golden.vhd")
    await backend.blobs.ensure_container(blob.account, blob.container)
    await backend.blobs.create_page_blob(blob, MIB + 512)
    await backend.blobs.write_pages(blob, MIB, fixed_footer(MIB).pack())
    await gallery.ensure_gallery(GALLERY, "westeurope")
    await gallery.ensure_definition(
        DefinitionSpec(GALLERY, "golden", "westeurope", OsType.LINUX, "contoso", "golden", "22")
    )
    await gallery.begin_create_version(
        VersionSpec(
            GALLERY,
            "golden",
            "1.0.0",
            "westeurope",
            VersionSource(blob=blob),
            tuple(TargetRegion(r) for r in REGIONS),
        )
    )


def _gallery(backend: Backend) -> GalleryService:
    assert backend.gallery is not None, "the backend publishes no gallery"
    return backend.gallery


def states(version: ImageVersion) -> dict[str, ReplicationState]:
    return {r.region: r.state for r in version.replication}


def test_the_local_backend_replicates_and_fails_as_its_config_says(tmp_path: Path) -> None:
    backend = open_backend(
        config(tmp_path, gallery_replication_seconds=0, fail_gallery_regions=["North Europe"])
    )
    run(publish(backend))

    version = run(_gallery(backend).get_version(GALLERY, "golden", "1.0.0"))

    assert states(version) == {
        "westeurope": ReplicationState.COMPLETED,
        "northeurope": ReplicationState.FAILED,
    }
    assert (tmp_path / "root" / "gallery.db").is_file()


def test_a_local_read_of_the_gallery_creates_nothing(tmp_path: Path) -> None:
    gallery = _gallery(open_backend(config(tmp_path)))

    with pytest.raises(NotFound):
        run(gallery.get_version(GALLERY, "golden", "1.0.0"))
    with pytest.raises(NotFound):
        run(gallery.get_definition(GALLERY, "golden"))
    with pytest.raises(NotFound):
        run(gallery.get_sharing(GALLERY))
    assert run(gallery.list_versions(GALLERY, "golden")) == []
    assert run(gallery.delete_version(GALLERY, "golden", "1.0.0")) is False

    assert not (tmp_path / "root").exists()


def test_the_sim_replicates_in_hours_fails_by_its_faults_and_heals(tmp_path: Path) -> None:
    model = SimModel()
    backend = open_sim_backend(
        config(tmp_path), faults=SimFaults(fail_gallery_regions=frozenset({"northeurope"}))
    )
    gallery = _gallery(backend)

    async def scenario() -> tuple[ImageVersion, float, ImageVersion]:
        await publish(backend)
        start = backend.clock.now()
        while True:  # poll as the engine would, in virtual time
            version = await gallery.get_version(GALLERY, "golden", "1.0.0")
            if version.provisioning_state not in ("Creating", "Updating"):
                break
            await backend.clock.sleep(60)
        took = backend.clock.now() - start
        heal(backend)
        await gallery.update_version(
            GALLERY, "golden", "1.0.0", target_regions=tuple(TargetRegion(r) for r in REGIONS)
        )
        await backend.clock.sleep(model.gallery_replication_seconds_max)
        return version, took, await gallery.get_version(GALLERY, "golden", "1.0.0")

    failed, took, healed = run_virtual(scenario())

    assert states(failed) == {
        "westeurope": ReplicationState.COMPLETED,
        "northeurope": ReplicationState.FAILED,
    }
    assert (
        model.gallery_replication_seconds_min <= took <= model.gallery_replication_seconds_max + 60
    )
    assert healed.provisioning_state == "Succeeded"
