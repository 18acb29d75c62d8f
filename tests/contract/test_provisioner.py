"""Contract of the Provisioner port: every implementation must pass these."""

from __future__ import annotations

import pytest

from imagedist.abc import AccountInfo

from .conftest import ProvisionerHarness
from helpers import run

SKU = "Standard_LRS"


def make_group(h: ProvisionerHarness, name: str = "rg-setup", region: str = "westeurope") -> str:
    run(h.prov.create_resource_group(h.subscription, name, region))
    return name


def make_account(
    h: ProvisionerHarness, name: str, group: str = "rg-setup", region: str = "westeurope"
) -> None:
    run(h.prov.create_storage_account(h.subscription, group, name, region, SKU))


def account(h: ProvisionerHarness, name: str, group: str = "rg-setup") -> AccountInfo | None:
    return run(h.prov.get_storage_account(h.subscription, group, name))


def group_region(h: ProvisionerHarness, name: str = "rg-setup") -> str | None:
    group = run(h.prov.get_resource_group(h.subscription, name))
    return None if group is None else group.region


# resource groups


def test_a_resource_group_is_created_read_and_deleted(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    assert group_region(h) is None

    make_group(h, region="eastus")
    assert group_region(h) == "eastus"
    make_group(h, region="eastus")  # create or update: again is fine
    assert group_region(h) == "eastus"

    run(h.prov.delete_resource_group(h.subscription, "rg-setup"))
    assert group_region(h) is None


def test_deleting_a_missing_resource_group_is_not_an_error(
    provisioner: ProvisionerHarness,
) -> None:
    run(provisioner.prov.delete_resource_group(provisioner.subscription, "rg-never"))
    assert group_region(provisioner, "rg-never") is None


def test_resource_groups_belong_to_their_subscription(provisioner: ProvisionerHarness) -> None:
    make_group(provisioner)
    assert run(provisioner.prov.get_resource_group("sub-other", "rg-setup")) is None


def test_deleting_a_resource_group_deletes_its_accounts(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    make_group(h)
    make_account(h, "imgdweu01")

    run(h.prov.delete_resource_group(h.subscription, "rg-setup"))

    make_group(h)
    assert account(h, "imgdweu01") is None
    assert run(h.prov.account_name_available(h.subscription, "imgdweu01"))[0]


# storage accounts


def test_a_storage_account_is_created_read_and_deleted(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    make_group(h)
    make_account(h, "imgdweu01", region="westeurope")

    assert account(h, "imgdweu01") == AccountInfo(
        h.subscription, "rg-setup", "imgdweu01", "westeurope", managed=True
    )

    run(h.prov.delete_storage_account(h.subscription, "rg-setup", "imgdweu01"))
    assert account(h, "imgdweu01") is None
    run(h.prov.delete_storage_account(h.subscription, "rg-setup", "imgdweu01"))  # idempotent
    assert account(h, "imgdweu01") is None


def test_an_account_in_another_region_than_its_group_keeps_its_region(
    provisioner: ProvisionerHarness,
) -> None:
    make_group(provisioner, region="westeurope")
    make_account(provisioner, "imgdeus01", region="eastus")

    found = account(provisioner, "imgdeus01")

    assert found is not None and found.region == "eastus"


def test_an_account_imagedist_did_not_make_is_not_managed(
    provisioner: ProvisionerHarness,
) -> None:
    h = provisioner
    if h.add_foreign_account is None:
        pytest.skip(f"{h.kind} cannot hold an account made by someone else")
    make_group(h)
    h.add_foreign_account(h.subscription, "rg-setup", "handmade01", "westeurope")

    found = account(h, "handmade01")

    assert found == AccountInfo(
        h.subscription, "rg-setup", "handmade01", "westeurope", managed=False
    )


def test_a_missing_account_or_group_reads_as_none(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    assert account(h, "nosuchacct01", group="rg-missing") is None  # no such group
    make_group(h)
    assert account(h, "nosuchacct01") is None  # the group holds no such account
    make_group(h, "rg-other")
    make_account(h, "imgdweu01", group="rg-other")
    assert account(h, "imgdweu01") is None  # it lives in another group
    assert account(h, "imgdweu01", group="rg-other") is not None


def test_deleting_a_missing_account_is_not_an_error(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    make_group(h)
    run(h.prov.delete_storage_account(h.subscription, "rg-setup", "nosuchacct01"))
    run(h.prov.delete_storage_account(h.subscription, "rg-missing", "nosuchacct01"))


# name availability


def test_a_name_is_free_until_an_account_takes_it(provisioner: ProvisionerHarness) -> None:
    h = provisioner
    assert run(h.prov.account_name_available(h.subscription, "imgdweu01"))[0] is True

    make_group(h)
    make_account(h, "imgdweu01")

    available, reason = run(h.prov.account_name_available(h.subscription, "imgdweu01"))
    assert available is False
    assert reason
    # names are global: another subscription cannot have it either
    assert run(h.prov.account_name_available("sub-other", "imgdweu01"))[0] is False


def test_the_reason_a_name_is_taken_is_the_platforms_code(provisioner: ProvisionerHarness) -> None:
    """`setup` shows the reason to the user: Azure's code, not a Python enum's repr."""
    h = provisioner
    make_group(h)
    make_account(h, "imgdweu01")

    assert run(h.prov.account_name_available(h.subscription, "imgdweu01")) == (
        False,
        "AlreadyExists",
    )


# regions


def test_list_regions_names_the_regions_as_configs_spell_them(
    provisioner: ProvisionerHarness,
) -> None:
    regions = run(provisioner.prov.list_regions(provisioner.subscription))

    assert {"westeurope", "eastus"} <= set(regions)
    assert all(r == r.lower() and " " not in r for r in regions)
