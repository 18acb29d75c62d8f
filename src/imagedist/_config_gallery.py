"""The config's ``[publish]`` and ``[gallery]`` tables: where a job's image goes (managed images,
an Azure Compute Gallery, or both), and how the gallery, its definitions and versions are made."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._domain.names import DEFINITION_NAME, GALLERY_NAME, RESOURCE_GROUP_NAME, NameRule
from ._domain.regions import REGIONS, unknown_region

__all__ = [
    "TRUSTED_LAUNCH",
    "GalleryDefinitionSpec",
    "GallerySpec",
    "GalleryVersionPolicy",
    "PublishPolicy",
]

Destination = Literal["images", "gallery"]
SecurityType = Literal[
    "Standard",
    "TrustedLaunchSupported",
    "TrustedLaunch",
    "ConfidentialVmSupported",
    "ConfidentialVM",
    "TrustedLaunchAndConfidentialVmSupported",
]
# Security types that boot only as generation 2 (Trusted Launch and confidential VMs are UEFI).
TRUSTED_LAUNCH = frozenset(
    {
        "TrustedLaunchSupported",
        "TrustedLaunch",
        "ConfidentialVmSupported",
        "ConfidentialVM",
        "TrustedLaunchAndConfidentialVmSupported",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _check(rule: NameRule, value: str) -> str:
    if not rule.matches(value):
        raise ValueError(rule.problem(value))
    return value


def _check_date(value: str) -> str:
    if value:
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date: write it as YYYY-MM-DD (such as 2027-06-30)"
            ) from None
    return value


def _images_only() -> list[Destination]:
    return ["images"]


class PublishPolicy(_Strict):
    """``[publish]``: where every job's image goes unless `submit --target` says otherwise."""

    to: list[Destination] = Field(default_factory=_images_only, min_length=1)

    @field_validator("to")
    @classmethod
    def _unique(cls, value: list[Destination]) -> list[Destination]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} names a destination twice; list each once")
        return value


class GalleryDefinitionSpec(_Strict):
    """``[gallery.definitions.<image name>]``: the image definition of that image name. Every
    property but ``description`` and ``end_of_life`` is immutable once the definition exists."""

    publisher: str = Field(min_length=1, max_length=128)
    offer: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=64)
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    # None: the OS type and generation of the job that first publishes it (submit --os-type and
    # --hyper-v-generation); with both set, `setup` makes the definition.
    os_type: Literal["linux", "windows"] | None = None
    hyper_v_generation: Literal["V1", "V2"] | None = None
    security_type: SecurityType = "Standard"
    architecture: Literal["x64", "Arm64"] = "x64"
    description: str = Field(default="", max_length=4096)
    end_of_life: str = ""  # YYYY-MM-DD

    @field_validator("end_of_life")
    @classmethod
    def _date(cls, value: str) -> str:
        return _check_date(value)

    @model_validator(mode="after")
    def _trusted_launch_is_gen2(self) -> GalleryDefinitionSpec:
        if self.security_type in TRUSTED_LAUNCH and self.hyper_v_generation == "V1":
            raise ValueError(
                f'security_type {self.security_type!r} needs hyper_v_generation = "V2"'
                " (Trusted Launch and confidential VMs boot with UEFI)"
            )
        return self


class GalleryVersionPolicy(_Strict):
    """``[gallery.versions]``: how each job's version is published."""

    replicas: int = Field(default=1, ge=1, le=100)  # per target region
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] = "Standard_LRS"
    replication_mode: Literal["Full", "Shallow"] = "Full"
    exclude_from_latest: bool = False
    end_of_life_days: int = Field(default=0, ge=0, le=36_500)  # 0: no end of life
    retire_grace_days: int = Field(default=30, ge=0, le=36_500)  # `versions retire` deletes after
    tags: dict[str, str] = Field(default_factory=dict)


class GallerySpec(_Strict):
    """``[gallery]``: the Azure Compute Gallery a job publishes to, and how the fleet's
    subscriptions reach it."""

    name: str
    subscription: str | None = None  # default: the staging subscription
    resource_group: str = "imagedist-gallery"
    region: str | None = None  # default: the staging region (where the upload is)
    # rbac: readers get Reader on the gallery; direct: the gallery is shared with the fleet's
    # subscriptions (and `tenants`); per-subscription: each subscription gets a gallery of its
    # own, its version copied from the central one.
    share: Literal["rbac", "direct", "per-subscription"] = "rbac"
    readers: dict[str, str] = Field(default_factory=dict)  # subscription -> principal object id
    tenants: list[str] = Field(default_factory=list)
    versions: GalleryVersionPolicy = Field(default_factory=GalleryVersionPolicy)
    definitions: dict[str, GalleryDefinitionSpec] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _gallery_name(cls, value: str) -> str:
        return _check(GALLERY_NAME, value)

    @field_validator("resource_group")
    @classmethod
    def _group(cls, value: str) -> str:
        return _check(RESOURCE_GROUP_NAME, value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and value not in REGIONS:
            raise ValueError(unknown_region(value))
        return value

    def subscription_or(self, staging: str) -> str:
        return self.subscription or staging

    def region_or(self, staging: str) -> str:
        return self.region or staging

    @field_validator("definitions")
    @classmethod
    def _definition_names(
        cls, value: dict[str, GalleryDefinitionSpec]
    ) -> dict[str, GalleryDefinitionSpec]:
        for name in value:
            _check(DEFINITION_NAME, name)
        return value
