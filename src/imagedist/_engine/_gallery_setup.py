"""`setup` and `check` for the Compute Gallery (issue 11): the galleries, the image definitions the
config states in full, and the central gallery's sharing: in ``rbac`` mode the Reader role on it for
each principal of ``[gallery] readers``, in ``direct`` mode its sharing profile. Teardown leaves
galleries: they hold the versions VMs are made from."""

from __future__ import annotations

import dataclasses

from .._config import Config
from .._domain import OsType
from .._domain.changes import ChangeAction, ChangeKind, ResourceRole
from .._domain.gallery import DefinitionSpec, GalleryRef
from .._exceptions import NotFound
from ..abc import GalleryService, Provisioner
from ._changes import Change
from ._context import EngineContext
from ._publish import central_gallery, definition_spec

__all__ = ["apply_gallery_change", "check_galleries", "plan_galleries"]


def _galleries(config: Config) -> list[GalleryRef]:
    """The central gallery, and in per-subscription mode one in each fleet subscription."""
    assert config.gallery is not None
    galleries = [central_gallery(config)]
    if config.gallery.share == "per-subscription":
        subscriptions = dict.fromkeys(t.subscription for t in config.fleet_targets())
        galleries += [
            GalleryRef(sub, config.gallery.resource_group, config.gallery.name)
            for sub in subscriptions
        ]
    return galleries


def _definitions(config: Config, gallery: GalleryRef) -> list[DefinitionSpec]:
    """The definitions the config states in full (OS type and generation): setup makes them;
    the others are made by the first job that publishes them."""
    assert config.gallery is not None
    specs = []
    for name, spec in config.gallery.definitions.items():
        if spec.os_type is None or spec.hyper_v_generation is None:
            continue
        definition = definition_spec(config, name, OsType(spec.os_type), spec.hyper_v_generation)
        specs.append(_in(definition, gallery))
    return specs


def _in(spec: DefinitionSpec, gallery: GalleryRef) -> DefinitionSpec:
    return dataclasses.replace(spec, gallery=gallery)


def gallery_scope(gallery: GalleryRef) -> str:
    """The gallery's ARM id: the scope its readers' role assignments are made at."""
    return (
        f"/subscriptions/{gallery.subscription}/resourceGroups/{gallery.resource_group}"
        f"/providers/Microsoft.Compute/galleries/{gallery.name}"
    )


async def _readers_missing(
    config: Config, prov: Provisioner, gallery: GalleryRef
) -> list[tuple[str, str]]:
    """(subscription, principal) of each of ``[gallery] readers`` not yet Reader on the gallery
    (``rbac`` mode; every one of them when the gallery is to be made)."""
    assert config.gallery is not None
    if config.gallery.share != "rbac":
        return []
    scope = gallery_scope(gallery)
    return [
        (subscription, principal)
        for subscription, principal in config.gallery.readers.items()
        if not await prov.has_role_at(scope, principal, ResourceRole.READER)
    ]


def _sharing_wanted(config: Config) -> tuple[list[str], list[str]]:
    assert config.gallery is not None
    subscriptions = list(dict.fromkeys(t.subscription for t in config.fleet_targets()))
    return subscriptions, list(config.gallery.tenants)


async def plan_galleries(ctx: EngineContext) -> list[Change]:
    """What setup would do for the galleries."""
    config, service = ctx.config, ctx.backend.gallery
    if config.gallery is None or service is None:
        return []
    region = config.gallery.region_or(config.staging.region)
    changes: list[Change] = []
    for gallery in _galleries(config):
        exists = await _exists(service, gallery)
        if not exists:
            changes.append(
                Change(
                    ChangeAction.CREATE,
                    ChangeKind.GALLERY,
                    gallery.subscription,
                    gallery.name,
                    gallery.resource_group,
                    region,
                )
            )
        for spec in _definitions(config, gallery):
            if not exists or not await _definition_exists(service, spec):
                changes.append(
                    Change(
                        ChangeAction.CREATE,
                        ChangeKind.IMAGE_DEFINITION,
                        gallery.subscription,
                        spec.name,
                        gallery.resource_group,
                        region,
                        account=gallery.name,
                    )
                )
    central = central_gallery(config)
    exists = await _exists(service, central)
    readers: list[tuple[str, str]] = []
    if config.gallery.share == "rbac":  # a gallery still to make has no role assignments yet
        readers = (
            await _readers_missing(config, ctx.backend.provisioner, central)
            if exists
            else list(config.gallery.readers.items())
        )
    for _subscription, principal in readers:
        changes.append(
            Change(
                ChangeAction.GRANT,
                ChangeKind.GALLERY,
                central.subscription,
                central.name,
                central.resource_group,
                region,
                principal=principal,
            )
        )
    if config.gallery.share == "direct":
        subscriptions, tenants = _sharing_wanted(config)
        shared = await _shared_with(service, central)
        if not {name.lower() for name in subscriptions + tenants} <= shared:
            changes.append(
                Change(
                    ChangeAction.SHARE,
                    ChangeKind.GALLERY,
                    central.subscription,
                    central.name,
                    central.resource_group,
                    region,
                )
            )
    return changes


async def apply_gallery_change(
    ctx: EngineContext,
    action: ChangeAction,
    kind: ChangeKind,
    subscription: str,
    name: str,
    *,
    principal: str = "",
) -> bool:
    """Carry out one gallery change; False if it is not a gallery change."""
    config, service = ctx.config, ctx.backend.gallery
    if config.gallery is None or service is None:
        return False
    region = config.gallery.region_or(config.staging.region)
    gallery = GalleryRef(subscription, config.gallery.resource_group, config.gallery.name)
    if (action, kind) == (ChangeAction.CREATE, ChangeKind.GALLERY):
        await service.ensure_gallery(gallery, region)
    elif (action, kind) == (ChangeAction.CREATE, ChangeKind.IMAGE_DEFINITION):
        [spec] = [s for s in _definitions(config, gallery) if s.name == name]
        await service.ensure_definition(spec)
    elif (action, kind) == (ChangeAction.SHARE, ChangeKind.GALLERY):
        await service.share(gallery, *_sharing_wanted(config))
    elif (action, kind) == (ChangeAction.GRANT, ChangeKind.GALLERY):
        await ctx.backend.provisioner.grant_role_at(
            gallery_scope(gallery), principal, ResourceRole.READER
        )
    else:
        return False
    return True


async def check_galleries(ctx: EngineContext) -> list[tuple[str, str]]:
    """(subject, problem) for each gallery, definition or sharing that does not match the
    config. A definition's immutable properties are reported with the fix, not papered over."""
    config, service = ctx.config, ctx.backend.gallery
    if config.gallery is None or service is None:
        return []
    problems: list[tuple[str, str]] = []
    for gallery in _galleries(config):
        subject = f"gallery {gallery}"
        if not await _exists(service, gallery):
            problems.append((subject, "the gallery is missing; run `imagedist setup`"))
            continue
        for name, spec in config.gallery.definitions.items():
            try:
                found = await service.get_definition(gallery, name)
            except NotFound:
                continue  # made by setup or by the first job that publishes it
            os_type = OsType(spec.os_type) if spec.os_type else found.os_type
            generation = spec.hyper_v_generation or found.hyper_v_generation
            wanted = _in(definition_spec(config, name, os_type, generation), gallery)
            differences = wanted.differences(found)
            if differences:
                problems.append(
                    (
                        f"definition {name} in {subject}",
                        f"differs from the config in {'; '.join(differences)} (config !="
                        " gallery) and Azure cannot change it: make [gallery.definitions."
                        f"{name}] match, or publish under another image name",
                    )
                )
    central = central_gallery(config)
    if await _exists(service, central):
        for subscription, principal in await _readers_missing(
            config, ctx.backend.provisioner, central
        ):
            problems.append(
                (
                    f"gallery {central}",
                    f"does not grant Reader to principal {principal} ([gallery] readers of"
                    f" subscription {subscription}), so that subscription cannot use its images;"
                    " run `imagedist setup`",
                )
            )
    if config.gallery.share == "direct":
        subscriptions, tenants = _sharing_wanted(config)
        if await _exists(service, central):
            to_share = {name.lower() for name in subscriptions + tenants}
            missing = sorted(to_share - await _shared_with(service, central))
            if missing:
                problems.append(
                    (
                        f"gallery {central}",
                        f"is not shared with {', '.join(missing)}; run `imagedist setup`",
                    )
                )
    return problems


async def _exists(service: GalleryService, gallery: GalleryRef) -> bool:
    try:
        await service.get_sharing(gallery)
    except NotFound:
        return False
    return True


async def _definition_exists(service: GalleryService, spec: DefinitionSpec) -> bool:
    try:
        await service.get_definition(spec.gallery, spec.name)
    except NotFound:
        return False
    return True


async def _shared_with(service: GalleryService, gallery: GalleryRef) -> set[str]:
    try:
        sharing = await service.get_sharing(gallery)
    except NotFound:
        return set()
    return {name.lower() for name in (*sharing.subscriptions, *sharing.tenants)}
