"""A small Azure Resource Manager test server: resource groups, storage accounts, managed images
and managed disks (read, grant and revoke read access).

It answers only what imagedist calls through the real ``azure-mgmt-*`` clients, in ARM's wire
shapes, and refuses what ARM refuses, with ARM's status, error code and message:

* **a bearer token** (an unsigned JWT, :mod:`armserver.tokens`) for one of the configured
  ``audiences`` (public ARM's by default), from the configured ``tenant``, not expired: 401
  ``AuthenticationFailed``, ``InvalidAuthenticationToken``, ``InvalidAuthenticationTokenAudience``,
  ``InvalidAuthenticationTokenTenant`` or ``ExpiredAuthenticationToken`` otherwise, with a
  ``WWW-Authenticate`` challenge. The token's ``oid`` is ``request.principal.oid`` for handlers;
* **an api-version** the installed SDK sends for the path's resource type (read from the SDK's
  request builders, :mod:`armserver.apiversions`): 400 ``MissingApiVersionParameter`` or
  ``InvalidApiVersionParameter``;
* **an image's source blob** in a storage account of the image's subscription and region (400
  ``InvalidParameter``); with ``validate_source_blobs``, the blob is read from the blob store
  (Azurite, with ``storage_keys``) as Azure reads it: it must exist, be a page blob with no copy
  pending, a whole number of MiB plus 512 bytes, ending in a valid fixed-VHD footer; the image
  fails (``InvalidParameter`` / ``InvalidVhd``) otherwise;
* **paging**: every list answers ``page_size`` items and a ``nextLink`` to the rest;
* **long-running operations** as ARM runs them: image PUT 201 + ``Azure-AsyncOperation`` (the
  image is ``Creating`` for ``image_delay`` s); image DELETE 202 + ``Azure-AsyncOperation`` +
  ``Location`` (the image is ``Deleting`` for ``lro_delay`` s, then gone); resource group DELETE,
  storage account create and disk access 202 + ``Location`` (``lro_delay`` s); ``Retry-After`` on
  each when ``lro_retry_after`` is set (clients wait that long: keep it 0 or unset in tests);
* a PUT onto an image being deleted, a DELETE of one being updated: 409 ``OperationNotAllowed``;
  throttling (429) on demand.

``ArmState`` holds everything and answers requests as plain data (no sockets); ``ArmServer`` puts
it behind a threaded HTTPS server. Extra routes (role assignments, provider registration...) plug
in as ``route_handlers`` (see :data:`RouteHandler`). Test-only endpoints live under ``/_test/``
and need no token:

* ``GET  /_test/counters``  image creations per (subscription, resource group, name), request counts
  and TLS handshakes (one per connection)
* ``GET  /_test/state``     a dump of groups, accounts and images (storage keys redacted)
* ``POST /_test/reset``     forget everything (config back to the start-up values)
* ``POST /_test/config``    ``{"image_delay": s, "lro_delay": s, "lro_retry_after": s|null,
  "blob_endpoint_template": "https://{name}.blob.core.windows.net/", "page_size": n,
  "audiences": [...], "tenant": "...", "validate_source_blobs": bool,
  "storage_keys": {"<account>": "<key>"}}``
* ``POST /_test/accounts``  ``{"name", "subscription", "region", "blob_endpoint"?, "resource_group"?}``
* ``POST /_test/disks``     ``{"subscription", "resource_group", "name", "size_bytes", "access_url",
  "region"?}``: a managed disk whose ``beginGetAccess`` hands out ``access_url`` (in tests, an
  Azurite SAS URL of the page blob that holds the disk's bytes)
* ``POST /_test/images``    ``{"subscription", "resource_group", "name", "state", "seconds"?,
  "then"?, "region"?, "blob_uri"?, "tags"?}``: the image (made if absent) reads ``state`` (any
  string: ``Deleting``, ``Updating``, ``Canceled``, or one Azure may add) for ``seconds``
  (``null``: until changed), then ``then`` (a state, ``"gone"``, or ``null``: its creation's outcome)
* ``POST /_test/faults``    ``{"kind": "image_failure", "subscription", "region", "code"?, "message"?,
  "count"?, "status"?, "state"?}`` (``state: "Canceled"`` ends it Canceled), ``{"kind": "throttle",
  "count", "retry_after"?, "include_reads"?}`` or ``{"kind": "disk_grant_failure", "code"?,
  "message"?, "count"?, "status"?}``
* ``DELETE /_test/faults``  clear all faults

Galleries, image definitions and versions: :mod:`armserver.gallery` (its test endpoints under
``/_test/gallery``). Role assignments, role enforcement and resource provider registration:
:mod:`armserver.authz`
(its test endpoints under ``/_test/authz``).

``GET /_test/counters`` also lists every disk with its ``grants``, ``revokes`` and whether access is
``granted`` now. The access URL of a disk is never in a response of ``/_test/state``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from imagedist._domain.regions import REGIONS

from .apiversions import ApiVersions, installed_api_versions
from .authz import Authz
from .certs import CertPaths, ensure_certs
from .control import Control
from .gallery import GalleryModel
from .tokens import DEFAULT_TENANT, PUBLIC_ARM_AUDIENCES, Principal, TokenRefused, principal_of

DEFAULT_IMAGE_DELAY = 0.5
DEFAULT_PAGE_SIZE = 100  # lists answer in pages of this many items, linked by nextLink
IMAGE_STATES = ("Creating", "Updating", "Deleting", "Succeeded", "Failed", "Canceled")
DEFAULT_BLOB_ENDPOINT_TEMPLATE = "https://{name}.blob.core.windows.net/"
ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9]{3,24}$")
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
OPERATION_SEGMENTS = frozenset({"operations", "asyncoperations", "operationresults"})

Json = dict[str, Any]
#: An extra route: ``(state, request, segments, lower-cased segments)`` -> a response, or ``None``
#: to let the next handler (in the end the built-in routes) answer. Called under the state's lock
#: after authentication, with ``request.principal`` set.
RouteHandler = Callable[["ArmState", "Request", list[str], list[str]], "Response | None"]


class ArmError(Exception):
    """An ARM error response: ``{"error": {"code": ..., "message": ...}}`` with an HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return Response(self.status, body, dict(self.headers))


@dataclass
class Request:
    method: str
    path: str  # without the query string, still percent-encoded
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    base_url: str = ""  # scheme://host:port as the client addressed us
    principal: Principal | None = None  # who the bearer token speaks for (set once checked)

    def param(self, name: str) -> str | None:
        """A query parameter's value (the first, percent-decoded), or ``None``."""
        for key, value in parse_qsl(self.query, keep_blank_values=True):
            if key == name:
                return value
        return None

    def json(self) -> Json:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise ArmError(
                400, "InvalidRequestContent", f"The request content was invalid: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise ArmError(
                400, "InvalidRequestContent", "The request content must be a JSON object."
            )
        return value


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able, or None for no body
    headers: dict[str, str] = field(default_factory=dict)


def norm_region(region: str) -> str:
    """ARM region names compare without case and spaces ("West Europe" == "westeurope")."""
    return region.replace(" ", "").lower()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _not_found(resource_type: str, name: str, rg: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{rg}' was not found.",
    )


class ArmState:
    """All server state behind one lock; :meth:`handle` turns a :class:`Request` into a :class:`Response`."""

    def __init__(
        self,
        *,
        image_delay: float = DEFAULT_IMAGE_DELAY,
        lro_delay: float = 0.0,
        lro_retry_after: float | None = None,
        blob_endpoint_template: str = DEFAULT_BLOB_ENDPOINT_TEMPLATE,
        state_file: str | os.PathLike[str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        audiences: list[str] | None = None,
        tenant: str = DEFAULT_TENANT,
        validate_source_blobs: bool = False,
        storage_keys: dict[str, str] | None = None,
        route_handlers: list[RouteHandler] | None = None,
        api_versions: ApiVersions | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._initial_config: Json = {
            "image_delay": image_delay,
            "lro_delay": lro_delay,
            "lro_retry_after": lro_retry_after,
            "blob_endpoint_template": blob_endpoint_template,
            "page_size": page_size,
            "audiences": list(audiences or PUBLIC_ARM_AUDIENCES),
            "tenant": tenant,
            "validate_source_blobs": validate_source_blobs,
            "storage_keys": dict(storage_keys or {}),
        }
        #: The one place extra routes plug in (role assignments, provider registration...):
        #: each is asked, in order, before the built-in routes.
        self.route_handlers: list[RouteHandler] = list(route_handlers or [])
        self.api_versions = api_versions or installed_api_versions()
        self._state_file = Path(state_file) if state_file else None
        self._reset()
        if self._state_file is not None and self._state_file.is_file():
            self._load()

    # ------------------------------------------------------------------ state lifecycle

    def _reset(self) -> None:
        self.config: Json = dict(self._initial_config)
        self.groups: dict[tuple[str, str], Json] = {}
        self.accounts: dict[str, Json] = {}  # lower-case name -> account (names are global)
        self.images: dict[tuple[str, str, str], Json] = {}
        self.operations: dict[str, Json] = {}
        self.image_creations: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.tls_handshakes = 0  # connections, each with its own handshake
        self.image_faults: list[Json] = []
        self.throttle: Json = {"remaining": 0, "retry_after": 1, "include_reads": False}
        self.disks: dict[tuple[str, str, str], Json] = {}
        self.disk_faults: list[Json] = []
        self.authz = Authz(Response, ArmError)
        self.gallery = GalleryModel(self, Response, ArmError)

    def _snapshot(self) -> Json:
        return {
            "config": self.config,
            "groups": list(self.groups.values()),
            "accounts": list(self.accounts.values()),
            "images": list(self.images.values()),
            "operations": self.operations,
            "image_creations": [
                {"key": list(k), "count": n} for k, n in self.image_creations.items()
            ],
            "requests": dict(self.requests),
            "image_faults": self.image_faults,
            "throttle": self.throttle,
            "disks": list(self.disks.values()),
            "disk_faults": self.disk_faults,
        }

    def _load(self) -> None:
        assert self._state_file is not None
        data = json.loads(self._state_file.read_text())
        self.config.update(data.get("config", {}))
        for g in data.get("groups", []):
            self.groups[(g["subscription"].lower(), g["name"].lower())] = g
        for a in data.get("accounts", []):
            self.accounts[a["name"].lower()] = a
        for i in data.get("images", []):
            self.images[
                (i["subscription"].lower(), i["resource_group"].lower(), i["name"].lower())
            ] = i
        self.operations.update(data.get("operations", {}))
        for entry in data.get("image_creations", []):
            self.image_creations[tuple(entry["key"])] = entry["count"]
        self.requests.update(data.get("requests", {}))
        self.image_faults = data.get("image_faults", [])
        self.throttle.update(data.get("throttle", {}))
        for d in data.get("disks", []):
            self.disks[_disk_key(d["subscription"], d["resource_group"], d["name"])] = d
        self.disk_faults = data.get("disk_faults", [])

    def _save(self) -> None:
        if self._state_file is None:
            return
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        tmp.write_text(json.dumps(self._snapshot()))
        os.replace(tmp, self._state_file)

    # ------------------------------------------------------------------ entry points

    def handle(self, req: Request) -> Response:
        segs = [unquote(s) for s in req.path.split("/") if s]
        low = [s.lower() for s in segs]
        with self._lock:
            try:
                self._settle_forced_images()
                if low and low[0] == "_test":
                    return self._control_request(req, low[1:])
                req.principal = self._authenticate(req)
                self._check_api_version(req, segs)
                throttled = self._maybe_throttle(req.method)
                if throttled is not None:
                    return throttled
                response = self.authz.intercept(req, segs, low) or self._route(req, segs, low)
                if req.method in WRITE_METHODS:
                    self._save()
                return response
            except ArmError as err:
                return err.response()

    def _authenticate(self, req: Request) -> Principal:
        """ARM's first check: a bearer token for its audience, from its tenant, not expired."""
        try:
            return principal_of(
                req.headers.get("authorization", ""),
                audiences=list(self.config["audiences"]),
                tenant=str(self.config["tenant"]),
            )
        except TokenRefused as refused:
            self.requests["unauthorized"] += 1
            raise ArmError(
                401, refused.code, refused.message, {"WWW-Authenticate": refused.challenge}
            ) from None

    def _check_api_version(self, req: Request, segs: list[str]) -> None:
        """The api-version must be one the installed SDK sends for this path's resource type.
        The server's own operation URLs (no SDK route) carry the version of their request."""
        version = req.param("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        path = "/" + "/".join(segs)
        allowed = self.api_versions.allowed(path)
        if allowed is not None and version not in allowed:
            supported = ",".join(sorted(allowed, reverse=True))
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are"
                f" '{supported}'.",
            )

    def control(self, method: str, path: str, body: Json | None = None) -> tuple[int, Json]:
        """The ``/_test/...`` endpoints without HTTP, for an in-process server."""
        req = Request(
            method,
            "/_test/" + path.strip("/"),
            "",
            {},
            json.dumps(body).encode() if body is not None else b"",
        )
        resp = self.handle(req)
        return resp.status, resp.body or {}

    # ------------------------------------------------------------------ test-only endpoints

    def _control_request(self, req: Request, rest: list[str]) -> Response:
        what = "/".join(rest)
        m = req.method
        if rest[:1] == ["authz"]:
            return self.authz.control(m, rest[1:], req.json())
        if rest[:1] == ["gallery"]:
            return self.gallery.control(m, rest[1:], req.json())
        if (m, what) == ("GET", "counters"):
            return Response(200, self._counters())
        if (m, what) == ("GET", "state"):
            return Response(200, self._public_state())
        if (m, what) == ("POST", "reset"):
            self._reset()
            self._save()
            return Response(200, {"reset": True})
        if (m, what) == ("POST", "config"):
            body = req.json()
            unknown = set(body) - set(self.config)
            if unknown:
                raise ArmError(400, "InvalidParameter", f"unknown config keys: {sorted(unknown)}")
            self.config.update(body)
            self._save()
            return Response(200, self._public_config())
        if (m, what) == ("POST", "accounts"):
            account = self._register_account(req.json())
            self._save()
            return Response(200, account)
        if (m, what) == ("POST", "disks"):
            disk = self._register_disk(req.json())
            self._save()
            return Response(200, self._disk_counters(disk))
        if (m, what) == ("POST", "faults"):
            fault = self._add_fault(req.json())
            self._save()
            return Response(200, fault)
        if (m, what) == ("POST", "images"):
            image = self._force_image_state(req.json())
            self._save()
            return Response(200, self._image_json(image))
        if (m, what) == ("DELETE", "faults"):
            self.image_faults = []
            self.disk_faults = []
            self.throttle["remaining"] = 0
            self._save()
            return Response(200, {"cleared": True})
        raise ArmError(404, "ArmServerUnsupported", f"no test endpoint {m} /_test/{what}")

    def _counters(self) -> Json:
        creations = []
        for (sub, rg, name), count in sorted(self.image_creations.items()):
            creations.append(
                {"subscription": sub, "resource_group": rg, "name": name, "count": count}
            )
        disks = [self._disk_counters(d) for _, d in sorted(self.disks.items())]
        return {
            "image_creations": creations,
            "requests": dict(self.requests),
            "disks": disks,
            "tls_handshakes": self.tls_handshakes,
        }

    def count_handshake(self) -> None:
        with self._lock:
            self.tls_handshakes += 1

    @staticmethod
    def _disk_counters(d: Json) -> Json:
        return {
            "subscription": d["subscription"],
            "resource_group": d["resource_group"],
            "name": d["name"],
            "grants": d["grants"],
            "revokes": d["revokes"],
            "granted": d["granted"],
        }

    def _public_config(self) -> Json:
        """The config without secrets: storage account keys show as ``<redacted>``."""
        keys = {name: "<redacted>" for name in self.config.get("storage_keys") or {}}
        return {**self.config, "storage_keys": keys}

    def _public_state(self) -> Json:
        return {
            "config": self._public_config(),
            "resource_groups": [self._group_json(g) for g in self.groups.values()],
            "accounts": list(self.accounts.values()),
            "images": [self._image_json(i) for i in self.images.values()],
            "image_faults": self.image_faults,
            "throttle": self.throttle,
            "disks": [self._disk_json(d) for d in self.disks.values()],
            "disk_faults": self.disk_faults,
        }

    def _register_disk(self, body: Json) -> Json:
        try:
            sub, rg, name = body["subscription"], body["resource_group"], body["name"]
            size, url = int(body["size_bytes"]), str(body["access_url"])
        except KeyError as exc:
            raise ArmError(400, "InvalidParameter", f"missing {exc}") from None
        except (TypeError, ValueError):
            raise ArmError(400, "InvalidParameter", "size_bytes must be an integer") from None
        if size <= 0 or size % 512:
            raise ArmError(400, "InvalidParameter", "size_bytes must be a positive multiple of 512")
        disk = {
            "subscription": sub,
            "resource_group": rg,
            "name": name,
            "location": body.get("region") or "westeurope",
            "size_bytes": size,
            "access_url": url,  # handed out by beginGetAccess; never in /_test/state
            "granted": False,
            "grants": 0,
            "revokes": 0,
            "time_created": time.time(),
        }
        self.disks[_disk_key(sub, rg, name)] = disk
        return disk

    def _register_account(self, body: Json) -> Json:
        try:
            name, sub, region = body["name"], body["subscription"], body["region"]
        except KeyError as exc:
            raise ArmError(400, "InvalidParameter", f"missing {exc}") from None
        endpoint = body.get("blob_endpoint") or self.config["blob_endpoint_template"].format(
            name=name
        )
        account = {
            "name": name,
            "subscription": sub,
            "resource_group": body.get("resource_group"),
            "location": region,
            "blob_endpoint": endpoint,
            "sku": {"name": "Standard_LRS", "tier": "Standard"},
            "kind": "StorageV2",
            "tags": {},
            "creation_time": time.time(),
            "registered": True,
        }
        self.accounts[name.lower()] = account
        return account

    def _add_fault(self, body: Json) -> Json:
        kind = body.get("kind")
        if kind == "image_failure":
            try:
                fault = {"subscription": body["subscription"], "region": body["region"]}
            except KeyError as exc:
                raise ArmError(400, "InvalidParameter", f"missing {exc}") from None
            fault.update(
                code=body.get("code", "InternalExecutionError"),
                message=body.get(
                    "message", "An internal execution error occurred. Please retry later."
                ),
                remaining=body.get("count"),  # None: every creation until cleared
                status=body.get("status"),  # None: fail through the async operation
                # "Canceled": the operation (and the image) end Canceled rather than Failed
                state=body.get("state") or "Failed",
            )
            self.image_faults.append(fault)
            return fault
        if kind == "disk_grant_failure":
            fault = {
                "code": body.get("code", "InternalExecutionError"),
                "message": body.get(
                    "message", "An internal execution error occurred. Please retry later."
                ),
                "remaining": body.get("count"),  # None: every grant until cleared
                # None: the grant is accepted (202) and its operation fails (an error on poll);
                # a status refuses the beginGetAccess request itself.
                "status": body.get("status"),
            }
            self.disk_faults.append(fault)
            return fault
        if kind == "throttle":
            self.throttle = {
                "remaining": int(body.get("count", 1)),
                "retry_after": body.get("retry_after", 1),
                "include_reads": bool(body.get("include_reads", False)),
            }
            return self.throttle
        raise ArmError(400, "InvalidParameter", f"unknown fault kind {kind!r}")

    def _maybe_throttle(self, method: str) -> Response | None:
        t = self.throttle
        if t["remaining"] <= 0 or (method not in WRITE_METHODS and not t["include_reads"]):
            return None
        t["remaining"] -= 1
        self.requests["throttled"] += 1
        retry_after = t["retry_after"]
        return Response(
            429,
            {
                "error": {
                    "code": "TooManyRequests",
                    "message": "The request is being throttled as the limit has been reached for operation type - Write.",
                }
            },
            {"Retry-After": str(retry_after), "x-ms-ratelimit-remaining-subscription-writes": "0"},
        )

    # ------------------------------------------------------------------ routing

    def _route(self, req: Request, segs: list[str], low: list[str]) -> Response:
        for handler in self.route_handlers:
            answered = handler(self, req, segs, low)
            if answered is not None:
                return answered
        m = req.method
        if len(low) < 2 or low[0] != "subscriptions":
            return self._unsupported(req)
        sub = segs[1]
        rest, rest_orig = low[2:], segs[2:]
        n = len(rest)
        disks = ["providers", "microsoft.compute", "disks"]
        gallery = ["microsoft.compute", "galleries"]

        if n >= 2 and rest[-2] in OPERATION_SEGMENTS and m == "GET":
            return self._get_operation(req, rest_orig[-1])
        if n >= 2 and rest[-2] == "capsoperations" and m == "GET":
            return self.gallery.operation(rest_orig[-1])
        if n >= 6 and rest[0] == "resourcegroups" and rest[2:5] == ["providers", *gallery]:
            return self.gallery.route(req, sub, rest_orig[1], rest_orig[5:])
        if rest == ["providers", "microsoft.compute"] and m == "GET":
            self.requests["provider_get"] += 1
            # ARM lists display names ("West Europe"); a capitalised name stands in for one.
            locations = [name.capitalize() for name in sorted(REGIONS)]
            return Response(
                200,
                {
                    "id": f"/subscriptions/{sub}/providers/Microsoft.Compute",
                    "namespace": "Microsoft.Compute",
                    "registrationState": "Registered",
                    "resourceTypes": [{"resourceType": "images", "locations": locations}],
                },
            )
        if rest == ["resourcegroups"] and m == "GET":
            self.requests["rg_list"] += 1
            return self._list(
                req,
                (
                    self._group_json(g)
                    for g in self.groups.values()
                    if g["subscription"].lower() == sub.lower()
                ),
            )
        if n == 2 and rest[0] == "resourcegroups":
            return self._resource_group(req, sub, rest_orig[1])
        if rest == ["providers", "microsoft.storage", "checknameavailability"] and m == "POST":
            return self._check_name(req)
        if rest == ["providers", "microsoft.storage", "storageaccounts"] and m == "GET":
            self.requests["storage_list"] += 1
            return self._list(req, (self._account_json(a) for a in self._accounts_in(sub, None)))
        if rest == ["providers", "microsoft.compute", "images"] and m == "GET":
            self.requests["image_list"] += 1
            return self._list(req, (self._image_json(i) for i in self._images_in(sub, None)))
        if n in (5, 6) and rest[0] == "resourcegroups" and rest[2] == "providers":
            rg = rest_orig[1]
            provider = (rest[3], rest[4])
            if provider == ("microsoft.storage", "storageaccounts"):
                if n == 5 and m == "GET":
                    self.requests["storage_list"] += 1
                    self._require_group(sub, rg)
                    return self._list(
                        req, (self._account_json(a) for a in self._accounts_in(sub, rg))
                    )
                if n == 6:
                    return self._storage_account(req, sub, rg, rest_orig[5])
            if provider == ("microsoft.compute", "images"):
                if n == 5 and m == "GET":
                    self.requests["image_list"] += 1
                    self._require_group(sub, rg)
                    return self._list(req, (self._image_json(i) for i in self._images_in(sub, rg)))
                if n == 6:
                    return self._image(req, sub, rg, rest_orig[5])
        if n in (6, 7) and rest[0] == "resourcegroups" and rest[2:5] == disks:
            rg, name = rest_orig[1], rest_orig[5]
            if n == 6 and m == "GET":
                return self._get_disk(sub, rg, name)
            if n == 7 and m == "POST" and rest[6] == "begingetaccess":
                return self._grant_disk(req, sub, rg, name)
            if n == 7 and m == "POST" and rest[6] == "endgetaccess":
                return self._revoke_disk(req, sub, rg, name)
        return self._unsupported(req)

    def _unsupported(self, req: Request) -> Response:
        self.requests["unsupported"] += 1
        raise ArmError(
            404,
            "ArmServerUnsupported",
            f"The test ARM server does not implement {req.method} {req.path}",
        )

    def _list(self, req: Request, items: Any) -> Response:
        """One page of a list, as ARM pages: ``value`` and, while more follow, a ``nextLink``
        that repeats the request's query (api-version included) with a ``$skiptoken``."""
        everything = list(items)
        size = int(self.config.get("page_size") or 0)
        try:
            start = int(req.param("$skiptoken") or 0)
        except ValueError:
            raise ArmError(400, "InvalidSkipToken", "The $skiptoken is not valid.") from None
        if size <= 0:
            return Response(200, {"value": everything})
        body: Json = {"value": everything[start : start + size]}
        if start + size < len(everything):
            query = [(k, v) for k, v in parse_qsl(req.query) if k != "$skiptoken"]
            query.append(("$skiptoken", str(start + size)))
            body["nextLink"] = f"{req.base_url}{req.path}?{urlencode(query, safe='$')}"
        return Response(200, body)

    def _headers_for_lro(self) -> dict[str, str]:
        retry_after = self.config.get("lro_retry_after")
        return {"Retry-After": str(retry_after)} if retry_after is not None else {}

    def _new_operation(
        self, req: Request, sub: str, kind: str, url_path: str, delay: float, **extra: Any
    ) -> tuple[str, str]:
        op_id = str(uuid.uuid4())
        now = time.time()
        self.operations[op_id] = {"kind": kind, "start": now, "ready_at": now + delay, **extra}
        api = _api_version(req.query)
        url = f"{req.base_url}/subscriptions/{quote(sub)}/{url_path}/{op_id}?api-version={api}"
        if kind == "location":
            url += "&monitor=true"
        return op_id, url

    def _get_operation(self, req: Request, op_id: str) -> Response:
        op = self.operations.get(op_id)
        if op is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        done = time.time() >= op["ready_at"]
        if op["kind"] == "async":
            self.requests["async_operation_get"] += 1
            body: Json = {"name": op_id, "startTime": _iso(op["start"])}
            if not done:
                body["status"] = "InProgress"
                return Response(200, body, self._headers_for_lro())
            body["endTime"] = _iso(op["ready_at"])
            if op.get("error"):
                body["status"] = op.get("end_state") or "Failed"
                body["error"] = op["error"]
            else:
                body["status"] = "Succeeded"
            return Response(200, body)
        self.requests["location_get"] += 1
        if not done:
            return Response(202, None, self._headers_for_lro())
        final = op["final"]
        if op.get("error"):  # a failed operation of the location kind answers with its error
            return Response(int(op.get("status") or 400), {"error": op["error"]})
        if final == "disk_access":
            return Response(200, {"accessSAS": op["access_url"]})
        if final == "storage_account":
            account = self.accounts.get(op["account"].lower())
            if account is None:
                raise ArmError(
                    404, "ResourceNotFound", f"The storage account '{op['account']}' is gone."
                )
            return Response(200, self._account_json(account))
        return Response(int(final), None)

    # ------------------------------------------------------------------ resource groups

    def _require_group(self, sub: str, rg: str) -> Json:
        group = self.groups.get((sub.lower(), rg.lower()))
        if group is None:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        return group

    @staticmethod
    def _group_json(g: Json) -> Json:
        return {
            "id": f"/subscriptions/{g['subscription']}/resourceGroups/{g['name']}",
            "name": g["name"],
            "type": "Microsoft.Resources/resourceGroups",
            "location": g["location"],
            "tags": g["tags"],
            "properties": {"provisioningState": "Succeeded"},
        }

    def _resource_group(self, req: Request, sub: str, rg: str) -> Response:
        key = (sub.lower(), rg.lower())
        m = req.method
        if m == "HEAD":
            self.requests["rg_head"] += 1
            _check_group_name(rg)
            return Response(204 if key in self.groups else 404)
        if m == "GET":
            self.requests["rg_get"] += 1
            _check_group_name(rg)
            return Response(200, self._group_json(self._require_group(sub, rg)))
        if m == "PUT":
            self.requests["rg_put"] += 1
            _check_group_name(rg)
            body = req.json()
            location = body.get("location")
            if not location:
                raise ArmError(
                    400,
                    "LocationRequired",
                    "The location property is required for this definition.",
                )
            existing = self.groups.get(key)
            if existing is not None:
                if norm_region(existing["location"]) != norm_region(location):
                    raise ArmError(
                        409,
                        "InvalidResourceGroupLocation",
                        f"Invalid resource group location '{location}'. The Resource group already "
                        f"exists in location '{existing['location']}'.",
                    )
                if "tags" in body:
                    existing["tags"] = body["tags"] or {}
                return Response(200, self._group_json(existing))
            group = {
                "subscription": sub,
                "name": rg,
                "location": location,
                "tags": body.get("tags") or {},
            }
            self.groups[key] = group
            return Response(201, self._group_json(group))
        if m == "DELETE":
            self.requests["rg_delete"] += 1
            _check_group_name(rg)
            self._require_group(sub, rg)
            del self.groups[key]
            for name, account in list(self.accounts.items()):
                if (
                    account["subscription"].lower() == key[0]
                    and (account.get("resource_group") or "").lower() == key[1]
                ):
                    del self.accounts[name]
            for ikey in [k for k in self.images if k[:2] == key]:
                del self.images[ikey]
            _, url = self._new_operation(
                req, sub, "location", "operationresults", self.config["lro_delay"], final=200
            )
            return Response(202, None, {"Location": url, **self._headers_for_lro()})
        return self._unsupported(req)

    # ------------------------------------------------------------------ storage accounts

    def _accounts_in(self, sub: str, rg: str | None) -> list[Json]:
        return [
            a
            for a in self.accounts.values()
            if a["subscription"].lower() == sub.lower()
            and a.get("resource_group")
            and (rg is None or a["resource_group"].lower() == rg.lower())
        ]

    @staticmethod
    def _account_json(a: Json) -> Json:
        blob = a["blob_endpoint"]
        endpoints = {"blob": blob}
        if ".blob." in blob:
            for service in ("queue", "table", "file", "dfs", "web"):
                endpoints[service] = blob.replace(".blob.", f".{service}.", 1)
        elif ":10000/" in blob:  # Azurite's default ports
            endpoints["queue"] = blob.replace(":10000/", ":10001/", 1)
            endpoints["table"] = blob.replace(":10000/", ":10002/", 1)
        return {
            "id": (
                f"/subscriptions/{a['subscription']}/resourceGroups/{a['resource_group']}"
                f"/providers/Microsoft.Storage/storageAccounts/{a['name']}"
            ),
            "name": a["name"],
            "type": "Microsoft.Storage/storageAccounts",
            "location": a["location"],
            "tags": a["tags"],
            "sku": a["sku"],
            "kind": a["kind"],
            "properties": {
                "provisioningState": "Succeeded",
                "primaryEndpoints": endpoints,
                "primaryLocation": a["location"],
                "statusOfPrimary": "available",
                "creationTime": _iso(a["creation_time"]),
                "supportsHttpsTrafficOnly": True,
                "accessTier": "Hot",
            },
        }

    def _check_name(self, req: Request) -> Response:
        self.requests["storage_check_name"] += 1
        name = str(req.json().get("name", ""))
        if not ACCOUNT_NAME_RE.match(name):
            return Response(
                200,
                {
                    "nameAvailable": False,
                    "reason": "AccountNameInvalid",
                    "message": f"{name} is not a valid storage account name. Storage account name must be "
                    "between 3 and 24 characters in length and use numbers and lower-case letters only.",
                },
            )
        if name.lower() in self.accounts:
            return Response(
                200,
                {
                    "nameAvailable": False,
                    "reason": "AlreadyExists",
                    "message": f"The storage account named {name} is already taken.",
                },
            )
        return Response(200, {"nameAvailable": True})

    def _storage_account(self, req: Request, sub: str, rg: str, name: str) -> Response:
        m = req.method
        account = self.accounts.get(name.lower())
        mine = (
            account is not None
            and account["subscription"].lower() == sub.lower()
            and (account.get("resource_group") or "").lower() == rg.lower()
        )
        if m == "GET":
            self.requests["storage_get"] += 1
            self._require_group(sub, rg)
            if not mine:
                raise _not_found("Microsoft.Storage/storageAccounts", name, rg)
            return Response(200, self._account_json(account))  # type: ignore[arg-type]
        if m == "DELETE":
            self.requests["storage_delete"] += 1
            self._require_group(sub, rg)
            if not mine:
                return Response(204)
            del self.accounts[name.lower()]
            return Response(200)
        if m == "PUT":
            self.requests["storage_put"] += 1
            self._require_group(sub, rg)
            body = req.json()
            if not ACCOUNT_NAME_RE.match(name):
                raise ArmError(
                    400,
                    "AccountNameInvalid",
                    f"{name} is not a valid storage account name. Storage account name must be "
                    "between 3 and 24 characters in length and use numbers and lower-case letters only.",
                )
            location = body.get("location")
            if not location:
                raise ArmError(
                    400,
                    "LocationRequired",
                    "The location property is required for this definition.",
                )
            adopt = (
                account is not None
                and account.get("registered")
                and not account.get("resource_group")
                and account["subscription"].lower() == sub.lower()
            )
            if account is not None and not mine and not adopt:
                raise ArmError(
                    409,
                    "StorageAccountAlreadyTaken",
                    f"The storage account named {name} is already taken.",
                )
            if account is not None:
                if norm_region(account["location"]) != norm_region(location):
                    raise ArmError(
                        409,
                        "InvalidResourceLocation",
                        f"The resource '{name}' already exists in location "
                        f"'{account['location']}' in resource group '{rg}'. A resource with "
                        f"the same name cannot be created in location '{location}'.",
                    )
                account["resource_group"] = account.get("resource_group") or rg
                if "tags" in body:
                    account["tags"] = body["tags"] or {}
                return Response(200, self._account_json(account))
            account = {
                "name": name,
                "subscription": sub,
                "resource_group": rg,
                "location": location,
                "blob_endpoint": self.config["blob_endpoint_template"].format(name=name),
                "sku": body.get("sku") or {"name": "Standard_LRS", "tier": "Standard"},
                "kind": body.get("kind") or "StorageV2",
                "tags": body.get("tags") or {},
                "creation_time": time.time(),
                "registered": False,
            }
            self.accounts[name.lower()] = account
            _, url = self._new_operation(
                req,
                sub,
                "location",
                # as Storage answers a create: /providers/Microsoft.Storage/operations/<id>?monitor=true
                "providers/Microsoft.Storage/operations",
                self.config["lro_delay"],
                final="storage_account",
                account=name,
            )
            return Response(202, None, {"Location": url, **self._headers_for_lro()})
        return self._unsupported(req)

    # ------------------------------------------------------------------ images

    def _images_in(self, sub: str, rg: str | None) -> list[Json]:
        return [
            i
            for (s, r, _), i in self.images.items()
            if s == sub.lower() and (rg is None or r == rg.lower())
        ]

    def _image_state(self, image: Json) -> str:
        forced = image.get("forced")
        if forced is not None:
            return str(forced["state"])
        op = self.operations.get(image["operation"])
        if op is None or time.time() >= op["ready_at"]:
            if op is not None and op.get("error"):
                return str(op.get("end_state") or "Failed")
            return "Succeeded"
        return "Creating"

    def _force_image_state(self, body: Json) -> Json:
        """``/_test/images``: put an image in ``state`` for ``seconds`` (``None``: until told
        otherwise), then ``then``: another state, ``"gone"`` (deleted), or ``None`` (back to
        what its creation says). An image that does not exist is made, Succeeded, first."""
        try:
            sub, rg, name = body["subscription"], body["resource_group"], body["name"]
            state = body["state"]
        except KeyError as exc:
            raise ArmError(400, "InvalidParameter", f"missing {exc}") from None
        then = body.get("then")
        # Any state string is allowed (a state Azure may add tomorrow tests its readers).
        if not isinstance(state, str) or not state:
            raise ArmError(400, "InvalidParameter", "state must be a provisioning state")
        if then is not None and then not in (*IMAGE_STATES, "gone"):
            raise ArmError(400, "InvalidParameter", f"then must be one of {IMAGE_STATES} or 'gone'")
        key = (sub.lower(), rg.lower(), name.lower())
        image = self.images.get(key)
        if image is None:
            image = self._seed_image(body)
            self.images[key] = image
        seconds = body.get("seconds")
        until = None if seconds is None else time.time() + float(seconds)
        image["forced"] = {"state": state, "until": until, "then": then}
        return image

    def _seed_image(self, body: Json) -> Json:
        """An image made outside imagedist (by hand, by another tool): it exists, settled."""
        op_id = str(uuid.uuid4())
        now = time.time()
        self.operations[op_id] = {"kind": "async", "start": now, "ready_at": now}
        return {
            "subscription": body["subscription"],
            "resource_group": body["resource_group"],
            "name": body["name"],
            "location": body.get("region") or "westeurope",
            "tags": body.get("tags") or {},
            "os_disk": {
                "osType": body.get("os_type") or "Linux",
                "osState": "Generalized",
                "blobUri": body.get("blob_uri")
                or "https://elsewhere.blob.core.windows.net/vhds/seeded.vhd",
            },
            "data_disks": [],
            "zone_resilient": False,
            "hyper_v_generation": "V1",
            "operation": op_id,
            "operation_url": "",
        }

    def _settle_forced_images(self) -> None:
        """Images whose forced state ran out move on: to their next state, or away."""
        now = time.time()
        for key, image in list(self.images.items()):
            forced = image.get("forced")
            if forced is None or forced["until"] is None or now < forced["until"]:
                continue
            then = forced.get("then")
            if then == "gone":
                del self.images[key]
            elif then is None:
                image["forced"] = None
            else:
                image["forced"] = {"state": then, "until": None, "then": None}

    def _source_blob_error(self, blob_uri: str, account: str) -> Json | None:
        """Azure reads the VHD before it makes the image: what it would fail the image with."""
        from .sourceblob import source_blob_problem  # needs azure-storage-blob: load on use

        key = (self.config.get("storage_keys") or {}).get(account.lower()) or (
            self.config.get("storage_keys") or {}
        ).get(account)
        if not key:
            return {
                "code": "ArmServerNoStorageKey",
                "message": f"the test ARM server checks source blobs but has no key for storage"
                f" account '{account}': pass it in the config's storage_keys",
            }
        problem = source_blob_problem(blob_uri, account, key)
        return {"code": problem[0], "message": problem[1]} if problem else None

    def _image_json(self, i: Json) -> Json:
        return {
            "id": (
                f"/subscriptions/{i['subscription']}/resourceGroups/{i['resource_group']}"
                f"/providers/Microsoft.Compute/images/{i['name']}"
            ),
            "name": i["name"],
            "type": "Microsoft.Compute/images",
            "location": i["location"],
            "tags": i["tags"],
            "properties": {
                "storageProfile": {
                    "osDisk": i["os_disk"],
                    "dataDisks": i["data_disks"],
                    "zoneResilient": i["zone_resilient"],
                },
                "provisioningState": self._image_state(i),
                "hyperVGeneration": i["hyper_v_generation"],
            },
        }

    def _account_for_blob(self, blob_uri: str) -> tuple[str, Json | None]:
        lowered = blob_uri.lower()
        for account in self.accounts.values():
            endpoint = account["blob_endpoint"].lower().rstrip("/") + "/"
            if lowered.startswith(endpoint):
                return account["name"], account
        parts = urlsplit(blob_uri)
        host = parts.hostname or ""
        if ".blob." in host:  # https://<account>.blob.core.windows.net/<container>/<blob>
            name = host.split(".", 1)[0]
        else:  # path style (Azurite): http://127.0.0.1:10000/<account>/<container>/<blob>
            name = next((s for s in parts.path.split("/") if s), "")
        return name, self.accounts.get(name.lower())

    def _image(self, req: Request, sub: str, rg: str, name: str) -> Response:
        m = req.method
        key = (sub.lower(), rg.lower(), name.lower())
        if m == "GET":
            self.requests["image_get"] += 1
            self._require_group(sub, rg)
            image = self.images.get(key)
            if image is None:
                raise _not_found("Microsoft.Compute/images", name, rg)
            return Response(200, self._image_json(image))
        if m == "DELETE":
            self.requests["image_delete"] += 1
            self._require_group(sub, rg)
            return self._delete_image(req, sub, key)
        if m == "PUT":
            self.requests["image_put"] += 1
            return self._put_image(req, sub, rg, name, key)
        return self._unsupported(req)

    def _delete_image(self, req: Request, sub: str, key: tuple[str, str, str]) -> Response:
        """202 with both ``Azure-AsyncOperation`` and ``Location``, as Compute answers a delete;
        the image reads ``Deleting`` until the operation ends (``lro_delay``), then is gone."""
        image = self.images.get(key)
        if image is None:
            return Response(204)
        if self._image_state(image) == "Updating":
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"The image '{image['name']}' is being updated; it cannot be deleted until that"
                " operation has completed.",
            )
        delay = float(self.config["lro_delay"])
        if delay > 0:
            image["forced"] = {"state": "Deleting", "until": time.time() + delay, "then": "gone"}
        else:
            del self.images[key]
        operations = (
            f"providers/Microsoft.Compute/locations/{norm_region(image['location'])}/operations"
        )
        _, async_url = self._new_operation(req, sub, "async", operations, delay)
        _, location_url = self._new_operation(req, sub, "location", operations, delay, final=204)
        headers = {"Azure-AsyncOperation": async_url, "Location": location_url}
        return Response(202, None, {**headers, **self._headers_for_lro()})

    def _put_image(
        self, req: Request, sub: str, rg: str, name: str, key: tuple[str, str, str]
    ) -> Response:
        self._require_group(sub, rg)
        body = req.json()
        location = body.get("location")
        if not location:
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        props = body.get("properties") or {}
        profile = props.get("storageProfile") or {}
        os_disk = dict(profile.get("osDisk") or {})
        blob_uri = os_disk.get("blobUri")
        if not blob_uri:
            raise ArmError(
                400,
                "InvalidParameter",
                "The test ARM server only creates images from a VHD: "
                "properties.storageProfile.osDisk.blobUri is required.",
            )
        if os_disk.get("osType") not in ("Linux", "Windows"):
            raise ArmError(
                400,
                "InvalidParameter",
                "Required parameter 'osDisk.osType' is missing or invalid (Linux or Windows).",
            )
        if os_disk.get("osState") not in ("Generalized", "Specialized"):
            raise ArmError(
                400,
                "InvalidParameter",
                "Required parameter 'osDisk.osState' is missing or invalid (Generalized or Specialized).",
            )

        existing = self.images.get(key)
        if existing is not None:
            if norm_region(existing["location"]) != norm_region(location):
                raise ArmError(
                    409,
                    "InvalidResourceLocation",
                    f"The resource '{name}' already exists in location '{existing['location']}' "
                    f"in resource group '{rg}'. A resource with the same name cannot be created "
                    f"in location '{location}'. Please select a new resource name.",
                )
            if existing["os_disk"].get("blobUri") != blob_uri:
                raise ArmError(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing property 'osDisk.blobUri' is not allowed.",
                )
            state = self._image_state(existing)
            if state == "Deleting":
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"The image '{name}' is being deleted; it cannot be changed until the"
                    " deletion has completed.",
                )
            if state not in ("Failed", "Canceled"):  # the same image again: nothing is created
                if "tags" in body:
                    existing["tags"] = body["tags"] or {}
                headers = {}
                if state == "Creating":
                    op_url = existing["operation_url"]
                    headers["Azure-AsyncOperation"] = op_url
                return Response(200, self._image_json(existing), headers)
            # a failed image is created again by a new PUT, as in Azure

        account_name, account = self._account_for_blob(blob_uri)
        if account is None:
            raise ArmError(
                400,
                "InvalidParameter",
                f"The blob '{blob_uri}' is not in a storage account known to this subscription "
                f"(account '{account_name}' not found); the source blob must be in a storage "
                "account in the same subscription and region as the image.",
            )
        if account["subscription"].lower() != sub.lower() or norm_region(
            account["location"]
        ) != norm_region(location):
            raise ArmError(
                400,
                "InvalidParameter",
                f"The source blob '{blob_uri}' is in storage account '{account['name']}' "
                f"(subscription '{account['subscription']}', region '{account['location']}'); "
                f"it must be in the same subscription and region as the image "
                f"(subscription '{sub}', region '{location}').",
            )

        fault = self._take_fault(sub, location)
        if fault is not None and fault.get("status"):
            raise ArmError(int(fault["status"]), fault["code"], fault["message"])
        error = {"code": fault["code"], "message": fault["message"]} if fault else None
        end_state = fault.get("state", "Failed") if fault else "Succeeded"
        if error is None and self.config.get("validate_source_blobs"):
            error = self._source_blob_error(blob_uri, account["name"])
            end_state = "Failed" if error else end_state
        op_id, op_url = self._new_operation(
            req,
            sub,
            "async",
            f"providers/Microsoft.Compute/locations/{norm_region(location)}/operations",
            float(self.config["image_delay"]),
            error=error,
            end_state=end_state,
        )
        image = {
            "subscription": sub,
            "resource_group": rg,
            "name": name,
            "location": location,
            "tags": body.get("tags") or {},
            "os_disk": os_disk,
            "data_disks": profile.get("dataDisks") or [],
            "zone_resilient": bool(profile.get("zoneResilient", False)),
            "hyper_v_generation": props.get("hyperVGeneration") or "V1",
            "operation": op_id,
            "operation_url": op_url,
        }
        self.images[key] = image
        self.image_creations[key] += 1
        return Response(
            201,
            self._image_json(image),
            {"Azure-AsyncOperation": op_url, **self._headers_for_lro()},
        )

    # ------------------------------------------------------------------ managed disks

    def _disk(self, sub: str, rg: str, name: str) -> Json:
        disk = self.disks.get(_disk_key(sub, rg, name))
        if disk is not None:
            return disk
        known_group = (sub.lower(), rg.lower()) in self.groups or any(
            k[:2] == (sub.lower(), rg.lower()) for k in self.disks
        )
        if not known_group:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        raise _not_found("Microsoft.Compute/disks", name, rg)

    @staticmethod
    def _disk_json(d: Json) -> Json:
        size = int(d["size_bytes"])
        return {
            "id": (
                f"/subscriptions/{d['subscription']}/resourceGroups/{d['resource_group']}"
                f"/providers/Microsoft.Compute/disks/{d['name']}"
            ),
            "name": d["name"],
            "type": "Microsoft.Compute/disks",
            "location": d["location"],
            "sku": {"name": "Standard_LRS", "tier": "Standard"},
            "properties": {
                "timeCreated": _iso(d["time_created"]),
                "creationData": {"createOption": "Empty"},
                "diskSizeGB": -(-size // (1024**3)),
                "diskSizeBytes": size,
                "diskState": "ActiveSAS" if d["granted"] else "Unattached",
                "provisioningState": "Succeeded",
            },
        }

    def _get_disk(self, sub: str, rg: str, name: str) -> Response:
        self.requests["disk_get"] += 1
        return Response(200, self._disk_json(self._disk(sub, rg, name)))

    def _grant_disk(self, req: Request, sub: str, rg: str, name: str) -> Response:
        self.requests["disk_grant"] += 1
        disk = self._disk(sub, rg, name)
        body = req.json()
        access, seconds = body.get("access"), body.get("durationInSeconds")
        if access not in ("Read", "Write"):
            raise ArmError(
                400, "InvalidParameter", "Required parameter 'access' is missing or invalid."
            )
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            raise ArmError(
                400,
                "InvalidParameter",
                "Required parameter 'durationInSeconds' is missing or invalid.",
            )
        fault = self._take_disk_fault()
        if fault is not None and fault.get("status"):
            raise ArmError(int(fault["status"]), fault["code"], fault["message"])
        disk["grants"] += 1
        extra: Json = {"access_url": disk["access_url"]}
        if fault is not None:
            extra = {"error": {"code": fault["code"], "message": fault["message"]}}
        else:
            disk["granted"] = True
        _, url = self._new_operation(
            req,
            sub,
            "location",
            f"providers/Microsoft.Compute/locations/{norm_region(disk['location'])}/operations",
            self.config["lro_delay"],
            final="disk_access",
            **extra,
        )
        return Response(202, None, {"Location": url, **self._headers_for_lro()})

    def _revoke_disk(self, req: Request, sub: str, rg: str, name: str) -> Response:
        self.requests["disk_revoke"] += 1
        disk = self._disk(sub, rg, name)
        disk["revokes"] += 1
        disk["granted"] = False
        _, url = self._new_operation(
            req,
            sub,
            "location",
            f"providers/Microsoft.Compute/locations/{norm_region(disk['location'])}/operations",
            self.config["lro_delay"],
            final=200,
        )
        return Response(202, None, {"Location": url, **self._headers_for_lro()})

    def _take_disk_fault(self) -> Json | None:
        for fault in self.disk_faults:
            if fault["remaining"] is not None:
                if fault["remaining"] <= 0:
                    continue
                fault["remaining"] -= 1
            return fault
        return None

    def _take_fault(self, sub: str, region: str) -> Json | None:
        for fault in self.image_faults:
            if fault["subscription"].lower() == sub.lower() and norm_region(
                fault["region"]
            ) == norm_region(region):
                if fault["remaining"] is not None:
                    if fault["remaining"] <= 0:
                        continue
                    fault["remaining"] -= 1
                return fault
        return None


def _disk_key(sub: str, rg: str, name: str) -> tuple[str, str, str]:
    return (sub.lower(), rg.lower(), name.lower())


def _api_version(query: str) -> str:
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if k == "api-version" and v:
            return v
    return "2024-01-01"


# ---------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes: without this, Nagle delays each answer ~40 ms.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "armserver/1"
    timeout = 60
    server: _HttpsServer

    def setup(self) -> None:
        # TLS handshake here, in this request's thread, not in the accept loop
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        self.server.state.count_handshake()
        super().setup()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._read_body(headers)
        host = headers.get("host") or f"127.0.0.1:{self.server.server_address[1]}"
        req = Request(self.command, split.path, split.query, headers, body, f"https://{host}")
        resp = self.server.state.handle(req)
        payload = b"" if resp.body is None else json.dumps(resp.body).encode()
        self.send_response(resp.status)
        if resp.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        if "x-ms-client-request-id" in headers:
            self.send_header("x-ms-client-request-id", headers["x-ms-client-request-id"])
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:  # request line only: never headers, so never the token
            sys.stderr.write(f"armserver: {self.address_string()} {format % args}\n")


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many worker processes connect at once
    state: ArmState
    verbose: bool = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ssl.SSLError, resets, timeouts: a client went away
            return
        super().handle_error(request, client_address)


class ArmServer(Control):
    """The HTTPS test ARM server in this process, on 127.0.0.1 and an ephemeral port.

    ``with ArmServer() as server:`` starts it; ``server.url`` and ``server.ca_file`` are what a
    client needs; the :class:`~armserver.control.Control` methods (counters, faults, ...) work
    as on a server in a subprocess.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        **state_options: Any,
    ) -> None:
        self.state = ArmState(**state_options)
        self._host, self._port = host, port
        self._cert_dir_arg = cert_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._verbose = verbose
        self._httpd: _HttpsServer | None = None
        self._thread: threading.Thread | None = None
        self.certs: CertPaths | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self.port}"

    @property
    def ca_file(self) -> str:
        assert self.certs is not None, "server not started"
        return str(self.certs.ca_file)

    def start(self) -> ArmServer:
        if self._cert_dir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="armserver-")
            cert_dir: str | os.PathLike[str] = self._tmp.name
        else:
            cert_dir = self._cert_dir_arg
        self.certs = ensure_certs(cert_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certs.cert_file, self.certs.key_file)
        httpd = _HttpsServer((self._host, self._port), _Handler)
        httpd.socket = ctx.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        httpd.state = self.state
        httpd.verbose = self._verbose
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="armserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._httpd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ArmServer:
        return self.start() if self._httpd is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _control(self, method: str, path: str, body: Json | None = None) -> Json:
        status, result = self.state.control(method, path, body)
        if status >= 400:
            raise RuntimeError(f"armserver control {method} {path} failed: {status} {result}")
        return result


def _check_group_name(name: str) -> None:
    """Refuse a resource group name with characters ARM does not allow, as ARM does on every
    method: 400 InvalidResourceGroup naming the characters (letters and digits of any script,
    '-', '.', '(', ')' and '_' are allowed)."""
    invalid = "".join(c for c in name if not (c.isalnum() or c in "-._()"))
    if invalid:
        raise ArmError(
            400,
            "InvalidResourceGroup",
            f"The provided resource group name '{name}' has these invalid characters:"
            f" '{invalid}'. The name can only be a letter, digit, '-', '.', '(', ')' or '_'.",
        )
