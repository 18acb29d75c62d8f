"""What `setup` and `teardown` do to the cloud, as values the CLI and the engine share."""

from __future__ import annotations

import enum

__all__ = ["ChangeAction", "ChangeKind"]


class ChangeAction(enum.StrEnum):
    """Whether a change makes or removes a resource."""

    CREATE = "create"
    DELETE = "delete"


class ChangeKind(enum.StrEnum):
    """The kind of resource a change is about (its value reads in a sentence)."""

    RESOURCE_GROUP = "resource group"
    STORAGE_ACCOUNT = "storage account"
    CONTAINER = "container"
    STATE_TABLES = "state tables"
