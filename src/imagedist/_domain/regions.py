"""Azure's public regions and the egress-price zone each belongs to (used by `check` and `plan`)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from .._exceptions import InvalidInput, OperationFailed

if TYPE_CHECKING:
    from ..abc import ImageSpec

__all__ = [
    "EGRESS_PRICE_PER_GB",
    "REGIONS",
    "RESTRICTED_REGIONS",
    "check_image_place",
    "region_name",
    "unknown_region",
    "zone_of",
]

# Every region of Azure's public cloud by its programmatic name (`az account list-locations`),
# the restricted ones (for disaster recovery or sovereign use) and the two early-access (EUAP)
# ones included: a config naming any other region is refused before anything is created.
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
            "swedensouth",
            "austriaeast",
            "belgiumcentral",
            "denmarkeast",
            "centraluseuap",
            "eastus2euap",
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
            "australiacentral2",
            "newzealandnorth",
            "indonesiacentral",
            "malaysiawest",
            "malaysiasouth",
            "taiwannorth",
            "taiwannorthwest",
            "jioindiacentral",
            "jioindiawest",
            "uaenorth",
            "uaecentral",
            "qatarcentral",
            "israelcentral",
            "israelnorthwest",
            "southafricanorth",
            "southafricawest",
        ],
        "asia-middle-east-africa",
    ),
    **dict.fromkeys(["brazilsouth", "brazilsoutheast", "chilecentral"], "south-america"),
}

# Regions a subscription can use only once Microsoft grants it access (disaster recovery within a
# country, sovereign needs, early access): `az account list-locations` lists them, but a
# subscription without access cannot create resources there, which `imagedist check` reports.
RESTRICTED_REGIONS = frozenset(
    {
        "australiacentral",
        "australiacentral2",
        "brazilsoutheast",
        "centraluseuap",
        "eastus2euap",
        "francesouth",
        "germanynorth",
        "israelnorthwest",
        "jioindiacentral",
        "jioindiawest",
        "malaysiasouth",
        "norwaywest",
        "southafricawest",
        "swedensouth",
        "switzerlandwest",
        "taiwannorthwest",
        "uaecentral",
    }
)

# List prices (USD per GB) of data leaving a region for another one, by the source's zone
# (PERF-MODEL.md); traffic within a region is free.
EGRESS_PRICE_PER_GB: dict[str, float] = {
    "north-america-europe": 0.02,
    "asia-middle-east-africa": 0.08,
    "south-america": 0.16,
}


def zone_of(region: str) -> str:
    """The price zone of a region.

    :raises InvalidInput: for a name that is not an Azure region: its price is unknown, and
        guessing one (the most expensive zone, once) makes a plan's egress cost up. A config
        refuses such a name on load, so only a caller that skipped it gets here.
    """
    zone = REGIONS.get(region)
    if zone is None:
        raise InvalidInput(f"Cannot price egress from {region!r}: {unknown_region(region)}.")
    return zone


def unknown_region(name: str) -> str:
    """Why ``name`` is not a region, naming the closest real one when there is one."""
    close = region_name(name) if region_name(name) in REGIONS else None
    close = close or next(iter(difflib.get_close_matches(name.lower(), REGIONS, n=1)), None)
    if close is not None:
        return f"region {name!r} is not an Azure region name (did you mean {close!r}?)"
    return (
        f"region {name!r} is not an Azure region name; use one that"
        " `az account list-locations -o table` lists, such as 'westeurope'"
    )


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
