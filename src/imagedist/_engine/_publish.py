"""Where a job's image goes, decided at submit: managed images, a Compute Gallery version, or
both (issue 11). Everything a gallery job needs is checked here, before the job exists: a
definition in the config for its image name, one that agrees with what the gallery holds, and a
version name that is free."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .._config import Config
from .._config_gallery import GallerySpec
from .._domain import Job, OsType
from .._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    PublicationRow,
    PublicationState,
    RegionStatus,
    next_patch,
    parse_version,
)
from .._domain.names import DEFINITION_NAME
from .._exceptions import InvalidInput, NotFound
from ..abc import GalleryService
from ._context import EngineContext

__all__ = [
    "CENTRAL",
    "Destinations",
    "central_gallery",
    "definition_spec",
    "plan_publications",
    "resolve_destinations",
    "retried_publication",
    "wanted_regions",
]

CENTRAL = "central"
DESTINATIONS = ("images", "gallery")


@dataclass(frozen=True)
class Destinations:
    """What a new job publishes to, and its gallery version's name ("" without a gallery)."""

    publish: tuple[str, ...]
    gallery_version: str = ""

    @property
    def images(self) -> bool:
        return "images" in self.publish

    @property
    def gallery(self) -> bool:
        return "gallery" in self.publish


def central_gallery(config: Config) -> GalleryRef:
    gallery = _gallery(config)
    return GalleryRef(
        gallery.subscription_or(config.staging.subscription), gallery.resource_group, gallery.name
    )


def definition_spec(
    config: Config, image_name: str, os_type: OsType, hyper_v_generation: str
) -> DefinitionSpec:
    """The image definition of ``image_name`` as the config says it, in the central gallery.

    :raises InvalidInput: if the config has none for that image name.
    """
    gallery = _gallery(config)
    spec = gallery.definitions.get(image_name)
    if spec is None:
        raise InvalidInput(
            f"[gallery] has no definition for image {image_name!r}; add a"
            f" [gallery.definitions.{image_name}] table with publisher, offer and sku."
        )
    return DefinitionSpec(
        gallery=central_gallery(config),
        name=image_name,
        region=gallery.region_or(config.staging.region),
        os_type=OsType(spec.os_type) if spec.os_type else os_type,
        publisher=spec.publisher,
        offer=spec.offer,
        sku=spec.sku,
        os_state=spec.os_state,
        hyper_v_generation=spec.hyper_v_generation or hyper_v_generation,
        security_type="" if spec.security_type == "Standard" else spec.security_type,
        architecture=spec.architecture,
        description=spec.description,
        end_of_life=spec.end_of_life,
    )


async def resolve_destinations(
    ctx: EngineContext,
    image_name: str,
    os_type: OsType,
    hyper_v_generation: str,
    publish: Sequence[str] | None,
    version: str | None,
) -> Destinations:
    """Where the job goes (``publish``, else ``[publish] to``) and, for a gallery, its version.

    :raises InvalidInput: naming the fix, if a destination is unknown, the config or backend
        has no gallery, the definition is missing or disagrees with the gallery's, the version
        is malformed or exists.
    """
    chosen = tuple(dict.fromkeys(publish or ctx.config.publish.to))
    unknown = [d for d in chosen if d not in DESTINATIONS]
    if unknown or not chosen:
        raise InvalidInput(
            f"Unknown destination {', '.join(map(repr, unknown)) or '(none)'}: publish to"
            " 'images', 'gallery' or both."
        )
    if "gallery" not in chosen:
        if version:
            raise InvalidInput("--version names a gallery version: add --target gallery.")
        return Destinations(chosen)
    service = _service(ctx)
    DEFINITION_NAME.check(image_name)  # the image name names the definition
    expected = definition_spec(ctx.config, image_name, os_type, hyper_v_generation)
    _check_job_fits(expected, os_type, hyper_v_generation)
    await _check_definition(service, expected)
    existing = await _version_names(service, expected)
    if version:
        try:
            parse_version(version)
        except ValueError as exc:
            raise InvalidInput(f"Invalid --version: {exc}.") from None
        if version in existing:
            raise InvalidInput(
                f"Version {version} of {image_name} exists already; give another --version"
                f" or leave it out (the next free one is {next_patch(existing)})."
            )
    return Destinations(chosen, version or next_patch(existing))


def plan_publications(
    config: Config, job: Job, enabled_regions: dict[str, list[str]]
) -> list[PublicationRow]:
    """The job's gallery versions: the central one and, in ``per-subscription`` mode, one in a
    gallery of each subscription that has an enabled target (``enabled_regions``: subscription
    -> its enabled regions, in fleet order)."""
    if "gallery" not in job.publish:
        return []
    gallery = _gallery(config)
    central = central_gallery(config)
    region = gallery.region_or(config.staging.region)
    # Azure replicates a version to its own region first: that region is always a target.
    every_region = list(
        dict.fromkeys([region, *(r for regions in enabled_regions.values() for r in regions)])
    )
    local = gallery.share == "per-subscription"
    rows = [
        _row(job, CENTRAL, central, region, [region] if local else every_region, source="tier0")
    ]
    if local:
        for subscription, regions in enabled_regions.items():
            if regions:
                own = GalleryRef(subscription, gallery.resource_group, gallery.name)
                wanted = list(dict.fromkeys([region, *regions]))
                rows.append(_row(job, subscription, own, region, wanted, source=CENTRAL))
    return rows


def _row(
    job: Job, key: str, gallery: GalleryRef, region: str, regions: list[str], *, source: str
) -> PublicationRow:
    return PublicationRow(
        job_id=job.id,
        key=key,
        gallery=gallery,
        definition=job.image_name,
        version_name=job.gallery_version,
        region=region,
        regions={name: RegionStatus() for name in regions},
        source_id=source,
        updated_at=job.created_at,
    )


def _check_job_fits(definition: DefinitionSpec, os_type: OsType, hyper_v_generation: str) -> None:
    """A version boots as its definition says: the job must be of the same OS and generation."""
    if definition.os_type is not os_type:
        raise InvalidInput(
            f"Image definition {definition.name!r} is for {definition.os_type.value}, and this"
            f" job is {os_type.value}; submit it with --os-type {definition.os_type.value}."
        )
    if definition.hyper_v_generation != hyper_v_generation:
        raise InvalidInput(
            f"Image definition {definition.name!r} is Hyper-V generation"
            f" {definition.hyper_v_generation}, and this job is {hyper_v_generation}; submit it"
            f" with --hyper-v-generation {definition.hyper_v_generation}."
        )


async def _check_definition(service: GalleryService, expected: DefinitionSpec) -> None:
    """Definition properties are immutable in Azure: a mismatch is the user's to resolve."""
    try:
        existing = await service.get_definition(expected.gallery, expected.name)
    except NotFound:
        return  # made by the worker, as the config says
    differences = expected.differences(existing)
    if differences:
        raise InvalidInput(
            f"Image definition {expected.name!r} in gallery {expected.gallery.name!r} differs"
            f" from [gallery.definitions.{expected.name}] in {'; '.join(differences)} (ours !="
            " the gallery's), and Azure cannot change these; make the config match the gallery,"
            " or publish under another image name."
        )


async def _version_names(service: GalleryService, definition: DefinitionSpec) -> list[str]:
    try:
        versions = await service.list_versions(definition.gallery, definition.name)
    except NotFound:
        return []
    return [v.name for v in versions]


def _gallery(config: Config) -> GallerySpec:
    if config.gallery is None:
        raise InvalidInput(
            "The config has no [gallery] table; add one (a name, and a definition per image"
            " name) to publish to a Compute Gallery."
        )
    return config.gallery


def _service(ctx: EngineContext) -> GalleryService:
    if ctx.backend.gallery is None:
        raise InvalidInput(
            f"The {ctx.config.backend} backend cannot publish to a Compute Gallery yet; publish"
            " with --target images, or try the gallery on the local backend."
        )
    return ctx.backend.gallery


def retried_publication(
    row: PublicationRow, wanted: list[str], *, failed_only: bool
) -> PublicationRow | None:
    """The row put back to work by a retry, or None if nothing in it is to redo.

    A version whose creation failed is made again; a version made is never remade: its failed
    regions are replicated again, and (unless ``failed_only``) the ``wanted`` regions it lacks
    (the fleet gained them since) are added to it.
    """
    made = any(r.state != "pending" for r in row.regions.values())
    if row.state is PublicationState.FAILED and not made:
        return dataclasses.replace(
            row,
            state=PublicationState.PENDING,
            regions={name: RegionStatus() for name in row.regions},
            error="",
            lease_owner=None,
            lease_until=0.0,
        )
    regions = {
        name: RegionStatus() if status.state == "failed" else status
        for name, status in row.regions.items()
    }
    if not failed_only:
        regions.update({name: RegionStatus() for name in wanted if name not in regions})
    if regions == row.regions:
        return None
    return dataclasses.replace(
        row,
        state=PublicationState.REPLICATING,
        regions=regions,
        error="",
        lease_owner=None,
        lease_until=0.0,
    )


def wanted_regions(config: Config, row: PublicationRow, enabled: dict[str, bool]) -> list[str]:
    """The regions the row's version should reach now: the enabled fleet's (the central one,
    shared), its subscription's (a per-subscription gallery), the gallery's own (the central one
    that per-subscription galleries copy from)."""
    gallery = _gallery(config)
    fleet = [t for t in config.fleet_targets() if enabled.get(t.name, True)]
    if row.key != CENTRAL:
        mine = [t.region for t in fleet if t.subscription == row.key]
        return list(dict.fromkeys([row.region, *mine]))
    if gallery.share == "per-subscription":
        return [row.region]
    return list(dict.fromkeys([row.region, *(t.region for t in fleet)]))
