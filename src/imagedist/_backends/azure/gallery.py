"""Azure Compute Gallery through azure-mgmt-compute: galleries, image definitions, image versions.

Bodies go to the SDK as ARM's JSON (the operations take it as well as their models) and come back
through ``as_dict()``, so the wire names in this module are the REST API's, and no SDK type leaves
it. A version's creation and a PATCH of its target regions are long-running: the port only starts
them; ``get_version`` reads where they stand (``$expand=ReplicationStatus``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import models
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.resource.resources.aio import ResourceManagementClient

from ..._domain import BlobRef, OsType
from ..._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    GallerySharing,
    ImageVersion,
    RegionReplication,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
)
from ..._domain.regions import region_name
from ..._exceptions import Conflict, NotFound
from ...abc import GalleryService
from .arm import ARM_SCOPE, ArmClients
from .errors import redact, translate_errors
from .images import _blob_ref

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.polling import AsyncLROPoller

__all__ = ["AzureGalleryService"]

Json = dict[str, Any]
VersionKey = tuple[str, str, str, str, str]

_STATES = {state.value.lower(): state for state in ReplicationState}


class AzureGalleryService(GalleryService):
    """:param arm_scope: the token scope of the ARM endpoint's cloud.
    :param blob_url: the URL of a blob *without* any SAS, as Azure wants it in a VHD source.
    :param account_id: the ARM id of a storage account, by name (a VHD source names both).
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        arm_endpoint: str,
        arm_scope: str = ARM_SCOPE,
        blob_url: Callable[[BlobRef], str],
        account_id: Callable[[str], str],
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._arm = ArmClients(
            credential, endpoint=arm_endpoint, scope=arm_scope, client_kwargs=client_kwargs
        )
        self._blob_url = blob_url
        self._account_id = account_id
        # The operations this process started on each version, so a failed one can report
        # Azure's error code and message (the resource itself only says Failed).
        self._pollers: dict[VersionKey, AsyncLROPoller[Any]] = {}

    def _client(self, subscription: str) -> ComputeManagementClient:
        return self._arm.get(ComputeManagementClient, subscription)

    def _resource_client(self, subscription: str) -> ResourceManagementClient:
        return self._arm.get(ResourceManagementClient, subscription)

    async def aclose(self) -> None:
        await self._arm.aclose()

    # -- galleries --------------------------------------------------------------------------------

    async def ensure_gallery(self, gallery: GalleryRef, region: str) -> None:
        existing = await self._get_gallery(gallery, missing_ok=True)
        if existing is not None:
            if region_name(str(existing.get("location", ""))) != region_name(region):
                raise Conflict(
                    f"gallery '{gallery}' exists in region '{existing.get('location')}', not"
                    f" '{region}': a gallery cannot move; give its region, or another gallery name"
                )
            return
        resources = self._resource_client(gallery.subscription)
        with translate_errors(f"ensure resource group {gallery.resource_group!r}"):
            if not await resources.resource_groups.check_existence(gallery.resource_group):
                await resources.resource_groups.create_or_update(
                    gallery.resource_group, {"location": region}
                )
        client = self._client(gallery.subscription)
        with translate_errors(f"create gallery '{gallery}'"):
            poller = await client.galleries.begin_create_or_update(
                gallery.resource_group, gallery.name, models.Gallery({"location": region})
            )
            await poller.result()

    async def _get_gallery(self, gallery: GalleryRef, *, missing_ok: bool = False) -> Json | None:
        client = self._client(gallery.subscription)
        try:
            with translate_errors(f"get gallery '{gallery}'"):
                found = await client.galleries.get(gallery.resource_group, gallery.name)
        except NotFound:
            if missing_ok:
                return None
            raise
        return dict(found.as_dict())

    async def share(
        self, gallery: GalleryRef, subscriptions: list[str], tenants: list[str]
    ) -> None:
        current = await self._get_gallery(gallery)
        assert current is not None
        client = self._client(gallery.subscription)
        profile = (current.get("properties") or {}).get("sharingProfile") or {}
        if profile.get("permissions") != "Groups":  # direct sharing needs the Groups permission
            body = {
                "location": current["location"],
                "tags": current.get("tags") or {},
                "properties": {"sharingProfile": {"permissions": "Groups"}},
            }
            with translate_errors(f"allow sharing of gallery '{gallery}' to groups"):
                poller = await client.galleries.begin_create_or_update(
                    gallery.resource_group, gallery.name, models.Gallery(body)
                )
                await poller.result()
        groups = [
            {"type": kind, "ids": ids}
            for kind, ids in (("Subscriptions", subscriptions), ("AADTenants", tenants))
            if ids
        ]
        if not groups:
            return
        with translate_errors(f"share gallery '{gallery}'"):
            sharing = await client.gallery_sharing_profile.begin_update(
                gallery.resource_group,
                gallery.name,
                models.SharingUpdate({"operationType": "Add", "groups": groups}),
            )
            await sharing.result()

    async def get_sharing(self, gallery: GalleryRef) -> GallerySharing:
        current = await self._get_gallery(gallery)
        assert current is not None
        profile = (current.get("properties") or {}).get("sharingProfile") or {}
        found: dict[str, set[str]] = {"subscriptions": set(), "aadtenants": set()}
        for group in profile.get("groups") or []:
            found.setdefault(str(group.get("type", "")).lower(), set()).update(
                str(i).lower() for i in group.get("ids") or []
            )
        return GallerySharing(
            tuple(sorted(found["subscriptions"])), tuple(sorted(found["aadtenants"]))
        )

    # -- image definitions ------------------------------------------------------------------------

    async def ensure_definition(self, spec: DefinitionSpec) -> None:
        try:
            existing = await self.get_definition(spec.gallery, spec.name)
        except NotFound:
            existing = None
        if existing is not None and (differences := existing.differences(spec)):
            raise Conflict(
                f"image definition '{spec.name}' of gallery '{spec.gallery}' exists with other"
                f" immutable properties ({'; '.join(differences)}); Azure cannot change them: use"
                " another definition name"
            )
        client = self._client(spec.gallery.subscription)
        with translate_errors(f"create image definition '{spec.name}' in '{spec.gallery}'"):
            poller = await client.gallery_images.begin_create_or_update(
                spec.gallery.resource_group,
                spec.gallery.name,
                spec.name,
                models.GalleryImage(_definition_body(spec)),
            )
            await poller.result()

    async def get_definition(self, gallery: GalleryRef, name: str) -> DefinitionSpec:
        client = self._client(gallery.subscription)
        with translate_errors(f"get image definition '{name}' in '{gallery}'"):
            found = await client.gallery_images.get(gallery.resource_group, gallery.name, name)
        return _definition(gallery, dict(found.as_dict()))

    # -- image versions ---------------------------------------------------------------------------

    async def begin_create_version(self, spec: VersionSpec) -> None:
        gallery = spec.gallery
        client = self._client(gallery.subscription)
        try:
            with translate_errors(f"create image version '{spec.name}' of '{spec.definition}'"):
                poller = await client.gallery_image_versions.begin_create_or_update(
                    gallery.resource_group,
                    gallery.name,
                    spec.definition,
                    spec.name,
                    models.GalleryImageVersion(self._version_body(spec)),
                )
        except Conflict:
            existing = await self.get_version(gallery, spec.definition, spec.name)
            raise Conflict(
                f"image version '{spec.name}' exists from source '{existing.source}', not"
                f" '{spec.source}'"
            ) from None
        self._pollers[_key(gallery, spec.definition, spec.name)] = poller

    async def get_version(self, gallery: GalleryRef, definition: str, name: str) -> ImageVersion:
        client = self._client(gallery.subscription)
        with translate_errors(f"get image version '{name}' of '{definition}'"):
            found = await client.gallery_image_versions.get(
                gallery.resource_group, gallery.name, definition, name, expand="ReplicationStatus"
            )
        version = _version(gallery, definition, dict(found.as_dict()))
        if version.provisioning_state != "Failed":
            return version
        failure = await self._failure_of(_key(gallery, definition, name))
        if failure is None:
            return version
        code, message = failure
        return _with_error(version, code, message)

    async def _failure_of(self, key: VersionKey) -> tuple[str, str] | None:
        """Azure's code and message of the failed operation this process started, if any."""
        poller = self._pollers.pop(key, None)
        if poller is None:
            return None
        try:
            await poller.result()  # the operation has ended: one poll reads how
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return None
            code = (exc.error.code if exc.error else None) or str(exc.status_code)
            return code, redact(str((exc.error.message if exc.error else None) or exc.message))
        return None

    async def list_versions(self, gallery: GalleryRef, definition: str) -> list[ImageVersion]:
        client = self._client(gallery.subscription)
        names = []
        with translate_errors(f"list image versions of '{definition}' in '{gallery}'"):
            async for item in client.gallery_image_versions.list_by_gallery_image(
                gallery.resource_group, gallery.name, definition
            ):
                names.append(str(item.name))
        versions = []
        for name in names:  # the list has no replication status: each is read with it
            try:
                versions.append(await self.get_version(gallery, definition, name))
            except NotFound:
                continue  # deleted meanwhile
        return versions

    async def update_version(
        self,
        gallery: GalleryRef,
        definition: str,
        name: str,
        *,
        target_regions: tuple[TargetRegion, ...] | None = None,
        exclude_from_latest: bool | None = None,
        end_of_life: str | None = None,
    ) -> None:
        publishing: Json = {}
        if target_regions is not None:
            publishing["targetRegions"] = [_target_body(t) for t in target_regions]
        if exclude_from_latest is not None:
            publishing["excludeFromLatest"] = exclude_from_latest
        if end_of_life is not None:
            publishing["endOfLifeDate"] = _date_body(end_of_life)
        client = self._client(gallery.subscription)
        with translate_errors(f"update image version '{name}' of '{definition}'"):
            poller = await client.gallery_image_versions.begin_update(
                gallery.resource_group,
                gallery.name,
                definition,
                name,
                models.GalleryImageVersionUpdate({"properties": {"publishingProfile": publishing}}),
            )
        self._pollers[_key(gallery, definition, name)] = poller

    async def delete_version(self, gallery: GalleryRef, definition: str, name: str) -> bool:
        client = self._client(gallery.subscription)
        self._pollers.pop(_key(gallery, definition, name), None)
        try:
            with translate_errors(f"delete image version '{name}' of '{definition}'"):
                await client.gallery_image_versions.get(
                    gallery.resource_group, gallery.name, definition, name
                )
                poller = await client.gallery_image_versions.begin_delete(
                    gallery.resource_group, gallery.name, definition, name
                )
                await poller.result()
        except NotFound:
            return False
        return True

    def _version_body(self, spec: VersionSpec) -> Json:
        publishing: Json = {
            "targetRegions": [_target_body(t) for t in spec.target_regions],
            "excludeFromLatest": spec.exclude_from_latest,
            "replicationMode": spec.replication_mode,
        }
        if spec.end_of_life:
            publishing["endOfLifeDate"] = _date_body(spec.end_of_life)
        blob = spec.source.blob
        if blob is not None:
            storage: Json = {
                "osDiskImage": {
                    "source": {
                        "uri": self._blob_url(blob),
                        "storageAccountId": self._account_id(blob.account),
                    }
                }
            }
        else:
            storage = {"source": {"id": spec.source.version_id}}
        return {
            "location": spec.region,
            "tags": dict(spec.tags),
            "properties": {"publishingProfile": publishing, "storageProfile": storage},
        }


# -- wire JSON <-> domain values ---------------------------------------------------------------------


def _key(gallery: GalleryRef, definition: str, name: str) -> VersionKey:
    return (
        gallery.subscription.lower(),
        gallery.resource_group.lower(),
        gallery.name.lower(),
        definition.lower(),
        name.lower(),
    )


def _date_body(value: str) -> str:
    """An ISO date (``2030-01-01``) as the date-time ARM wants."""
    return f"{value}T00:00:00+00:00" if len(value) == 10 else value


def _date(value: Any) -> str:
    """ARM's date-time back to the ISO date the config states (``""`` for none)."""
    if not value:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[:10]


def _definition_body(spec: DefinitionSpec) -> Json:
    props: Json = {
        "osType": "Windows" if spec.os_type is OsType.WINDOWS else "Linux",
        "osState": spec.os_state,
        "hyperVGeneration": spec.hyper_v_generation,
        "architecture": spec.architecture,
        "identifier": {"publisher": spec.publisher, "offer": spec.offer, "sku": spec.sku},
        "description": spec.description,
    }
    if spec.security_type:
        props["features"] = [{"name": "SecurityType", "value": spec.security_type}]
    if spec.end_of_life:
        props["endOfLifeDate"] = _date_body(spec.end_of_life)
    return {"location": spec.region, "tags": dict(spec.tags), "properties": props}


def _definition(gallery: GalleryRef, body: Json) -> DefinitionSpec:
    props = body.get("properties") or {}
    identifier = props.get("identifier") or {}
    security = next(
        (
            str(f.get("value") or "")
            for f in props.get("features") or []
            if str(f.get("name", "")).lower() == "securitytype"
        ),
        "",
    )
    return DefinitionSpec(
        gallery=gallery,
        name=str(body.get("name", "")),
        region=region_name(str(body.get("location", ""))),
        os_type=OsType.WINDOWS if str(props.get("osType")).lower() == "windows" else OsType.LINUX,
        publisher=str(identifier.get("publisher", "")),
        offer=str(identifier.get("offer", "")),
        sku=str(identifier.get("sku", "")),
        os_state=str(props.get("osState") or "Generalized"),
        hyper_v_generation=str(props.get("hyperVGeneration") or "V1"),
        security_type=security,
        architecture=str(props.get("architecture") or "x64"),
        description=str(props.get("description") or ""),
        end_of_life=_date(props.get("endOfLifeDate")),
        tags=dict(body.get("tags") or {}),
    )


def _target_body(target: TargetRegion) -> Json:
    return {
        "name": target.name,
        "regionalReplicaCount": target.replicas,
        "storageAccountType": target.storage_account_type,
        "excludeFromLatest": target.exclude_from_latest,
    }


def _target(body: Json) -> TargetRegion:
    return TargetRegion(
        name=region_name(str(body.get("name", ""))),
        replicas=int(body.get("regionalReplicaCount") or 1),
        storage_account_type=str(body.get("storageAccountType") or "Standard_LRS"),
        exclude_from_latest=bool(body.get("excludeFromLatest") or False),
    )


def _source(storage: Json) -> VersionSource:
    disk = (storage.get("osDiskImage") or {}).get("source") or {}
    if disk.get("uri"):
        return VersionSource(blob=_blob_ref(str(disk["uri"])))
    return VersionSource(version_id=str((storage.get("source") or {}).get("id") or ""))


def _replication(status: Json) -> tuple[RegionReplication, ...]:
    return tuple(
        RegionReplication(
            region=region_name(str(item.get("region", ""))),
            state=_STATES.get(str(item.get("state", "")).lower(), ReplicationState.UNKNOWN),
            progress=int(item.get("progress") or 0),
            details=redact(str(item.get("details") or "")),
        )
        for item in status.get("summary") or []
    )


def _published_at(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if not value:
        return 0.0
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _version(gallery: GalleryRef, definition: str, body: Json) -> ImageVersion:
    props = body.get("properties") or {}
    publishing = props.get("publishingProfile") or {}
    replication = _replication(props.get("replicationStatus") or {})
    state = str(props.get("provisioningState") or "Creating")
    failed = [r.details for r in replication if r.state is ReplicationState.FAILED]
    return ImageVersion(
        gallery=gallery,
        definition=definition,
        name=str(body.get("name", "")),
        region=region_name(str(body.get("location", ""))),
        provisioning_state=state,
        source=_source(props.get("storageProfile") or {}),
        target_regions=tuple(_target(t) for t in publishing.get("targetRegions") or []),
        replication=replication,
        exclude_from_latest=bool(publishing.get("excludeFromLatest") or False),
        end_of_life=_date(publishing.get("endOfLifeDate")),
        published_at=_published_at(publishing.get("publishedDate")),
        tags=dict(body.get("tags") or {}),
        # What the resource says of a failure; the operation's own error replaces it when this
        # process started the operation (see ``_failure_of``).
        error_code="ReplicationFailed" if state == "Failed" else "",
        error_message=" ".join(dict.fromkeys(failed)) if state == "Failed" else "",
        id=str(body.get("id", "")),
    )


def _with_error(version: ImageVersion, code: str, message: str) -> ImageVersion:
    from dataclasses import replace

    return replace(version, error_code=code, error_message=message)
