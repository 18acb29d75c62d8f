"""Azure's public regions and the egress-price zone each belongs to (used by `check` and `plan`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exceptions import OperationFailed

if TYPE_CHECKING:
    from .abc import ImageSpec

__all__ = ["EGRESS_PRICE_PER_GB", "REGIONS", "check_image_place", "region_name", "zone_of"]

# Zone names follow Azure's bandwidth price list: egress between regions is priced by the zone
# of the source region (North America / Europe, Asia / Middle East / Africa, South America).
REGIONS: dict[str, str] = {
    **dict.fromkeys(
        [
            "eastus",
            "eastus2",
            "centralus",
            "northcentralus",
            "southcentralus",
            "westcentralus",
            "westus",
            "westus2",
            "westus3",
            "canadacentral",
            "canadaeast",
            "mexicocentral",
            "northeurope",
            "westeurope",
            "uksouth",
            "ukwest",
            "francecentral",
            "francesouth",
            "germanywestcentral",
            "germanynorth",
            "norwayeast",
            "norwaywest",
            "swedencentral",
            "switzerlandnorth",
            "switzerlandwest",
            "polandcentral",
            "italynorth",
            "spaincentral",
        ],
        "north-america-europe",
    ),
    **dict.fromkeys(
        [
            "eastasia",
            "southeastasia",
            "japaneast",
            "japanwest",
            "koreacentral",
            "koreasouth",
            "centralindia",
            "southindia",
            "westindia",
            "australiaeast",
            "australiasoutheast",
            "australiacentral",
            "newzealandnorth",
            "indonesiacentral",
            "malaysiawest",
            "uaenorth",
            "uaecentral",
            "qatarcentral",
            "israelcentral",
            "southafricanorth",
            "southafricawest",
        ],
        "asia-middle-east-africa",
    ),
    **dict.fromkeys(["brazilsouth", "brazilsoutheast", "chilecentral"], "south-america"),
}


# List prices (USD per GB) of data leaving a region for another one, by the source's zone
# (PERF-MODEL.md); traffic within a region is free.
EGRESS_PRICE_PER_GB: dict[str, float] = {
    "north-america-europe": 0.02,
    "asia-middle-east-africa": 0.08,
    "south-america": 0.16,
}


def zone_of(region: str) -> str:
    """The price zone of a region; unknown regions are priced as the most expensive zone."""
    return REGIONS.get(region, "south-america")


def region_name(region: str) -> str:
    """``westeurope`` for ``West Europe``: Azure accepts both and lists the second."""
    return region.replace(" ", "").lower()


def check_image_place(spec: ImageSpec, account_place: tuple[str, str] | None) -> None:
    """Azure's rule for a managed image: its blob's account is in its subscription and region.

    :param account_place: (subscription, region) of the blob's account, None if unknown.
    :raises OperationFailed: with Azure's code, InvalidParameter, when the rule is broken.
    """
    sub, region = account_place or ("", "")
    if (sub, region_name(region)) != (spec.subscription, region_name(spec.region)):
        account = spec.source_blob.account
        raise OperationFailed(
            f"Source blob '{spec.source_blob}' must be in a storage account in the same "
            f"subscription and region as the image (subscription '{spec.subscription}', "
            f"region '{spec.region}'); storage account '{account}' is not.",
            code="InvalidParameter",
        )
