"""What `setup` and `teardown` change, and what `check` finds, as values the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass

from .._domain.changes import ChangeAction, ChangeKind

__all__ = ["Change", "Problem"]


@dataclass(frozen=True)
class Change:
    """One thing setup or teardown does (or, for teardown, leaves alone on purpose)."""

    action: ChangeAction
    kind: ChangeKind
    subscription: str
    name: str
    resource_group: str = ""
    region: str = ""
    account: str = ""
    principal: str = ""  # whom a role is granted to
    reason: str = ""  # why teardown keeps it

    def describe(self) -> str:
        if self.kind is ChangeKind.ROLE_ASSIGNMENT:
            return (
                f"{self.action} role {self.name} on storage account {self.account} in"
                f" {self.subscription}/{self.resource_group} to principal {self.principal}"
            )
        if self.kind is ChangeKind.GALLERY and self.principal:
            return (
                f"{self.action} role Reader on gallery {self.name} in"
                f" {self.subscription}/{self.resource_group} to principal {self.principal}"
            )
        where = f" in {self.subscription}/{self.resource_group}" if self.resource_group else ""
        where = where or (f" in {self.subscription}" if self.subscription else "")
        region = f" ({self.region})" if self.region else ""
        of = f" of account {self.account}" if self.account else ""
        if self.kind is ChangeKind.IMAGE_DEFINITION:
            of = f" in gallery {self.account}"
        why = f": {self.reason}" if self.reason else ""
        return f"{self.action} {self.kind} {self.name}{of}{where}{region}{why}"

    @property
    def writes(self) -> bool:
        """Whether it is a Resource Manager write (containers and tables are the data plane's)."""
        return self.action is not ChangeAction.KEEP and self.kind not in (
            ChangeKind.CONTAINER,
            ChangeKind.STATE_TABLES,
        )


@dataclass(frozen=True)
class Problem:
    """One thing `check` found wrong, with what to do about it."""

    subject: str
    message: str
