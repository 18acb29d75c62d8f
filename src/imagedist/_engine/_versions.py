"""Gallery version lifecycle (issue 11): list an image's versions, retire the old ones, roll the
newest back out of "latest".

Retiring is in two steps, as the gallery's users expect: a version past the ``--keep`` newest is
first given an end-of-life date and excluded from "latest" (VMs already made from it keep
working), and deleted only once retired for ``[gallery.versions] retire_grace_days`` — and never
while it is the only version complete in one of its regions.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from .._domain.gallery import GalleryRef, ImageVersion, ReplicationState, parse_version
from .._exceptions import InvalidInput, NotFound
from ..abc import GalleryService
from ._context import EngineContext
from ._publish import central_gallery

__all__ = ["RetireResult", "list_image_versions", "retire_versions", "roll_back"]


@dataclass(frozen=True)
class RetireResult:
    """What `versions retire` did, version names newest first."""

    kept: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # end of life set, out of "latest"
    deleted: list[str] = field(default_factory=list)
    spared: dict[str, str] = field(default_factory=dict)  # version -> why it stays


async def list_image_versions(ctx: EngineContext, image: str) -> list[ImageVersion]:
    """The image's versions in the central gallery, newest first."""
    return await _versions(_service(ctx), central_gallery(ctx.config), image)


async def retire_versions(
    ctx: EngineContext, image: str, keep: int, *, today: datetime.date | None = None
) -> RetireResult:
    """Retire every version but the ``keep`` newest; delete those retired long enough."""
    if keep < 1:
        raise InvalidInput("--keep must be at least 1: retiring every version leaves none.")
    service, gallery = _service(ctx), central_gallery(ctx.config)
    versions = await _versions(service, gallery, image)
    today = today or datetime.datetime.fromtimestamp(ctx.backend.clock.now(), datetime.UTC).date()
    grace = datetime.timedelta(days=_grace_days(ctx))
    result = RetireResult(kept=[v.name for v in versions[:keep]])
    remaining = list(versions)
    in_latest = {v.name for v in versions if not v.exclude_from_latest}
    # Oldest first: when the kept versions are all out of "latest", the newest older one is
    # the one that stays in it.
    for version in reversed(versions[keep:]):
        retired_on = _date(version.end_of_life)
        if in_latest == {version.name}:
            # "latest" would resolve to nothing: VMs made from it would fail to deploy.
            result.spared[version.name] = "the only version in 'latest'"
            continue
        if retired_on is None or retired_on > today:
            in_latest.discard(version.name)
            await service.update_version(
                gallery,
                image,
                version.name,
                exclude_from_latest=True,
                end_of_life=today.isoformat(),
            )
            result.retired.append(version.name)
            continue
        if today - retired_on < grace:
            left = (grace - (today - retired_on)).days
            result.spared[version.name] = f"retired on {retired_on}; deleted in {left} days"
            continue
        alone = _only_version_in(version, [v for v in remaining if v is not version])
        if alone:
            result.spared[version.name] = f"the only version complete in {', '.join(alone)}"
            continue
        await service.delete_version(gallery, image, version.name)
        remaining.remove(version)
        result.deleted.append(version.name)
    newest_first = {v.name: i for i, v in enumerate(versions)}
    result.retired.sort(key=newest_first.__getitem__)
    result.deleted.sort(key=newest_first.__getitem__)
    return result


async def roll_back(ctx: EngineContext, image: str) -> tuple[ImageVersion, ImageVersion]:
    """Exclude the newest version in "latest" from it, so that VMs made from "latest" get the
    previous one; returns (rolled back, now latest).

    :raises InvalidInput: if fewer than two versions are in "latest".
    """
    service, gallery = _service(ctx), central_gallery(ctx.config)
    in_latest = [v for v in await _versions(service, gallery, image) if not v.exclude_from_latest]
    if len(in_latest) < 2:
        raise InvalidInput(
            f"Image {image!r} has {len(in_latest)} version(s) in 'latest': rolling back needs a"
            " previous one to fall back to."
        )
    newest, previous = in_latest[0], in_latest[1]
    await service.update_version(gallery, image, newest.name, exclude_from_latest=True)
    return newest, previous


async def _versions(service: GalleryService, gallery: GalleryRef, image: str) -> list[ImageVersion]:
    try:
        versions = await service.list_versions(gallery, image)
    except NotFound:
        raise InvalidInput(
            f"Gallery {gallery.name!r} has no image definition {image!r}; `imagedist versions"
            " list` takes the image name a job was submitted with."
        ) from None
    return sorted(versions, key=lambda v: parse_version(v.name), reverse=True)


def _only_version_in(version: ImageVersion, others: list[ImageVersion]) -> list[str]:
    """The regions where ``version`` is complete and no other version is."""
    return sorted(
        replica.region
        for replica in version.replication
        if replica.state is ReplicationState.COMPLETED
        and not any(_complete_in(other, replica.region) for other in others)
    )


def _complete_in(version: ImageVersion, region: str) -> bool:
    replica = version.replication_of(region)
    return replica is not None and replica.state is ReplicationState.COMPLETED


def _date(text: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _grace_days(ctx: EngineContext) -> int:
    gallery = ctx.config.gallery
    return gallery.versions.retire_grace_days if gallery is not None else 30


def _service(ctx: EngineContext) -> GalleryService:
    if ctx.backend.gallery is None:
        raise InvalidInput("This backend has no Compute Gallery.")
    return ctx.backend.gallery
