"""Azure's naming rules, each stated once: the config, the engine and every adapter check names
here, so a name one layer accepts is never refused by another (issue 9)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._exceptions import InvalidInput

__all__ = [
    "ACCOUNT_NAME",
    "ACCOUNT_PREFIX",
    "CONTAINER_NAME",
    "DEFINITION_NAME",
    "GALLERY_NAME",
    "IMAGE_NAME",
    "RESOURCE_GROUP_NAME",
    "NameRule",
    "parse_disk_id",
]


@dataclass(frozen=True)
class NameRule:
    """A kind of name, the pattern a whole name must match, and the rule in words."""

    subject: str  # "storage account name"
    pattern: re.Pattern[str]  # matched in full
    rule: str  # "must be 3-24 lowercase letters and digits"

    def matches(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None

    def problem(self, name: str) -> str:
        """What is wrong with ``name``, as a clause (the config prefixes it with the key)."""
        return f"{self.subject} {name!r} {self.rule}"

    def check(self, name: str) -> str:
        """:return: ``name``. :raises InvalidInput: unless it :meth:`matches`."""
        if not self.matches(name):
            problem = self.problem(name)
            raise InvalidInput(f"{problem[0].upper()}{problem[1:]}.")
        return name


ACCOUNT_NAME = NameRule(
    "storage account name",
    re.compile(r"[a-z0-9]{3,24}"),
    "must be 3-24 lowercase letters and digits",
)
# A generated account name is the prefix, a hash and "t2", 24 characters in all.
ACCOUNT_PREFIX = NameRule(
    "prefix", re.compile(r"[a-z0-9]{1,11}"), "must be 1-11 lowercase letters and digits"
)
CONTAINER_NAME = NameRule(
    "container name",
    re.compile(r"(?=.{3,63}\Z)[a-z0-9]+(-[a-z0-9]+)*"),
    "must be 3-63 lowercase letters, digits and single hyphens",
)
RESOURCE_GROUP_NAME = NameRule(
    "resource group name",
    re.compile(r"[-\w.()]{0,89}[-\w()]"),
    "must be 1-90 letters, digits, '_', '-', '.', '(' or ')' and not end with '.'",
)
GALLERY_NAME = NameRule(
    "gallery name",
    re.compile(r"(?=.{1,80}\Z)[A-Za-z0-9]+([._][A-Za-z0-9]+)*"),
    "is invalid: use 1-80 letters and digits, with single '_' or '.' between them (no '-')",
)
DEFINITION_NAME = NameRule(
    "image definition name",
    re.compile(r"(?=.{1,80}\Z)[A-Za-z0-9]+([-._][A-Za-z0-9]+)*"),
    "is invalid: use 1-80 letters and digits, with single '_', '-' or '.' between them",
)
# ASCII only: Azure refuses other letters in an image name.
IMAGE_NAME = NameRule(
    "image name",
    re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?"),
    "is invalid: use 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit and"
    " ending with a letter, digit or '_'",
)

#: ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}``, any case.
_DISK_ID = re.compile(
    r"/subscriptions/(?P<sub>[-\w.]{1,64})/resourceGroups/(?P<rg>[-\w.()]{1,90})"
    r"/providers/Microsoft\.Compute/disks/(?P<name>[-\w.]{1,80})/?",
    re.IGNORECASE | re.ASCII,
)


def parse_disk_id(disk_id: str) -> tuple[str, str, str]:
    """``(subscription, resource group, name)`` of a managed disk's ARM resource id.

    :raises InvalidInput: if ``disk_id`` is not
        ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}``.
    """
    match = _DISK_ID.fullmatch(disk_id) if isinstance(disk_id, str) else None
    if match is None:
        raise InvalidInput(
            f"{disk_id!r} is not a managed disk's resource id; give it as /subscriptions/<id>"
            "/resourceGroups/<group>/providers/Microsoft.Compute/disks/<name>."
        )
    return match["sub"], match["rg"], match["name"]
