"""Contract of the Provisioner port, part two: what tells setup's resources from anyone else's
(the managed tag), data-plane roles and resource providers; and teardown, planned and applied by
the engine through each provisioner, leaving a hand-made group alone."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from imagedist._config import Config, load_config
from imagedist._domain.changes import ChangeAction, ChangeKind, DataRole, ResourceRole
from imagedist._engine._context import EngineContext
from imagedist._engine._setup import apply_changes, plan_teardown
from imagedist.abc import (
    AccountInfo,
    Backend,
    BlobStore,
    GroupInfo,
    ImageService,
    StateStore,
    SystemClock,
)

from .conftest import ProvisionerHarness
from helpers import config_text, run

SKU = "Standard_LRS"


def _account(h: ProvisionerHarness, name: str = "imgdweu01") -> AccountInfo:
    run(h.prov.create_resource_group(h.subscription, "rg-setup", "westeurope"))
    run(h.prov.create_storage_account(h.subscription, "rg-setup", name, "westeurope", SKU))
    found = run(h.prov.get_storage_account(h.subscription, "rg-setup", name))
    assert found is not None
    return found


# the managed tag


def test_a_group_setup_makes_is_managed_and_a_hand_made_one_is_not(
    provisioner: ProvisionerHarness,
) -> None:
    h = provisioner
    if h.add_foreign_group is None:
        pytest.skip(f"{h.kind} cannot hold a group made by someone else")
    run(h.prov.create_resource_group(h.subscription, "rg-ours", "westeurope"))
    h.add_foreign_group(h.subscription, "rg-theirs", "eastus")

    assert run(h.prov.get_resource_group(h.subscription, "rg-ours")) == GroupInfo(
        h.subscription, "rg-ours", "westeurope", managed=True
    )
    assert run(h.prov.get_resource_group(h.subscription, "rg-theirs")) == GroupInfo(
        h.subscription, "rg-theirs", "eastus", managed=False
    )


# data-plane roles


def test_the_principal_is_the_signed_in_identity(provisioner: ProvisionerHarness) -> None:
    assert run(provisioner.prov.principal_id()) == provisioner.principal


def test_a_role_is_granted_once_and_again_is_fine(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    account = _account(h)
    who = "0b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"
    blob, table = DataRole.BLOB_DATA_CONTRIBUTOR, DataRole.TABLE_DATA_CONTRIBUTOR
    assert run(h.prov.has_role(account, who, blob)) is False

    run(h.prov.grant_role(account, who, blob))
    run(h.prov.grant_role(account, who, blob))  # an assignment that exists is fine

    assert run(h.prov.has_role(account, who, blob)) is True
    assert run(h.prov.has_role(account, who, table)) is False  # only the role granted
    other = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    assert run(h.prov.has_role(account, other, blob)) is False  # only to whom it was granted


def test_a_role_on_one_account_is_not_on_another(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    first, second = _account(h, "imgdweu01"), _account(h, "imgdweu02")
    who = "0b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"

    run(h.prov.grant_role(first, who, DataRole.BLOB_DATA_CONTRIBUTOR))

    assert run(h.prov.has_role(second, who, DataRole.BLOB_DATA_CONTRIBUTOR)) is False


def _gallery_scope(h: ProvisionerHarness, name: str) -> str:
    return (
        f"/subscriptions/{h.subscription}/resourceGroups/rg-gallery"
        f"/providers/Microsoft.Compute/galleries/{name}"
    )


def test_a_role_at_a_scope_is_granted_once_and_holds_there_and_below(
    provisioner: ProvisionerHarness,
) -> None:
    h = provisioner
    gallery, other_gallery = _gallery_scope(h, "galmain"), _gallery_scope(h, "galother")
    who = "0b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"
    reader = ResourceRole.READER
    assert run(h.prov.has_role_at(gallery, who, reader)) is False

    run(h.prov.grant_role_at(gallery, who, reader))
    run(h.prov.grant_role_at(gallery, who, reader))  # an assignment that exists is fine

    assert run(h.prov.has_role_at(gallery, who, reader)) is True
    assert run(h.prov.has_role_at(gallery + "/images/golden", who, reader)) is True
    assert run(h.prov.has_role_at(other_gallery, who, reader)) is False
    other = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    assert run(h.prov.has_role_at(gallery, other, reader)) is False
    assert run(h.prov.has_role_at(gallery, who, DataRole.BLOB_DATA_CONTRIBUTOR)) is False


# resource providers


def test_providers_start_registered(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    for namespace in ("Microsoft.Storage", "Microsoft.Compute"):
        assert run(h.prov.provider_registered(h.subscription, namespace)) is True


def test_an_unregistered_provider_is_registered(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    if h.unregister_provider is None:
        pytest.skip(f"{h.kind} has no resource providers to register")
    h.unregister_provider(h.subscription, "Microsoft.Storage")
    assert run(h.prov.provider_registered(h.subscription, "Microsoft.Storage")) is False
    assert run(h.prov.provider_registered(h.subscription, "Microsoft.Compute")) is True

    run(h.prov.register_provider(h.subscription, "Microsoft.Storage"))  # waits until registered

    assert run(h.prov.provider_registered(h.subscription, "Microsoft.Storage")) is True
    run(h.prov.register_provider(h.subscription, "Microsoft.Storage"))  # again: nothing to do


# teardown, through the engine


def _config(tmp_path: Path, subscription: str) -> Config:
    path = tmp_path / "teardown.toml"
    text = config_text(
        staging={"subscription": subscription, "region": "westeurope", "account": "stagingacct"},
        fleet=None,
        targets=[{"subscription": subscription, "region": "westeurope", "account": "imgdweu01"}],
    )
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _context(h: ProvisionerHarness, config: Config) -> EngineContext:
    # Teardown uses the provisioner and the clock only; the other ports are never touched.
    backend = Backend(
        blobs=cast(BlobStore, None),
        images=cast(ImageService, None),
        state=cast(StateStore, None),
        clock=SystemClock(),
        provisioner=h.prov,
    )
    return EngineContext(backend, config)


def test_teardown_deletes_what_setup_made_and_leaves_a_hand_made_group(
    provisioner: ProvisionerHarness, tmp_path: Path
) -> None:
    """Someone made a group named like the images group by hand: it stays, with what is in it."""
    h = provisioner
    if h.add_foreign_group is None:
        pytest.skip(f"{h.kind} cannot hold a group made by someone else")
    config = _config(tmp_path, h.subscription)
    target = config.fleet_targets()[0]
    h.add_foreign_group(h.subscription, target.resource_group, "westeurope")
    for group in (config.staging.resource_group, target.storage_resource_group):
        run(h.prov.create_resource_group(h.subscription, group, "westeurope"))
    run(
        h.prov.create_storage_account(
            h.subscription, config.staging.resource_group, "stagingacct", "westeurope", SKU
        )
    )
    run(
        h.prov.create_storage_account(
            h.subscription, target.storage_resource_group, "imgdweu01", "westeurope", SKU
        )
    )
    ctx = _context(h, config)

    changes = run(plan_teardown(ctx))
    run(apply_changes(ctx, changes, lambda change: None))

    kept = {c.name: c.reason for c in changes if c.action is ChangeAction.KEEP}
    deleted = {(c.kind, c.name) for c in changes if c.action is ChangeAction.DELETE}
    assert "imagedist-managed" in kept[target.resource_group]
    assert deleted == {
        (ChangeKind.RESOURCE_GROUP, config.staging.resource_group),
        (ChangeKind.RESOURCE_GROUP, target.storage_resource_group),
        (ChangeKind.STORAGE_ACCOUNT, "stagingacct"),
        (ChangeKind.STORAGE_ACCOUNT, "imgdweu01"),
    }
    left = run(h.prov.get_resource_group(h.subscription, target.resource_group))
    assert left is not None and not left.managed
    assert run(h.prov.get_resource_group(h.subscription, config.staging.resource_group)) is None


def test_teardown_keeps_the_images_groups_when_asked(
    provisioner: ProvisionerHarness, tmp_path: Path
) -> None:
    h = provisioner
    config = _config(tmp_path, h.subscription)
    target = config.fleet_targets()[0]
    for group in (config.staging.resource_group, target.resource_group):
        run(h.prov.create_resource_group(h.subscription, group, "westeurope"))
    ctx = _context(h, config)

    changes = run(plan_teardown(ctx, keep_images=True))
    run(apply_changes(ctx, changes, lambda change: None))

    assert [(c.action, c.name) for c in changes] == [
        (ChangeAction.DELETE, config.staging.resource_group),
        (ChangeAction.KEEP, target.resource_group),
    ]
    assert "--keep-images" in changes[1].describe()
    assert run(h.prov.get_resource_group(h.subscription, target.resource_group)) is not None
    assert run(h.prov.get_resource_group(h.subscription, config.staging.resource_group)) is None


def test_teardown_keeps_a_group_that_holds_an_account_setup_did_not_make(
    provisioner: ProvisionerHarness, tmp_path: Path
) -> None:
    h = provisioner
    if h.add_foreign_account is None:
        pytest.skip(f"{h.kind} cannot hold an account made by someone else")
    config = _config(tmp_path, h.subscription)
    group = config.staging.resource_group
    run(h.prov.create_resource_group(h.subscription, group, "westeurope"))
    h.add_foreign_account(h.subscription, group, "stagingacct", "westeurope")  # the config's name
    ctx = _context(h, config)

    changes = run(plan_teardown(ctx))
    run(apply_changes(ctx, changes, lambda change: None))

    assert {c.action for c in changes} == {ChangeAction.KEEP}
    assert "it holds storage account stagingacct" in changes[-1].describe()
    assert run(h.prov.get_storage_account(h.subscription, group, "stagingacct")) is not None
