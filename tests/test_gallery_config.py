"""The config's [publish] and [gallery] tables (issue 11): defaults, and every mistake refused
with its key path in one sentence."""

from __future__ import annotations

from typing import Any

import pytest

from imagedist import ConfigError
from imagedist._config import parse_config

STAGING = {"subscription": "sub-staging", "region": "westeurope", "account": "imgdstaging"}
FLEET = {"subscriptions": ["sub-a"], "regions": ["westeurope", "eastus"]}
DEFINITION = {"publisher": "contoso", "offer": "ubuntu", "sku": "22_04"}


def raw(**sections: Any) -> dict[str, Any]:
    return {"staging": dict(STAGING), "fleet": dict(FLEET), **sections}


def refused(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    message = str(info.value)
    assert "\n" not in message and message.endswith("."), message
    return info.value


def test_the_default_publishes_managed_images_only() -> None:
    config = parse_config(raw())
    assert config.publish.to == ["images"] and config.gallery is None


def test_a_gallery_defaults_to_the_staging_subscription_and_region() -> None:
    config = parse_config(
        raw(
            publish={"to": ["images", "gallery"]},
            gallery={"name": "golden_gallery", "definitions": {"gold": DEFINITION}},
        )
    )
    assert config.gallery is not None
    assert config.gallery.subscription_or(config.staging.subscription) == "sub-staging"
    assert config.gallery.region_or(config.staging.region) == "westeurope"
    assert config.gallery.share == "rbac"
    assert config.gallery.versions.replicas == 1
    assert config.gallery.definitions["gold"].security_type == "Standard"


@pytest.mark.parametrize(
    ("sections", "key_path", "needle"),
    [
        ({"publish": {"to": ["gallery"]}}, "publish.to", "no [gallery] table"),
        ({"publish": {"to": []}}, "publish.to", ""),
        ({"publish": {"to": ["images", "images"]}}, "publish.to", "twice"),
        ({"publish": {"to": ["managed"]}}, "publish.to.0", "gallery"),
        ({"gallery": {"name": "golden-gallery"}}, "gallery.name", "no '-'"),
        ({"gallery": {"name": "g", "region": "eastus"}}, "gallery.region", "staging region"),
        ({"gallery": {"name": "g", "region": "westeurop"}}, "gallery.region", "westeurope"),
        ({"gallery": {"name": "g", "share": "public"}}, "gallery.share", ""),
        ({"gallery": {"name": "g", "versions": {"replicas": 0}}}, "gallery.versions.replicas", ""),
        (
            {"gallery": {"name": "g", "versions": {"storage_account_type": "Premium_ZRS"}}},
            "gallery.versions.storage_account_type",
            "",
        ),
        (
            {"gallery": {"name": "g", "definitions": {"-gold": DEFINITION}}},
            "gallery.definitions",
            "image definition name",
        ),
        (
            {"gallery": {"name": "g", "definitions": {"gold": {"publisher": "contoso"}}}},
            "gallery.definitions.gold.offer",
            "",
        ),
        (
            {
                "gallery": {
                    "name": "g",
                    "definitions": {"gold": {**DEFINITION, "end_of_life": "next year"}},
                }
            },
            "gallery.definitions.gold.end_of_life",
            "YYYY-MM-DD",
        ),
        (
            {
                "gallery": {
                    "name": "g",
                    "definitions": {
                        "gold": {
                            **DEFINITION,
                            "security_type": "TrustedLaunch",
                            "hyper_v_generation": "V1",
                        }
                    },
                }
            },
            "gallery.definitions.gold",
            "V2",
        ),
    ],
)
def test_a_mistake_is_refused_with_its_key_path(
    sections: dict[str, Any], key_path: str, needle: str
) -> None:
    error = refused(raw(**sections))
    assert error.key_path == key_path, (error.key_path, str(error))
    assert needle in str(error)
