"""Azure Compute Gallery in the ARM test server: galleries, image definitions, image versions.

Wire shapes follow ``Microsoft.Compute/galleries`` (GalleryRP) as the ``azure-mgmt-compute``
clients send and read them:

* galleries: ``PUT/GET/DELETE .../galleries/{g}`` with ``properties.sharingProfile.permissions``
  (``Private`` or ``Groups``); ``POST .../galleries/{g}/share`` with ``operationType`` Add, Remove
  or Reset and ``groups`` of type ``Subscriptions`` or ``AADTenants`` (202 and an operation);
* image definitions: ``PUT/GET/DELETE .../images/{i}``; a PUT that changes what Azure cannot change
  (osType, osState, hyperVGeneration, identifier publisher/offer/sku, the SecurityType feature,
  architecture) is refused with 409 ``PropertyChangeNotAllowed``, as Azure does;
* image versions: ``PUT`` (201 and ``Azure-AsyncOperation``: a long-running creation), ``GET``
  (``$expand=ReplicationStatus`` adds ``replicationStatus``), ``PATCH`` of ``targetRegions``,
  ``excludeFromLatest`` and ``endOfLifeDate``, ``DELETE``, and the list, paged by ``nextLink``.

What Azure refuses at once (400 ``InvalidParameter``): a version name that is not
``MAJOR.MINOR.PATCH`` of 32-bit integers; a version outside its gallery's location; target regions
without the version's own region; a VHD whose storage account is not in the gallery's subscription
and the version's region. What the creation finds when it reads its source fails the version (and
its operation) with ``InvalidParameter``: a blob that does not exist, is not a page blob of whole
MiB plus a 512-byte fixed VHD footer, or has a copy pending into it; a source version that does not
exist, has not succeeded or has no replica in the new version's region.

Each target region replicates for ``replication_seconds`` of the model's clock, which is real time
plus what tests added with ``/_test/gallery/advance``; replications to a region in
``fail_regions`` end ``Failed``. Test endpoints (no token), under ``/_test/gallery``:

* ``GET  /_test/gallery``                 creations per version id, galleries, faults
* ``POST /_test/gallery/config``          ``{"replication_seconds"?: s, "fail_regions"?: [...]}``
* ``POST /_test/gallery/advance``         ``{"seconds": s}``: move the model's clock on
* ``POST /_test/gallery/storage``         ``{"account", "connection_string"}``: how to read the
  account's blobs (Azurite), as Azure's creation would
* ``POST /_test/gallery/pending_copies``  ``{"account", "container", "name"}``: the blob reads as
  having a copy pending into it (Azurite finishes copies at once)
"""

from __future__ import annotations

import collections
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from imagedist._domain.regions import REGIONS

if TYPE_CHECKING:
    from .control import Control
    from .server import ArmState, Request, Response

Json = dict[str, Any]
Key = tuple[str, ...]

DEFAULT_REPLICATION_SECONDS = 0.5
PAGE_SIZE = 2  # versions per page of a list: small, so that clients follow nextLink
INVALID = "InvalidParameter"
MIB = 1024 * 1024
FOOTER = 512
MAX_PART = 2**31 - 1
VERSION_NAME = re.compile(r"^(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})$")
GALLERY_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._]{0,78}[A-Za-z0-9])?$")
ACCOUNT_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Storage/"
    r"storageAccounts/([^/]+)$",
    re.IGNORECASE,
)
VERSION_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/galleries/"
    r"([^/]+)/images/([^/]+)/versions/([^/]+)$",
    re.IGNORECASE,
)
#: Definition properties Azure cannot change, as (wire path, what its error calls it).
IMMUTABLE = (
    (("osType",), "galleryImage.properties.osType"),
    (("osState",), "galleryImage.properties.osState"),
    (("hyperVGeneration",), "galleryImage.properties.hyperVGeneration"),
    (("identifier", "publisher"), "galleryImage.properties.identifier.publisher"),
    (("identifier", "offer"), "galleryImage.properties.identifier.offer"),
    (("identifier", "sku"), "galleryImage.properties.identifier.sku"),
    (("architecture",), "galleryImage.properties.architecture"),
)


def norm(region: str) -> str:
    return region.replace(" ", "").lower()


def display(region: str) -> str:
    """What ARM lists a region as ("West Europe"); a capitalised name stands in for it."""
    return norm(region).capitalize()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _date(value: Any) -> str:
    """An endOfLifeDate as ARM echoes it: ``2030-01-01T00:00:00+00:00``."""
    text = str(value or "")
    if not text:
        return ""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"The value '{text}' of endOfLifeDate is not a valid date-time.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


class GalleryModel:
    """Galleries of the server's subscriptions; the server holds one and routes to it."""

    def __init__(
        self,
        owner: ArmState,
        respond: Callable[..., Response],
        error: type[Exception],
    ) -> None:
        self._owner = owner
        self._respond, self._error = respond, error
        self.replication_seconds = DEFAULT_REPLICATION_SECONDS
        self.fail_regions: set[str] = set()
        self.offset = 0.0
        self.storage: dict[str, str] = {}  # account (lower) -> connection string
        self.pending: set[tuple[str, str, str]] = set()
        self.galleries: dict[Key, Json] = {}
        self.images: dict[Key, Json] = {}
        self.versions: dict[Key, Json] = {}
        self.operations: dict[str, Json] = {}
        self.creations: collections.Counter[str] = collections.Counter()

    def now(self) -> float:
        return time.time() + self.offset

    def _fail(self, status: int, code: str, message: str) -> Exception:
        return self._error(status, code, message)

    # -------------------------------------------------------------- test endpoints

    def control(self, method: str, rest: list[str], body: Json) -> Response:
        what = "/".join(rest)
        if (method, what) == ("GET", ""):
            return self._respond(200, self._dump())
        if (method, what) == ("POST", "config"):
            if "replication_seconds" in body:
                self.replication_seconds = float(body["replication_seconds"])
            if "fail_regions" in body:
                self.fail_regions = {norm(r) for r in body["fail_regions"]}
            return self._respond(200, self._dump())
        if (method, what) == ("POST", "advance"):
            self.offset += max(0.0, float(body.get("seconds", 0.0)))
            return self._respond(200, {"offset": self.offset})
        if (method, what) == ("POST", "storage"):
            self.storage[str(body["account"]).lower()] = str(body["connection_string"])
            return self._respond(200, {"account": body["account"]})
        if (method, what) == ("POST", "pending_copies"):
            blob = (str(body["account"]).lower(), str(body["container"]), str(body["name"]))
            self.pending.add(blob)
            return self._respond(200, {"pending": list(blob)})
        raise self._fail(404, "ArmServerUnsupported", f"no test endpoint {method} gallery/{what}")

    def _dump(self) -> Json:
        return {
            "replication_seconds": self.replication_seconds,
            "fail_regions": sorted(self.fail_regions),
            "offset": self.offset,
            "creations": [{"id": k, "count": n} for k, n in sorted(self.creations.items())],
            "galleries": [self._gallery_json(g) for g in self.galleries.values()],
            "versions": [self._version_json(v, expand=True) for v in self.versions.values()],
        }

    # -------------------------------------------------------------- routing

    def route(self, req: Request, sub: str, rg: str, segs: list[str]) -> Response:
        """A request under ``.../resourceGroups/{rg}/providers/Microsoft.Compute/galleries``;
        ``segs`` is what follows ``galleries`` (original case)."""
        low = [s.lower() for s in segs]
        m = req.method
        if len(segs) == 1:
            return self._gallery(req, sub, rg, segs[0])
        if len(segs) == 2 and low[1] == "share" and m == "POST":
            return self._share(req, sub, rg, segs[0])
        if len(segs) == 3 and low[1] == "images":
            return self._image(req, sub, rg, segs[0], segs[2])
        if len(segs) == 4 and low[1] == "images" and low[3] == "versions" and m == "GET":
            return self._list_versions(req, sub, rg, segs[0], segs[2])
        if len(segs) == 5 and low[1] == "images" and low[3] == "versions":
            return self._version(req, sub, rg, segs[0], segs[2], segs[4])
        raise self._fail(
            404, "ArmServerUnsupported", f"The test ARM server does not implement {m} {req.path}"
        )

    def operation(self, op_id: str) -> Response:
        """``GET .../locations/{l}/capsOperations/{id}``: where a gallery operation stands."""
        op = self.operations.get(op_id)
        if op is None:
            raise self._fail(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        body: Json = {"name": op_id, "startTime": _iso(op["start"])}
        status, error = self._operation_status(op)
        body["status"] = status
        if error is not None:
            body["error"] = error
        return self._respond(200, body)

    def _operation_status(self, op: Json) -> tuple[str, Json | None]:
        if op["kind"] != "version":
            return "Succeeded", None
        version = self.versions.get(tuple(op["key"]))
        if version is None or version["operation"] != op["operation"]:
            return "Succeeded", None  # deleted or made again since: this one is over
        self._settle(version)
        if version["problem"]:
            return "Failed", {"code": INVALID, "message": version["problem"]}
        states = [r["state"] for r in version["regions"].values()]
        if "Replicating" in states:
            return "InProgress", None
        failed = [r["details"] for r in version["regions"].values() if r["state"] == "Failed"]
        if failed:
            return "Failed", {"code": "ReplicationFailed", "message": " ".join(failed)}
        return "Succeeded", None

    def _new_operation(self, req: Request, sub: str, location: str, **extra: Any) -> str:
        op_id = str(uuid.uuid4())
        self.operations[op_id] = {"start": self.now(), **extra}
        api = _api_version(req.query)
        return (
            f"{req.base_url}/subscriptions/{quote(sub)}/providers/Microsoft.Compute/locations/"
            f"{norm(location)}/capsOperations/{op_id}?api-version={api}"
        )

    # -------------------------------------------------------------- galleries

    def _gallery_key(self, sub: str, rg: str, name: str) -> Key:
        return (sub.lower(), rg.lower(), name.lower())

    def require_gallery(self, sub: str, rg: str, name: str) -> Json:
        self._owner._require_group(sub, rg)
        gallery = self.galleries.get(self._gallery_key(sub, rg, name))
        if gallery is None:
            raise self._not_found(f"Microsoft.Compute/galleries/{name}", rg)
        return gallery

    def _not_found(self, what: str, rg: str) -> Exception:
        return self._fail(
            404,
            "ResourceNotFound",
            f"The Resource '{what}' under resource group '{rg}' was not found. For more details"
            " please go to https://aka.ms/ARMResourceNotFoundFix",
        )

    @staticmethod
    def _gallery_id(g: Json) -> str:
        return (
            f"/subscriptions/{g['subscription']}/resourceGroups/{g['resource_group']}"
            f"/providers/Microsoft.Compute/galleries/{g['name']}"
        )

    def _gallery_json(self, g: Json) -> Json:
        groups = [
            {"type": kind, "ids": list(ids)}
            for kind, ids in (("Subscriptions", g["subscriptions"]), ("AADTenants", g["tenants"]))
            if ids
        ]
        return {
            "id": self._gallery_id(g),
            "name": g["name"],
            "type": "Microsoft.Compute/galleries",
            "location": g["location"],
            "tags": g["tags"],
            "properties": {
                "description": g["description"],
                "identifier": {"uniqueName": g["unique_name"]},
                "provisioningState": "Succeeded",
                "sharingProfile": {"permissions": g["permissions"], "groups": groups},
            },
        }

    def _gallery(self, req: Request, sub: str, rg: str, name: str) -> Response:
        m = req.method
        key = self._gallery_key(sub, rg, name)
        if m == "GET":
            return self._respond(200, self._gallery_json(self.require_gallery(sub, rg, name)))
        if m == "DELETE":
            self._owner._require_group(sub, rg)
            if key not in self.galleries:
                return self._respond(204, None)
            if any(k[:3] == key for k in self.images):
                raise self._fail(
                    409,
                    "CannotDeleteResource",
                    f"Can not delete resource before nested resources are deleted. Gallery"
                    f" '{name}' still has image definitions.",
                )
            del self.galleries[key]
            return self._respond(200, None)
        if m == "PUT":
            return self._put_gallery(req, sub, rg, name, key)
        raise self._fail(404, "ArmServerUnsupported", f"no gallery route {m} {req.path}")

    def _put_gallery(self, req: Request, sub: str, rg: str, name: str, key: Key) -> Response:
        self._owner._require_group(sub, rg)
        body = req.json()
        location = _location(body, self._fail)
        if not GALLERY_NAME.match(name):
            raise self._fail(
                400,
                INVALID,
                f"The gallery name '{name}' is invalid: use letters, digits, periods and"
                " underscores, not starting or ending with a period or underscore, at most 80"
                " characters.",
            )
        props = body.get("properties") or {}
        permissions = (props.get("sharingProfile") or {}).get("permissions") or "Private"
        if permissions not in ("Private", "Groups"):
            raise self._fail(
                400, INVALID, f"Sharing permission '{permissions}' is not supported here."
            )
        existing = self.galleries.get(key)
        if existing is not None:
            if norm(existing["location"]) != norm(location):
                raise self._fail(
                    409,
                    "InvalidResourceLocation",
                    f"The resource '{name}' already exists in location '{existing['location']}'"
                    f" in resource group '{rg}'. A resource with the same name cannot be created"
                    f" in location '{location}'. Please select a new resource name.",
                )
            if (
                existing["permissions"] == "Groups"
                and permissions == "Private"
                and (existing["subscriptions"] or existing["tenants"])
            ):
                raise self._fail(
                    409,
                    "OperationNotAllowed",
                    f"Gallery '{name}' is shared to groups; reset its sharing profile before"
                    " making it private.",
                )
            existing.update(
                description=props.get("description", existing["description"]) or "",
                tags=body.get("tags", existing["tags"]) or {},
                permissions=permissions,
            )
            return self._respond(200, self._gallery_json(existing))
        gallery: Json = {
            "subscription": sub,
            "resource_group": rg,
            "name": name,
            "location": location,
            "description": props.get("description") or "",
            "tags": body.get("tags") or {},
            "permissions": permissions,
            "subscriptions": [],
            "tenants": [],
            "unique_name": f"{uuid.uuid4()}-{name.upper()}",
        }
        self.galleries[key] = gallery
        return self._respond(201, self._gallery_json(gallery))

    def _share(self, req: Request, sub: str, rg: str, name: str) -> Response:
        gallery = self.require_gallery(sub, rg, name)
        body = req.json()
        operation = body.get("operationType")
        if operation not in ("Add", "Remove", "Reset"):
            raise self._fail(
                400,
                INVALID,
                f"The value '{operation}' of operationType is not valid; use Add, Remove or Reset.",
            )
        if gallery["permissions"] != "Groups":
            raise self._fail(
                409,
                "OperationNotAllowed",
                f"The sharing profile of gallery '{name}' cannot be updated: its sharing"
                " permission is 'Private'. Set sharingProfile.permissions to 'Groups' first.",
            )
        changes: dict[str, list[str]] = {"Subscriptions": [], "AADTenants": []}
        for group in body.get("groups") or []:
            kind = group.get("type")
            if kind not in changes:
                raise self._fail(
                    400,
                    INVALID,
                    f"The sharing group type '{kind}' is not valid; use Subscriptions or"
                    " AADTenants.",
                )
            changes[kind] += [str(i).lower() for i in group.get("ids") or []]
        if operation == "Reset":
            gallery["subscriptions"], gallery["tenants"] = [], []
        for slot, kind in (("subscriptions", "Subscriptions"), ("tenants", "AADTenants")):
            current = set(gallery[slot])
            if operation == "Add":
                current |= set(changes[kind])
            elif operation == "Remove":
                current -= set(changes[kind])
            gallery[slot] = sorted(current)
        url = self._new_operation(req, sub, gallery["location"], kind="share")
        return self._respond(
            202, None, {"Azure-AsyncOperation": url, "Location": url + "&monitor=true"}
        )

    # -------------------------------------------------------------- image definitions

    def _image(self, req: Request, sub: str, rg: str, gallery_name: str, name: str) -> Response:
        m = req.method
        key = (*self._gallery_key(sub, rg, gallery_name), name.lower())
        if m == "GET":
            self.require_gallery(sub, rg, gallery_name)
            image = self.images.get(key)
            if image is None:
                raise self._not_found(
                    f"Microsoft.Compute/galleries/{gallery_name}/images/{name}", rg
                )
            return self._respond(200, self._image_json(image))
        if m == "DELETE":
            self.require_gallery(sub, rg, gallery_name)
            if key not in self.images:
                return self._respond(204, None)
            if any(k[:4] == key for k in self.versions):
                raise self._fail(
                    409,
                    "CannotDeleteResource",
                    f"Can not delete resource before nested resources are deleted. Image"
                    f" definition '{name}' still has versions.",
                )
            del self.images[key]
            return self._respond(200, None)
        if m == "PUT":
            return self._put_image(req, sub, rg, gallery_name, name, key)
        raise self._fail(404, "ArmServerUnsupported", f"no image route {m} {req.path}")

    def _put_image(
        self, req: Request, sub: str, rg: str, gallery_name: str, name: str, key: Key
    ) -> Response:
        gallery = self.require_gallery(sub, rg, gallery_name)
        body = req.json()
        location = _location(body, self._fail)
        if norm(location) != norm(gallery["location"]):
            raise self._fail(
                400,
                INVALID,
                f"The location '{location}' of image definition '{name}' must be its gallery's"
                f" location '{gallery['location']}'.",
            )
        props = dict(body.get("properties") or {})
        for required in ("osType", "osState", "identifier"):
            if not props.get(required):
                raise self._fail(
                    400, INVALID, f"Required parameter '{required}' is missing (null)."
                )
        if props["osType"] not in ("Linux", "Windows"):
            raise self._fail(400, INVALID, f"The value '{props['osType']}' of osType is invalid.")
        if props["osState"] not in ("Generalized", "Specialized"):
            raise self._fail(400, INVALID, f"The value '{props['osState']}' of osState is invalid.")
        props.setdefault("hyperVGeneration", "V1")
        props.setdefault("architecture", "x64")
        if props.get("endOfLifeDate"):
            props["endOfLifeDate"] = self._checked_date(props["endOfLifeDate"])
        existing = self.images.get(key)
        if existing is not None:
            self._check_immutable(existing["properties"], props)
        image = {
            "subscription": sub,
            "resource_group": rg,
            "gallery": gallery["name"],
            "name": name,
            "location": location,
            "tags": body.get("tags") or {},
            "properties": props,
        }
        self.images[key] = image
        return self._respond(200 if existing else 201, self._image_json(image))

    def _check_immutable(self, before: Json, after: Json) -> None:
        for path, shown in IMMUTABLE:
            old, new = _at(before, path), _at(after, path)
            if str(old or "").lower() != str(new or "").lower():
                raise self._fail(
                    409, "PropertyChangeNotAllowed", f"Changing property '{shown}' is not allowed."
                )
        if _security_type(before).lower() != _security_type(after).lower():
            raise self._fail(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'galleryImage.properties.features.SecurityType' is not allowed.",
            )

    def _checked_date(self, value: Any) -> str:
        try:
            return _date(value)
        except ValueError as exc:
            raise self._fail(400, INVALID, str(exc)) from None

    @staticmethod
    def _image_json(i: Json) -> Json:
        return {
            "id": (
                f"/subscriptions/{i['subscription']}/resourceGroups/{i['resource_group']}"
                f"/providers/Microsoft.Compute/galleries/{i['gallery']}/images/{i['name']}"
            ),
            "name": i["name"],
            "type": "Microsoft.Compute/galleries/images",
            "location": i["location"],
            "tags": i["tags"],
            "properties": {**i["properties"], "provisioningState": "Succeeded"},
        }

    # -------------------------------------------------------------- image versions

    def _version(
        self, req: Request, sub: str, rg: str, gallery_name: str, image: str, name: str
    ) -> Response:
        m = req.method
        key = (*self._gallery_key(sub, rg, gallery_name), image.lower(), name.lower())
        what = f"Microsoft.Compute/galleries/{gallery_name}/images/{image}/versions/{name}"
        if m == "PUT":
            return self._put_version(req, sub, rg, gallery_name, image, name, key)
        self.require_gallery(sub, rg, gallery_name)
        version = self.versions.get(key)
        if m == "DELETE":
            if version is None:
                return self._respond(204, None)
            del self.versions[key]
            url = self._new_operation(req, sub, version["location"], kind="delete")
            return self._respond(
                202, None, {"Azure-AsyncOperation": url, "Location": url + "&monitor=true"}
            )
        if version is None:
            raise self._not_found(what, rg)
        if m == "GET":
            expand = (parse_qs(req.query).get("$expand") or [""])[0]
            return self._respond(
                200, self._version_json(version, expand=expand.lower() == "replicationstatus")
            )
        if m == "PATCH":
            return self._patch_version(req, sub, version)
        raise self._fail(404, "ArmServerUnsupported", f"no version route {m} {req.path}")

    def _list_versions(
        self, req: Request, sub: str, rg: str, gallery_name: str, image: str
    ) -> Response:
        self.require_gallery(sub, rg, gallery_name)
        prefix = (*self._gallery_key(sub, rg, gallery_name), image.lower())
        if prefix not in self.images:
            raise self._not_found(f"Microsoft.Compute/galleries/{gallery_name}/images/{image}", rg)
        found = [v for k, v in sorted(self.versions.items()) if k[:4] == prefix]
        query = parse_qs(req.query)
        skip = int((query.get("$skiptoken") or ["0"])[0])
        page = found[skip : skip + PAGE_SIZE]
        body: Json = {"value": [self._version_json(v, expand=False) for v in page]}
        if skip + PAGE_SIZE < len(found):
            api = _api_version(req.query)
            body["nextLink"] = (
                f"{req.base_url}{req.path}?api-version={api}&$skiptoken={skip + PAGE_SIZE}"
            )
        return self._respond(200, body)

    def _put_version(
        self,
        req: Request,
        sub: str,
        rg: str,
        gallery_name: str,
        image: str,
        name: str,
        key: Key,
    ) -> Response:
        gallery = self.require_gallery(sub, rg, gallery_name)
        if key[:4] not in self.images:
            raise self._not_found(f"Microsoft.Compute/galleries/{gallery_name}/images/{image}", rg)
        body = req.json()
        location = _location(body, self._fail)
        self._check_version_name(name)
        if norm(location) != norm(gallery["location"]):
            raise self._fail(
                400,
                INVALID,
                f"The location '{location}' of gallery image version '{name}' must be its"
                f" gallery's location '{gallery['location']}'.",
            )
        props = body.get("properties") or {}
        publishing = dict(props.get("publishingProfile") or {})
        targets = self._checked_targets(name, location, publishing.get("targetRegions"))
        source = self._checked_source(name, sub, location, props.get("storageProfile") or {})
        if publishing.get("endOfLifeDate"):
            publishing["endOfLifeDate"] = self._checked_date(publishing["endOfLifeDate"])
        existing = self.versions.get(key)
        if existing is not None:
            if not _same_source(existing["source"], source):
                raise self._fail(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing property 'galleryImageVersion.properties.storageProfile.source' is"
                    " not allowed.",
                )
            if not existing["problem"]:  # the same version again: its replication goes on
                return self._respond(200, self._version_json(existing, expand=False))
            # A PUT onto a version whose creation failed makes it again.
        version = {
            "subscription": sub,
            "resource_group": rg,
            "gallery": gallery["name"],
            "image": self.images[key[:4]]["name"],
            "name": name,
            "location": location,
            "tags": body.get("tags") or {},
            "source": source,
            "publishing": {**publishing, "targetRegions": targets},
            "created": self.now(),
            "operation": (existing or {}).get("operation", 0) + 1,
            "problem": "",
            "updating": False,
            "regions": {},
        }
        for target in targets:
            self._start_region(version, target["name"])
        version["problem"] = self._source_problem(source, location) or ""
        if version["problem"]:
            for region in version["regions"].values():
                region.update(state="Failed", details=version["problem"], ready_at=0.0)
        self.versions[key] = version
        self.creations[self._version_id(version).lower()] += 1
        url = self._new_operation(
            req, sub, location, kind="version", key=list(key), operation=version["operation"]
        )
        return self._respond(201, self._version_json(version, expand=False), _lro(url))

    def _patch_version(self, req: Request, sub: str, version: Json) -> Response:
        body = req.json()
        publishing = (body.get("properties") or {}).get("publishingProfile") or {}
        self._settle(version)
        if "targetRegions" in publishing and publishing["targetRegions"] is not None:
            targets = self._checked_targets(
                version["name"], version["location"], publishing["targetRegions"]
            )
            self._retarget(version, targets)
        if publishing.get("excludeFromLatest") is not None:
            version["publishing"]["excludeFromLatest"] = bool(publishing["excludeFromLatest"])
        if "endOfLifeDate" in publishing:
            value = publishing["endOfLifeDate"]
            version["publishing"]["endOfLifeDate"] = self._checked_date(value) if value else ""
        if "tags" in body and body["tags"] is not None:
            version["tags"] = body["tags"]
        url = self._new_operation(
            req,
            sub,
            version["location"],
            kind="version",
            key=[k.lower() for k in self._version_key(version)],
            operation=version["operation"],
        )
        return self._respond(200, self._version_json(version, expand=False), _lro(url))

    def _check_version_name(self, name: str) -> None:
        match = VERSION_NAME.match(name)
        if match is None or any(int(part) > MAX_PART for part in match.groups()):
            raise self._fail(
                400,
                INVALID,
                f"The gallery image version name '{name}' is invalid. It must follow the format"
                " MAJOR.MINOR.PATCH, three 32-bit integers (such as 1.0.0).",
            )

    def _checked_targets(self, name: str, location: str, raw: Any) -> list[Json]:
        """Target regions as stored: each an Azure region, once, with a replica; the version's
        own region among them (Azure's default, when none is given, is that region alone)."""
        if not raw:
            return [{"name": display(location), "regionalReplicaCount": 1}]
        targets, seen = [], set()
        for item in raw:
            region = str(item.get("name") or "")
            if norm(region) not in REGIONS:
                raise self._fail(
                    400,
                    INVALID,
                    f"The target region '{region}' of gallery image version '{name}' is not a"
                    " valid Azure region.",
                )
            if norm(region) in seen:
                raise self._fail(
                    400, INVALID, f"The target region '{region}' is given more than once."
                )
            seen.add(norm(region))
            replicas = item.get("regionalReplicaCount", 1)
            if not isinstance(replicas, int) or not 1 <= replicas <= 100:
                raise self._fail(
                    400,
                    INVALID,
                    f"The regionalReplicaCount of target region '{region}' must be between 1"
                    " and 100.",
                )
            targets.append({**item, "name": display(region), "regionalReplicaCount": replicas})
        if norm(location) not in seen:
            raise self._fail(
                400,
                INVALID,
                f"The target regions of gallery image version '{name}' must include its source"
                f" region '{location}'; add it to publishingProfile.targetRegions.",
            )
        return targets

    def _checked_source(self, name: str, sub: str, location: str, storage: Json) -> Json:
        """The version's source as stored: ``{"uri", "storageAccountId"}`` of a VHD, or
        ``{"id"}`` of another version; refuses a VHD outside the subscription or region."""
        disk_source = ((storage.get("osDiskImage") or {}).get("source")) or {}
        version_source = (storage.get("source") or {}).get("id")
        if disk_source.get("uri"):
            return self._checked_vhd(name, sub, location, disk_source)
        if version_source:
            if VERSION_ID.match(str(version_source)) is None:
                raise self._fail(
                    400,
                    INVALID,
                    f"The source '{version_source}' of gallery image version '{name}' is not the"
                    " resource id of a gallery image version.",
                )
            return {"id": str(version_source)}
        raise self._fail(
            400,
            INVALID,
            f"Gallery image version '{name}' has no source: give storageProfile.osDiskImage"
            ".source (uri and storageAccountId) or storageProfile.source.id.",
        )

    def _checked_vhd(self, name: str, sub: str, location: str, source: Json) -> Json:
        uri, account_id = str(source["uri"]), str(source.get("storageAccountId") or "")
        match = ACCOUNT_ID.match(account_id)
        if match is None:
            raise self._fail(
                400,
                INVALID,
                f"The storageAccountId '{account_id}' of the source of gallery image version"
                f" '{name}' is not the resource id of a storage account.",
            )
        account = self._owner.accounts.get(match[3].lower())
        blob_account, _ = self._owner._account_for_blob(uri)
        if account is None or blob_account.lower() != match[3].lower():
            raise self._fail(
                400,
                INVALID,
                f"The source blob '{uri}' is not in storage account '{match[3]}' (or that"
                " storage account does not exist).",
            )
        if account["subscription"].lower() != sub.lower() or norm(account["location"]) != norm(
            location
        ):
            raise self._fail(
                400,
                INVALID,
                f"The source blob '{uri}' is in storage account '{account['name']}' (subscription"
                f" '{account['subscription']}', region '{account['location']}'); it must be in a"
                f" storage account in the gallery's subscription '{sub}' and the image version's"
                f" region '{location}'.",
            )
        return {"uri": uri, "storageAccountId": account_id}

    # -------------------------------------------------------------- the creation's source read

    def _source_problem(self, source: Json, location: str) -> str | None:
        if "id" in source:
            return self._source_version_problem(source["id"], location)
        return self._blob_problem(source["uri"])

    def _source_version_problem(self, arm_id: str, location: str) -> str | None:
        match = VERSION_ID.match(arm_id)
        assert match is not None
        origin = self.versions.get(tuple(part.lower() for part in match.groups()))
        if origin is None:
            return f"The source gallery image version '{arm_id}' does not exist."
        self._settle(origin)
        state = self._provisioning_state(origin)
        if state != "Succeeded":
            return (
                f"The source gallery image version '{arm_id}' is {state}, not Succeeded; wait"
                " until it has replicated."
            )
        replica = origin["regions"].get(norm(location))
        if replica is None or replica["state"] != "Completed":
            return (
                f"The source gallery image version '{arm_id}' has no replica in region"
                f" '{location}'; add the region to its target regions first."
            )
        return None

    def _blob_problem(self, uri: str) -> str | None:
        """What reading the blob finds, through Azurite (the account's connection string)."""
        account, _ = self._owner._account_for_blob(uri)
        path = uri.split("?", 1)[0].rstrip("/").split("/")
        container, name = _container_and_name(path, account)
        shown = f"{account}/{container}/{name}"
        connection = self.storage.get(account.lower())
        if connection is None:
            return f"The source blob '{shown}' could not be read by the platform."
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobClient

        with BlobClient.from_connection_string(connection, container, name) as client:
            try:
                props = client.get_blob_properties()
            except ResourceNotFoundError:
                return (
                    f"The source blob '{shown}' does not exist; upload the VHD before creating"
                    " the version."
                )
            size = int(props.size)
            copy = str(props.copy.status or "").lower()
            if (account.lower(), container, name) in self.pending:
                copy = "pending"
            if copy in ("pending", "failed", "aborted"):
                return (
                    f"The source blob '{shown}' is not complete: the copy into it is {copy};"
                    " wait for the copy to succeed."
                )
            if str(props.blob_type).lower().endswith("blockblob"):
                return f"The source blob '{shown}' is a block blob; a VHD must be a page blob."
            if size < FOOTER + MIB or (size - FOOTER) % MIB:
                return (
                    f"The source blob '{shown}' has {size} bytes: a fixed VHD's size is a whole"
                    " number of MiB plus its 512-byte footer; convert the disk to a fixed VHD."
                )
            footer = client.download_blob(offset=size - FOOTER, length=FOOTER).readall()
        from imagedist._vhd import fixed_footer_problem

        problem = fixed_footer_problem(footer, size)
        if problem is not None:
            return f"The source blob '{shown}' is not a fixed VHD: {problem}; upload a fixed VHD."
        return None

    # -------------------------------------------------------------- replication

    def _start_region(self, version: Json, region: str) -> None:
        now = self.now()
        version["regions"][norm(region)] = {
            "region": norm(region),
            "state": "Replicating",
            "started": now,
            "ready_at": now + self.replication_seconds,
            "fails": norm(region) in self.fail_regions,
            "details": "",
        }

    def _settle(self, version: Json) -> None:
        now = self.now()
        for region in version["regions"].values():
            if region["state"] == "Replicating" and now >= region["ready_at"]:
                if region["fails"]:
                    region["state"] = "Failed"
                    region["details"] = (
                        f"Replication to region '{region['region']}' failed: the regional copy of"
                        " the image could not be created (code ReplicationJobFailed). Update the"
                        " version's target regions to replicate it again."
                    )
                else:
                    region["state"] = "Completed"
        if not any(r["state"] == "Replicating" for r in version["regions"].values()):
            version["updating"] = False

    def _retarget(self, version: Json, targets: list[Json]) -> None:
        wanted = {norm(t["name"]) for t in targets}
        for region in [r for r in version["regions"] if r not in wanted]:
            del version["regions"][region]
        for target in targets:
            current = version["regions"].get(norm(target["name"]))
            if current is None or current["state"] == "Failed":
                if version["problem"]:
                    continue  # nothing to replicate: the creation itself failed
                self._start_region(version, target["name"])
                version["updating"] = True
        version["publishing"]["targetRegions"] = targets

    def _provisioning_state(self, version: Json) -> str:
        if version["problem"]:
            return "Failed"
        states = [r["state"] for r in version["regions"].values()]
        if "Replicating" in states:
            return "Updating" if version["updating"] else "Creating"
        return "Failed" if "Failed" in states else "Succeeded"

    def _progress(self, region: Json) -> int:
        if region["state"] == "Completed":
            return 100
        if region["state"] != "Replicating":
            return 0
        span = region["ready_at"] - region["started"]
        done = (self.now() - region["started"]) / span if span > 0 else 0.99
        return max(0, min(99, math.floor(done * 100)))

    @staticmethod
    def _version_key(v: Json) -> Key:
        return (v["subscription"], v["resource_group"], v["gallery"], v["image"], v["name"])

    @staticmethod
    def _version_id(v: Json) -> str:
        return (
            f"/subscriptions/{v['subscription']}/resourceGroups/{v['resource_group']}"
            f"/providers/Microsoft.Compute/galleries/{v['gallery']}/images/{v['image']}"
            f"/versions/{v['name']}"
        )

    def _version_json(self, v: Json, *, expand: bool) -> Json:
        self._settle(v)
        publishing = {
            "replicaCount": 1,
            "excludeFromLatest": False,
            "storageAccountType": "Standard_LRS",
            **v["publishing"],
            "publishedDate": _iso(v["created"]),
        }
        if "id" in v["source"]:
            storage: Json = {"source": {"id": v["source"]["id"]}}
        else:
            storage = {
                "osDiskImage": {
                    "hostCaching": "ReadOnly",
                    "source": {
                        "uri": v["source"]["uri"],
                        "storageAccountId": v["source"]["storageAccountId"],
                    },
                }
            }
        props: Json = {
            "publishingProfile": publishing,
            "storageProfile": storage,
            "provisioningState": self._provisioning_state(v),
        }
        if expand:
            regions = sorted(v["regions"].values(), key=lambda r: r["region"])
            states = {r["state"] for r in regions}
            aggregated = (
                "InProgress"
                if "Replicating" in states
                else "Failed"
                if "Failed" in states
                else "Completed"
            )
            props["replicationStatus"] = {
                "aggregatedState": aggregated,
                "summary": [
                    {
                        "region": display(r["region"]),
                        "state": r["state"],
                        "details": r["details"],
                        "progress": self._progress(r),
                    }
                    for r in regions
                ],
            }
        return {
            "id": self._version_id(v),
            "name": v["name"],
            "type": "Microsoft.Compute/galleries/images/versions",
            "location": v["location"],
            "tags": v["tags"],
            "properties": props,
        }


# ---------------------------------------------------------------------- helpers


def _lro(url: str) -> dict[str, str]:
    return {"Azure-AsyncOperation": url}


def _location(body: Json, fail: Callable[[int, str, str], Exception]) -> str:
    location = body.get("location")
    if not location:
        raise fail(
            400, "LocationRequired", "The location property is required for this definition."
        )
    return str(location)


def _at(props: Json, path: tuple[str, ...]) -> Any:
    value: Any = props
    for part in path:
        value = (value or {}).get(part)
    return value


def _security_type(props: Json) -> str:
    for feature in props.get("features") or []:
        if str(feature.get("name", "")).lower() == "securitytype":
            return str(feature.get("value") or "")
    return ""


def _same_source(a: Json, b: Json) -> bool:
    if "id" in a or "id" in b:
        return str(a.get("id", "")).lower() == str(b.get("id", "")).lower()
    return str(a.get("uri")) == str(b.get("uri"))


def _container_and_name(path: list[str], account: str) -> tuple[str, str]:
    """Container and blob name of a blob URL's path segments (host style or path style)."""
    segments = path[3:]  # after scheme, "" and host
    if segments and segments[0].lower() == account.lower():  # path style: Azurite
        segments = segments[1:]
    from urllib.parse import unquote

    return (segments[0] if segments else ""), unquote("/".join(segments[1:]))


def _api_version(query: str) -> str:
    return (parse_qs(query).get("api-version") or ["2024-03-03"])[0]


# ---------------------------------------------------------------------- a test's handle


def configure(
    ctl: Control, *, replication_seconds: float | None = None, fail_regions: list[str] | None = None
) -> Json:
    """How long each region replicates (model seconds), and which regions' replications fail."""
    body: Json = {}
    if replication_seconds is not None:
        body["replication_seconds"] = replication_seconds
    if fail_regions is not None:
        body["fail_regions"] = fail_regions
    return ctl._control("POST", "gallery/config", body)


def advance(ctl: Control, seconds: float) -> None:
    """Move the gallery model's clock on: replications due by then end."""
    ctl._control("POST", "gallery/advance", {"seconds": seconds})


def read_blobs_with(ctl: Control, account: str, connection_string: str) -> None:
    """Let a version's creation read the account's blobs (an Azurite account)."""
    ctl._control(
        "POST", "gallery/storage", {"account": account, "connection_string": connection_string}
    )


def pend_copy(ctl: Control, account: str, container: str, name: str) -> None:
    """The blob reads as having a copy pending into it, from now on."""
    ctl._control(
        "POST", "gallery/pending_copies", {"account": account, "container": container, "name": name}
    )


def creations(ctl: Control, version_id: str) -> int:
    """How many creations of the version (its ARM id) the server accepted."""
    for entry in ctl._control("GET", "gallery")["creations"]:
        if entry["id"] == version_id.lower():
            return int(entry["count"])
    return 0
