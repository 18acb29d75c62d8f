"""What `setup` and `teardown` do to the cloud, as values the CLI and the engine share."""

from __future__ import annotations

import enum

__all__ = ["ChangeAction", "ChangeKind", "DataRole", "ResourceProvider", "ResourceRole", "Role"]


class ChangeAction(enum.StrEnum):
    """Whether a change makes, removes or (teardown only) deliberately leaves a resource."""

    CREATE = "create"
    DELETE = "delete"
    GRANT = "grant"
    REGISTER = "register"
    SHARE = "share"
    KEEP = "keep"


class ChangeKind(enum.StrEnum):
    """The kind of resource a change is about (its value reads in a sentence)."""

    PROVIDER = "resource provider"
    RESOURCE_GROUP = "resource group"
    STORAGE_ACCOUNT = "storage account"
    CONTAINER = "container"
    ROLE_ASSIGNMENT = "role"
    STATE_TABLES = "state tables"
    GALLERY = "gallery"
    IMAGE_DEFINITION = "image definition"


class DataRole(enum.StrEnum):
    """The built-in Azure roles that let an Entra ID identity read and write data: Owner and
    Contributor manage accounts but cannot touch their blobs or tables."""

    BLOB_DATA_CONTRIBUTOR = "Storage Blob Data Contributor"
    TABLE_DATA_CONTRIBUTOR = "Storage Table Data Contributor"

    @property
    def definition_id(self) -> str:
        """The role definition's id, the same in every tenant."""
        return _DEFINITION_IDS[self]


_DEFINITION_IDS = {
    DataRole.BLOB_DATA_CONTRIBUTOR: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    DataRole.TABLE_DATA_CONTRIBUTOR: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
}


class ResourceRole(enum.StrEnum):
    """The built-in Azure roles imagedist grants others on a resource it made (a gallery)."""

    READER = "Reader"  # reads the gallery's versions: enough to make VMs from them

    @property
    def definition_id(self) -> str:
        """The role definition's id, the same in every tenant."""
        return _RESOURCE_ROLE_IDS[self]


_RESOURCE_ROLE_IDS = {ResourceRole.READER: "acdd72a7-3385-48ef-bd42-f606fba81ae7"}

Role = DataRole | ResourceRole  # any role a provisioner grants


class ResourceProvider(enum.StrEnum):
    """The resource providers a subscription must have registered before imagedist uses it."""

    STORAGE = "Microsoft.Storage"
    COMPUTE = "Microsoft.Compute"
