"""Role-based access control and resource provider registration in the ARM test server.

Role assignments are resources, as in Azure: ``PUT/GET/DELETE {scope}/providers/
Microsoft.Authorization/roleAssignments/{name}`` (the name a GUID) and ``GET {scope}/providers/
Microsoft.Authorization/roleAssignments?$filter=principalId eq '...'`` (those at, above and below
the scope). When enforcement is on, every request is an action on a scope, and a principal (the
``oid`` claim of its bearer token) that no assignment at or above the scope allows it gets Azure's
403 ``AuthorizationFailed``. Enforcement is off by default, so tests that do not care need no
assignments.

Resource providers start registered. A provider a test unregistered answers every request under
its namespace with 409 ``MissingSubscriptionRegistration`` until ``POST /subscriptions/{s}/
providers/{ns}/register``, which reads ``Registering`` for ``register_delay`` seconds, then
``Registered``.

Test-only endpoints (no token), under ``/_test/authz``:

* ``GET  /_test/authz``              ``{"enforce", "register_delay", "assignments", "providers"}``
* ``POST /_test/authz``              ``{"enforce"?: bool, "register_delay"?: s}``
* ``POST /_test/authz/assignments``  ``{"scope", "principal_id", "role"}`` (a role's name or id),
  made without any check: how a test gives its principal Contributor on a subscription
* ``POST /_test/authz/providers``    ``{"subscription", "namespace", "state": "NotRegistered"}``
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagedist._domain.regions import REGIONS

from .tokens import DEFAULT_TENANT, mint_token

if TYPE_CHECKING:
    from .control import Control
    from .server import Request, Response

Json = dict[str, Any]

AUTHORIZATION = "microsoft.authorization"
ROLE_ASSIGNMENTS = "roleassignments"
GUID_RE = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$", re.IGNORECASE)
DEFAULT_REGISTER_DELAY = 0.2
OPERATION_SEGMENTS = frozenset({"operations", "asyncoperations", "operationresults"})

#: The built-in roles tests use: id -> (name, actions, not actions). Data roles allow data actions
#: (not modelled here) and a few control-plane ones.
ROLES: dict[str, tuple[str, list[str], list[str]]] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": ("Owner", ["*"], []),
    "b24988ac-6180-42a0-ab88-20f7382dd24c": (
        "Contributor",
        ["*"],
        [
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
    ),
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": ("Reader", ["*/read"], []),
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": (
        "User Access Administrator",
        ["*/read", "Microsoft.Authorization/*"],
        [],
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": (
        "Storage Blob Data Contributor",
        [
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        [],
    ),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": (
        "Storage Table Data Contributor",
        ["Microsoft.Storage/storageAccounts/tableServices/tables/*"],
        [],
    ),
}
ROLE_IDS = {name.lower(): role_id for role_id, (name, _, _) in ROLES.items()}


def principal_token(object_id: str, tenant_id: str = DEFAULT_TENANT) -> str:
    """A bearer token the server accepts (audience, tenant, expiry), for a test's identity."""
    return mint_token(oid=object_id, tenant=tenant_id)


def token_principal(authorization: str) -> str:
    """The ``oid`` of the bearer token in an Authorization header, or ``""`` if it has none."""
    token = authorization.partition(" ")[2].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return ""
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return oid if isinstance(oid, str) else ""


def _matches(pattern: str, action: str) -> bool:
    regex = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
    return re.match(regex, action, re.IGNORECASE) is not None


def _within(scope: str, outer: str) -> bool:
    """Whether ``scope`` is ``outer`` or below it (segment-wise, without case)."""
    inner_parts = [p for p in scope.lower().split("/") if p]
    outer_parts = [p for p in outer.lower().split("/") if p]
    return inner_parts[: len(outer_parts)] == outer_parts


def action_and_scope(method: str, segs: list[str]) -> tuple[str, str]:
    """The Azure action a request performs and the scope it performs it on."""
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
    low = [s.lower() for s in segs]
    scope_segs = list(segs)
    if "providers" not in low[2:]:
        rtype = (
            "Microsoft.Resources/subscriptions/resourceGroups"
            if "resourcegroups" in low
            else "Microsoft.Resources/subscriptions"
        )
        return f"{rtype}/{verb.get(method, 'action')}", "/" + "/".join(scope_segs)
    p = len(low) - 1 - low[::-1].index("providers")
    namespace, rest = segs[p + 1] if p + 1 < len(segs) else "", segs[p + 2 :]
    if method == "POST" and len(rest) % 2 == 1:
        types = rest[:-1][0::2]
        action = "/".join([namespace, *types, rest[-1], "action"])
        scope_segs = segs[:-1]
    elif not rest:
        action = f"Microsoft.Resources/subscriptions/providers/{verb.get(method, 'action')}"
    else:
        action = "/".join([namespace, *rest[0::2], verb.get(method, "action")])
    return action, "/" + "/".join(scope_segs)


class Authz:
    """Role assignments, enforcement and provider registration; the server holds one."""

    def __init__(self, respond: Callable[[int, Any], Response], error: type[Exception]) -> None:
        """:param respond: makes a server response (status, body).
        :param error: the server's ARM error type, raised as ``error(status, code, message)``.
        """
        self._respond, self._error = respond, error
        self.enforce = False
        self.register_delay = DEFAULT_REGISTER_DELAY
        self.assignments: dict[str, Json] = {}  # lower-case id -> assignment
        # (subscription, namespace), lower-case -> {"state", "ready_at"?, "namespace"}
        self.providers: dict[tuple[str, str], Json] = {}

    # -------------------------------------------------------------- test endpoints

    def control(self, method: str, rest: list[str], body: Json) -> Response:
        what = "/".join(rest)
        if (method, what) == ("GET", ""):
            return self._respond(200, self._dump())
        if (method, what) == ("POST", ""):
            self.enforce = bool(body.get("enforce", self.enforce))
            self.register_delay = float(body.get("register_delay", self.register_delay))
            return self._respond(200, self._dump())
        if (method, what) == ("POST", "assignments"):
            role_id = self._role_id(str(body.get("role", "")))
            scope = "/" + str(body["scope"]).strip("/")
            name = str(uuid.uuid4())
            return self._respond(200, self._store(scope, name, role_id, str(body["principal_id"])))
        if (method, what) == ("POST", "providers"):
            key = (str(body["subscription"]).lower(), str(body["namespace"]).lower())
            self.providers[key] = {"state": "NotRegistered", "namespace": body["namespace"]}
            return self._respond(200, self._dump())
        raise self._error(404, "ArmServerUnsupported", f"no test endpoint {method} authz/{what}")

    def _dump(self) -> Json:
        return {
            "enforce": self.enforce,
            "register_delay": self.register_delay,
            "assignments": [self._json(a) for a in self.assignments.values()],
            "providers": [
                {"subscription": s, "namespace": p["namespace"], "state": self._state(s, n)}
                for (s, n), p in self.providers.items()
            ],
        }

    def _role_id(self, role: str) -> str:
        role_id = ROLE_IDS.get(role.lower(), role.rsplit("/", 1)[-1].lower())
        if role_id not in ROLES:
            raise self._error(400, "InvalidParameter", f"unknown role {role!r}")
        return role_id

    # -------------------------------------------------------------- requests

    def intercept(self, req: Request, segs: list[str], low: list[str]) -> Response | None:
        """Answer or refuse the request if it is about providers or role assignments, its
        provider is not registered, or its principal may not make it; None lets it through."""
        if len(low) < 2 or low[0] != "subscriptions":
            return None
        if len(low) >= 2 and low[-2] in OPERATION_SEGMENTS:
            return None  # polling what was already allowed
        sub = segs[1]
        self._authorize(req, segs)
        if low[2:3] == ["providers"] and len(low) in (4, 5):
            provider = self._provider(req, sub, segs[3], low[4:])
            if provider is not None:
                return provider
        self._require_registered(sub, low)
        if AUTHORIZATION in low and ROLE_ASSIGNMENTS in low:
            return self._role_assignments(req, segs, low)
        return None

    def _authorize(self, req: Request, segs: list[str]) -> None:
        if not self.enforce:
            return
        principal = token_principal(req.headers.get("authorization", ""))
        action, scope = action_and_scope(req.method, segs)
        if not self._allowed(principal, action, scope):
            raise self._error(
                403,
                "AuthorizationFailed",
                f"The client '{principal}' with object id '{principal}' does not have"
                f" authorization to perform action '{action}' over scope '{scope}' or the scope"
                " is invalid. If access was recently granted, please refresh your credentials.",
            )

    def _allowed(self, principal: str, action: str, scope: str) -> bool:
        for assignment in self.assignments.values():
            if assignment["principal_id"].lower() != principal.lower() or not principal:
                continue
            if not _within(scope, assignment["scope"]):
                continue
            _, actions, not_actions = ROLES[assignment["role_id"]]
            if any(_matches(a, action) for a in actions) and not any(
                _matches(n, action) for n in not_actions
            ):
                return True
        return False

    def has_role(self, principal: str, scope: str, role_id: str) -> bool:
        """Whether an assignment at or above ``scope`` gives the principal the role (the data
        plane's check in tests)."""
        return any(
            a["principal_id"].lower() == principal.lower()
            and a["role_id"] == role_id
            and _within(scope, a["scope"])
            for a in self.assignments.values()
        )

    # -------------------------------------------------------------- providers

    def _state(self, sub: str, namespace: str) -> str:
        entry = self.providers.get((sub.lower(), namespace.lower()))
        if entry is None:
            return "Registered"
        if entry["state"] == "Registering" and time.time() >= entry["ready_at"]:
            del self.providers[(sub.lower(), namespace.lower())]
            return "Registered"
        return str(entry["state"])

    def _provider(self, req: Request, sub: str, namespace: str, rest: list[str]) -> Response | None:
        state = self._state(sub, namespace)
        if req.method == "POST" and rest == ["register"]:
            if state != "Registered":
                self.providers[(sub.lower(), namespace.lower())] = {
                    "state": "Registering",
                    "ready_at": time.time() + self.register_delay,
                    "namespace": namespace,
                }
                state = "Registering"
            return self._respond(200, self._provider_json(sub, namespace, state))
        if req.method == "GET" and not rest:
            if state == "Registered" and namespace.lower() == "microsoft.compute":
                return None  # the server's own answer, with the regions
            return self._respond(200, self._provider_json(sub, namespace, state))
        return None

    @staticmethod
    def _provider_json(sub: str, namespace: str, state: str) -> Json:
        types: list[Json] = []
        if namespace.lower() == "microsoft.compute":
            locations = [name.capitalize() for name in sorted(REGIONS)]
            types = [{"resourceType": "images", "locations": locations}]
        return {
            "id": f"/subscriptions/{sub}/providers/{namespace}",
            "namespace": namespace,
            "registrationState": state,
            "resourceTypes": types,
        }

    def _require_registered(self, sub: str, low: list[str]) -> None:
        if "providers" not in low:
            return
        namespace = low[low.index("providers") + 1] if low.index("providers") + 1 < len(low) else ""
        if not namespace or self._state(sub, namespace) == "Registered":
            return
        shown = self.providers[(sub.lower(), namespace)]["namespace"]
        raise self._error(
            409,
            "MissingSubscriptionRegistration",
            f"The subscription is not registered to use namespace '{shown}'. See"
            " https://aka.ms/rps-not-found for how to register subscriptions.",
        )

    # -------------------------------------------------------------- role assignments

    def _role_assignments(self, req: Request, segs: list[str], low: list[str]) -> Response:
        at = len(low) - 1 - low[::-1].index(AUTHORIZATION)
        scope = "/" + "/".join(segs[: at - 1])
        names = segs[at + 2 :]
        if not names and req.method == "GET":
            return self._respond(200, {"value": self._list(scope, req.query)})
        if len(names) != 1:
            raise self._error(404, "ArmServerUnsupported", f"no role assignment route {req.path}")
        name = names[0]
        key = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}".lower()
        if req.method == "GET":
            found = self.assignments.get(key)
            if found is None:
                raise self._error(
                    404, "RoleAssignmentNotFound", "The role assignment does not exist."
                )
            return self._respond(200, self._json(found))
        if req.method == "DELETE":
            found = self.assignments.pop(key, None)
            return self._respond(200, self._json(found)) if found else self._respond(204, None)
        if req.method == "PUT":
            return self._put(req, scope, name, key)
        raise self._error(404, "ArmServerUnsupported", f"no role assignment route {req.path}")

    def _put(self, req: Request, scope: str, name: str, key: str) -> Response:
        if not GUID_RE.match(name):
            raise self._error(
                400,
                "InvalidRoleAssignmentId",
                f"The role assignment ID '{name}' is not valid. The role assignment ID must be"
                " a GUID.",
            )
        props = req.json().get("properties") or {}
        definition = str(props.get("roleDefinitionId") or "")
        principal = str(props.get("principalId") or "")
        role_id = definition.rsplit("/", 1)[-1].lower()
        if "/providers/microsoft.authorization/roledefinitions/" not in definition.lower() or (
            role_id not in ROLES
        ):
            raise self._error(
                400,
                "RoleDefinitionDoesNotExist",
                f"The specified role definition with ID '{role_id}' does not exist.",
            )
        if not GUID_RE.match(principal):
            raise self._error(
                400,
                "InvalidPrincipalId",
                "A valid principal ID must be provided for role assignment.",
            )
        for existing in self.assignments.values():
            same = (
                existing["scope"].lower(),
                existing["role_id"],
                existing["principal_id"].lower(),
            )
            if same == (scope.lower(), role_id, principal.lower()):
                raise self._error(
                    409, "RoleAssignmentExists", "The role assignment already exists."
                )
        if key in self.assignments:
            raise self._error(
                409,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            )
        return self._respond(201, self._store(scope, name, role_id, principal))

    def _store(self, scope: str, name: str, role_id: str, principal: str) -> Json:
        assignment = {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
            "name": name,
            "scope": scope,
            "role_id": role_id,
            "principal_id": principal,
            "subscription": scope.split("/")[2] if scope.count("/") >= 2 else "",
        }
        self.assignments[assignment["id"].lower()] = assignment
        return self._json(assignment)

    def _list(self, scope: str, query: str) -> list[Json]:
        from urllib.parse import parse_qs

        where = (parse_qs(query).get("$filter") or [""])[0]
        principal = re.search(r"principalId\s+eq\s+'([^']+)'", where, re.IGNORECASE)
        at_scope = "atscope()" in where.lower()
        found = []
        for a in self.assignments.values():
            related = _within(scope, a["scope"]) or (not at_scope and _within(a["scope"], scope))
            if related and (principal is None or a["principal_id"].lower() == principal[1].lower()):
                found.append(self._json(a))
        return found

    @staticmethod
    def _json(a: Json) -> Json:
        sub = a["subscription"]
        prefix = f"/subscriptions/{sub}" if sub else ""
        return {
            "id": a["id"],
            "name": a["name"],
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": (
                    f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{a['role_id']}"
                ),
                "principalId": a["principal_id"],
                "principalType": "ServicePrincipal",
                "scope": a["scope"],
            },
        }


# ---------------------------------------------------------------------- a test's handle


def enforce(ctl: Control, on: bool = True) -> None:
    """Switch role enforcement on (or off) in the server."""
    ctl._control("POST", "authz", {"enforce": on})


def assign(ctl: Control, scope: str, principal_id: str, role: str) -> None:
    """Give the principal a role on the scope, as an administrator would (no check made)."""
    ctl._control(
        "POST", "authz/assignments", {"scope": scope, "principal_id": principal_id, "role": role}
    )


def unregister(ctl: Control, subscription: str, namespace: str) -> None:
    """Make the subscription one that never registered the provider."""
    ctl._control(
        "POST",
        "authz/providers",
        {"subscription": subscription, "namespace": namespace, "state": "NotRegistered"},
    )


def dump(ctl: Control) -> Json:
    """Enforcement, every role assignment and every provider not (yet) registered."""
    return ctl._control("GET", "authz")
