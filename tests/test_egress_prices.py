"""Egress is priced by the zone of a real region, never guessed for a made-up name (issue 13)."""

from __future__ import annotations

import pytest

from imagedist import InvalidInput
from imagedist._domain.regions import EGRESS_PRICE_PER_GB, REGIONS, zone_of


def test_every_region_has_a_price() -> None:
    assert {zone_of(region) for region in REGIONS} <= set(EGRESS_PRICE_PER_GB)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        pytest.param("region0001", "such as 'westeurope'", id="made-up"),
        pytest.param("westeurop", "did you mean 'westeurope'?", id="misspelt"),
    ],
)
def test_a_name_that_is_no_region_is_refused_not_priced(name: str, named: str) -> None:
    """It was priced as South America, the dearest zone: a plan over made-up names cost 2-8×
    what the same plan over real regions costs."""
    with pytest.raises(InvalidInput) as refused:
        zone_of(name)

    message = str(refused.value)
    assert f"Cannot price egress from {name!r}" in message
    assert named in message
