"""Managed images through azure-mgmt-compute and resource groups through azure-mgmt-resource."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.compute import models
from azure.mgmt.compute.aio import ComputeManagementClient

# The SDK's own request builders: the URL and API version its operations would send.
from azure.mgmt.compute.operations._operations import (
    build_images_get_request,
    build_images_list_by_resource_group_request,
)
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.resource.resources import models as resource_models
from azure.mgmt.resource.resources.aio import ResourceManagementClient

from ..._domain import BlobRef, OsType, SecretUrl
from ..._domain.names import parse_disk_id
from ..._exceptions import NotFound, OperationFailed
from ...abc import Image, ImageService, ImageSpec, ProvisioningState
from .arm import ARM_SCOPE, ArmClients
from .errors import redact, translate_errors

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.polling import AsyncLROPoller

__all__ = ["AzureImageService"]

Json = dict[str, Any]

#: Looks at images of one resource group asked within this many seconds share one listing.
LOOK_WINDOW_SECONDS = 0.05


class AzureImageService(ImageService):
    """:param arm_scope: the token scope of the ARM endpoint's cloud.
    :param blob_url: the URL of a blob *without* any SAS, as Azure wants it in ``blobUri``.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        arm_endpoint: str,
        arm_scope: str = ARM_SCOPE,
        blob_url: Callable[[BlobRef], str],
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._arm = ArmClients(
            credential, endpoint=arm_endpoint, scope=arm_scope, client_kwargs=client_kwargs
        )
        self._blob_url = blob_url
        self._groups: set[tuple[str, str]] = set()
        self._ensuring: dict[tuple[str, str], asyncio.Future[None]] = {}
        # In-flight creations of this process, so a failure can report Azure's code and message.
        self._pollers: dict[tuple[str, str, str], AsyncLROPoller[Any]] = {}
        # Looks waiting for their resource group's next listing: (subscription, group) ->
        # lower-case image name -> the futures of the callers asking for it.
        self._looks: dict[tuple[str, str], dict[str, list[asyncio.Future[Image]]]] = {}
        self._listers: set[asyncio.Task[None]] = set()

    def _compute_client(self, subscription: str) -> ComputeManagementClient:
        return self._arm.get(ComputeManagementClient, subscription)

    def _resource_client(self, subscription: str) -> ResourceManagementClient:
        return self._arm.get(ResourceManagementClient, subscription)

    async def aclose(self) -> None:
        await self._arm.aclose()

    async def ensure_resource_group(self, subscription: str, name: str, region: str) -> None:
        key = (subscription.lower(), name.lower())
        if key in self._groups:
            return  # ARM writes are throttled per subscription: never repeat one
        # The images of a group start together: one look at the group answers them all (each
        # caller gets its outcome, error included; a failed look is tried again next time).
        ensuring = self._ensuring.get(key)
        if ensuring is None:
            ensuring = asyncio.ensure_future(self._ensure_group(subscription, name, region))
            self._ensuring[key] = ensuring
            ensuring.add_done_callback(lambda done: self._ensured(key, done))
        await asyncio.shield(ensuring)

    async def _ensure_group(self, subscription: str, name: str, region: str) -> None:
        client = self._resource_client(subscription)
        with translate_errors(f"ensure resource group {name!r}"):
            if not await client.resource_groups.check_existence(name):
                await client.resource_groups.create_or_update(
                    name, resource_models.ResourceGroup(location=region)
                )

    def _ensured(self, key: tuple[str, str], done: asyncio.Future[None]) -> None:
        del self._ensuring[key]
        if not done.cancelled() and done.exception() is None:
            self._groups.add(key)

    async def begin_create_image(self, spec: ImageSpec) -> None:
        # The body as ARM's JSON (the SDK takes it as it takes its model): building the SDK's
        # model of it cost more CPU than sending the request.
        body: Json = {
            "location": spec.region,
            "tags": dict(spec.tags),
            "properties": {
                "hyperVGeneration": spec.hyper_v_generation,
                "storageProfile": {
                    "osDisk": {
                        "osType": "Windows" if spec.os_type is OsType.WINDOWS else "Linux",
                        "osState": "Generalized",
                        "blobUri": self._blob_url(spec.source_blob),
                        "caching": "ReadWrite",
                    }
                },
            },
        }
        client = self._compute_client(spec.subscription)
        with translate_errors(f"create image {spec.name!r}"):
            # (typed as the SDK's TypedDict of an image in some versions, as JSON in others)
            poller = await client.images.begin_create_or_update(
                spec.resource_group, spec.name, cast(Any, body)
            )
        self._pollers[(spec.subscription, spec.resource_group.lower(), spec.name.lower())] = poller

    async def get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        """One image; looks at several images of one resource group asked together (within
        LOOK_WINDOW_SECONDS) are answered by one listing of the group, sent after the last of
        them was asked: as fresh as a GET each, at one request (ARM reads are throttled per
        subscription)."""
        group = (subscription, resource_group)
        waiting = self._looks.get(group)
        if waiting is None:
            waiting = self._looks[group] = {}
            lister = asyncio.get_running_loop().create_task(self._answer_looks(group))
            self._listers.add(lister)
            lister.add_done_callback(self._listers.discard)
        answer: asyncio.Future[Image] = asyncio.get_running_loop().create_future()
        waiting.setdefault(name.lower(), []).append(answer)
        return await answer

    async def _answer_looks(self, group: tuple[str, str]) -> None:
        subscription, resource_group = group
        asked: dict[str, list[asyncio.Future[Image]]] = {}
        try:
            await asyncio.sleep(LOOK_WINDOW_SECONDS)
            asked = self._looks.pop(group, {})
            if len(asked) == 1:
                (name,) = asked
                image: Image | BaseException = await self._get_one(
                    subscription, resource_group, name
                )
                _settle(asked[name], image)
                return
            found = await self._list_named(subscription, resource_group, asked)
            for name, answers in asked.items():
                image = found.get(name) or await self._missing(subscription, resource_group, name)
                _settle(answers, image)
        except BaseException as exc:
            for answers in (asked or self._looks.pop(group, {})).values():
                _settle(answers, exc if isinstance(exc, Exception) else OperationFailed(str(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _list_named(
        self, subscription: str, resource_group: str, names: Iterable[str]
    ) -> dict[str, Image]:
        """The images named (lower-case) that the group holds; the others are not made."""
        try:
            listed = await self._list_raw(subscription, resource_group)
        except NotFound:
            return {}  # no resource group, no image
        found = {}
        for name in names:
            key = (resource_group.lower(), name)
            if key in listed:
                image = listed[key]
                found[name] = await self._to_image(
                    subscription, resource_group, image, (subscription, *key)
                )
        return found

    async def _missing(self, subscription: str, resource_group: str, name: str) -> Image | NotFound:
        """What a GET of an image the listing did not hold answers: its failed creation of this
        process, or NotFound."""
        failed = await self._failure_of((subscription, resource_group.lower(), name.lower()))
        if failed is None:
            return NotFound(f"get image {name!r} failed: the image does not exist")
        return self._missing_failed(subscription, resource_group, name, *failed)

    async def _get_one(
        self, subscription: str, resource_group: str, name: str
    ) -> Image | BaseException:
        try:
            return await self._get_image(subscription, resource_group, name)
        except Exception as exc:
            return exc

    async def _get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        key = (subscription, resource_group.lower(), name.lower())
        request = build_images_get_request(
            resource_group_name=resource_group, image_name=name, subscription_id=subscription
        )
        try:
            image = await self._read(subscription, request, f"get image {name!r}")
        except NotFound:
            failed = await self._failure_of(key)
            if failed is None:
                raise
            code, message = failed
            return self._missing_failed(subscription, resource_group, name, code, message)
        return await self._to_image(subscription, resource_group, image, key)

    async def _read(self, subscription: str, request: HttpRequest, operation: str) -> Json:
        """The JSON body ARM answers a GET with, through the SDK client's pipeline (its
        credential, retries and API version), read as JSON: the SDK's models cost several times
        the request's own CPU per image, and looks read a handful of fields."""
        client = self._compute_client(subscription)
        with translate_errors(operation):
            response = await client.send_request(request)
            if response.status_code != 200:
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = response.json()
        if not isinstance(body, dict):
            raise OperationFailed(f"{operation} failed: ARM answered a body that is no object")
        return body

    async def _to_image(
        self, subscription: str, resource_group: str, image: Json, key: tuple[str, str, str]
    ) -> Image:
        properties = _object(image.get("properties"))
        provisioning = properties.get("provisioningState")
        state = ProvisioningState.parse(provisioning)
        code = message = ""
        if state is ProvisioningState.FAILED:
            code, message = await self._failure_of(key) or ("Failed", "image creation failed")
        elif state is ProvisioningState.CANCELED:
            code, message = await self._failure_of(key) or ("Canceled", "image creation canceled")
        elif state is ProvisioningState.UNKNOWN:
            # Say what Azure said: the engine's reason for giving up on it quotes this.
            code, message = "UnknownState", str(provisioning or "")
        os_disk = _object(_object(properties.get("storageProfile")).get("osDisk"))
        return Image(
            subscription=subscription,
            resource_group=resource_group,
            name=str(image.get("name") or ""),
            region=str(image.get("location") or ""),
            source_blob=_blob_ref(str(os_disk.get("blobUri") or "")),
            os_type=OsType.WINDOWS
            if str(os_disk.get("osType") or "").lower() == "windows"
            else OsType.LINUX,
            provisioning_state=state,
            error_code=code,
            error_message=message,
            tags={str(k): str(v) for k, v in _object(image.get("tags")).items()},
            hyper_v_generation=str(properties.get("hyperVGeneration") or "V1"),
        )

    async def _failure_of(self, key: tuple[str, str, str]) -> tuple[str, str] | None:
        """Azure's error code and message for a creation this process started, if it failed."""
        poller = self._pollers.get(key)
        if poller is None:
            return None
        try:
            await poller.result()  # the SDK polls the Azure-AsyncOperation URL to its end
        except HttpResponseError as exc:
            self._pollers.pop(key, None)
            if exc.status_code == 404:
                return None  # the operation ended; its image was deleted since (not a failure)
            code = (exc.error.code if exc.error else None) or str(exc.status_code)
            return code, redact(exc.message)
        self._pollers.pop(key, None)
        return None

    def _missing_failed(
        self, subscription: str, resource_group: str, name: str, code: str, message: str
    ) -> Image:
        return Image(
            subscription=subscription,
            resource_group=resource_group,
            name=name,
            region="",
            source_blob=BlobRef("", "", ""),
            os_type=OsType.LINUX,
            provisioning_state=ProvisioningState.FAILED,
            error_code=code,
            error_message=message,
        )

    async def delete_image(self, subscription: str, resource_group: str, name: str) -> bool:
        client = self._compute_client(subscription)
        self._pollers.pop((subscription, resource_group.lower(), name.lower()), None)
        try:
            with translate_errors(f"delete image {name!r}"):
                await client.images.get(resource_group, name)
                poller = await client.images.begin_delete(resource_group, name)
                await poller.result()
        except NotFound:
            return False
        return True

    # -- managed disks ----------------------------------------------------------------------------
    # Every call passes ``logging_enable=False``: with the SDK's network trace on (a client-wide
    # ``logging_enable=True``), azure-core logs whole response bodies, and a grant's body (the
    # result of its long-running operation, polled with the same options) is the access SAS.

    async def disk_size(self, disk_id: str) -> int:
        subscription, resource_group, name = parse_disk_id(disk_id)
        client = self._compute_client(subscription)
        with translate_errors(f"get managed disk {name!r} in {resource_group!r}"):
            disk = await client.disks.get(resource_group, name, logging_enable=False)
        size = disk.properties.disk_size_bytes if disk.properties else None
        if size is None:
            raise OperationFailed(
                f"managed disk {name!r} in {resource_group!r} reports no size in bytes",
                code="DiskSizeUnknown",
            )
        return int(size)

    async def grant_disk_read(self, disk_id: str, seconds: int) -> SecretUrl:
        subscription, resource_group, name = parse_disk_id(disk_id)
        if seconds <= 0:
            raise ValueError(
                f"access must be granted for a positive number of seconds, not {seconds}"
            )
        client = self._compute_client(subscription)
        body = models.GrantAccessData(access="Read", duration_in_seconds=seconds)
        with translate_errors(f"grant read access to managed disk {name!r} in {resource_group!r}"):
            poller = await client.disks.begin_grant_access(
                resource_group, name, body, logging_enable=False
            )
            result = await poller.result()
        sas = result.access_sas if result is not None else None
        if not sas:
            raise OperationFailed(
                f"grant read access to managed disk {name!r} in {resource_group!r} returned no "
                "access URL",
                code="NoAccessSAS",
            )
        return SecretUrl(sas)

    async def revoke_disk_read(self, disk_id: str) -> None:
        subscription, resource_group, name = parse_disk_id(disk_id)
        client = self._compute_client(subscription)
        try:
            with translate_errors(f"revoke access to managed disk {name!r} in {resource_group!r}"):
                poller = await client.disks.begin_revoke_access(
                    resource_group, name, logging_enable=False
                )
                await poller.result()
        except NotFound:
            return  # no disk, no access URL to revoke

    async def list_images(self, subscription: str, resource_group: str) -> list[Image]:
        images = [
            await self._to_image(subscription, resource_group, image, (subscription, *key))
            for key, image in (await self._list_raw(subscription, resource_group)).items()
        ]
        return sorted(images, key=lambda image: image.name)

    async def _list_raw(
        self, subscription: str, resource_group: str
    ) -> dict[tuple[str, str], Json]:
        """Every image of the group as ARM describes it, by lower-case (group, name), page by
        page (``nextLink``)."""
        operation = f"list images in {resource_group!r}"
        request = build_images_list_by_resource_group_request(
            resource_group_name=resource_group, subscription_id=subscription
        )
        images: dict[tuple[str, str], Json] = {}
        while True:
            page = await self._read(subscription, request, operation)
            for item in page.get("value") or []:
                image = _object(item)
                images[(resource_group.lower(), str(image.get("name") or "").lower())] = image
            next_link = page.get("nextLink")
            if not next_link:
                return images
            request = HttpRequest("GET", str(next_link), headers={"Accept": "application/json"})


def _settle(answers: list[asyncio.Future[Image]], outcome: Image | BaseException) -> None:
    for answer in answers:
        if answer.done():
            continue
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


def _blob_ref(uri: str) -> BlobRef:
    """``https://acct.blob.core.windows.net/c/a/b.vhd`` or ``http://127.0.0.1:10000/acct/c/b.vhd``."""
    scheme_host, _, path = uri.partition("://")[2].partition("/")
    parts = path.split("?")[0].split("/")
    if scheme_host.split(":")[0].replace(".", "").isdigit() or scheme_host.startswith("localhost"):
        account, parts = parts[0], parts[1:]  # path-style (emulator) URL
    else:
        account = scheme_host.split(".")[0]
    return BlobRef(account, parts[0] if parts else "", unquote("/".join(parts[1:])))


def _object(value: object) -> Json:
    """``value`` if it is a JSON object, else an empty one (a field ARM left out or null)."""
    return value if isinstance(value, dict) else {}
