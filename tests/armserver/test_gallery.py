"""The ARM test server's gallery model, request by request (no sockets): what it refuses, with
Azure's status and code, and the shapes the contract suite does not look at (paging, sharing
operations, operation status)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from armserver.apiversions import installed_api_versions
from armserver.server import ArmState, Request, Response
from armserver.tokens import mint_token

SUB = "sub-a"
RG = "rg-gallery"
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries"
GALLERY = f"{BASE}/galmain"
IMAGE = f"{GALLERY}/images/golden"
API = ""  # the version the installed SDK sends for the path (the server accepts only those)
TOKEN = mint_token(lifetime_seconds=6 * 3600)  # one the server accepts: audience, tenant, expiry


def api_query(path: str) -> str:
    versions = installed_api_versions().allowed(urlsplit(path).path) or {"2024-03-03"}
    return f"api-version={max(versions)}"


def call(state: ArmState, method: str, path: str, body: Any = None, query: str = API) -> Response:
    query = query or api_query(path)
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"authorization": f"Bearer {TOKEN}"}
    return state.handle(Request(method, path, query, headers, raw, "https://arm.test"))


def error_code(response: Response) -> str:
    return str(response.body["error"]["code"])


def definition(**changes: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "osType": "Linux",
        "osState": "Generalized",
        "hyperVGeneration": "V2",
        "architecture": "x64",
        "identifier": {"publisher": "contoso", "offer": "golden", "sku": "linux-22"},
        "features": [{"name": "SecurityType", "value": "TrustedLaunchSupported"}],
        "description": "the golden image",
    }
    props.update(changes)
    return {"location": "westeurope", "properties": props}


def copy_of(version: str, *regions: str) -> dict[str, Any]:
    """A version made from another version (no blob to read)."""
    targets = [{"name": r, "regionalReplicaCount": 1} for r in regions or ("westeurope",)]
    return {
        "location": "westeurope",
        "properties": {
            "publishingProfile": {"targetRegions": targets},
            "storageProfile": {"source": {"id": f"{IMAGE}/versions/{version}"}},
        },
    }


@pytest.fixture
def state() -> ArmState:
    state = ArmState()
    call(state, "PUT", f"/subscriptions/{SUB}/resourceGroups/{RG}", {"location": "westeurope"})
    assert call(state, "PUT", GALLERY, {"location": "westeurope"}).status == 201
    assert call(state, "PUT", IMAGE, definition()).status == 201
    return state


@pytest.mark.parametrize(
    "change",
    [
        {"osType": "Windows"},
        {"osState": "Specialized"},
        {"hyperVGeneration": "V1"},
        {"architecture": "Arm64"},
        {"identifier": {"publisher": "contoso", "offer": "golden", "sku": "linux-24"}},
        {"features": [{"name": "SecurityType", "value": "TrustedLaunch"}]},
    ],
    ids=["osType", "osState", "generation", "architecture", "sku", "security-type"],
)
def test_an_immutable_definition_property_cannot_change(
    state: ArmState, change: dict[str, Any]
) -> None:
    refused = call(state, "PUT", IMAGE, definition(**change))

    assert (refused.status, error_code(refused)) == (409, "PropertyChangeNotAllowed")
    assert "is not allowed" in refused.body["error"]["message"]
    assert call(state, "GET", IMAGE).body["properties"]["osType"] == "Linux"


def test_a_definition_s_description_and_end_of_life_may_change(state: ArmState) -> None:
    changed = call(state, "PUT", IMAGE, definition(description="v2", endOfLifeDate="2030-01-01"))

    assert changed.status == 200
    props = call(state, "GET", IMAGE).body["properties"]
    assert (props["description"], props["endOfLifeDate"]) == ("v2", "2030-01-01T00:00:00+00:00")


@pytest.mark.parametrize("name", ["1.0", "1.0.0.0", "v1.0.0", "01.0.0", "1.2147483648.0"])
def test_a_bad_version_name_is_refused(state: ArmState, name: str) -> None:
    refused = call(state, "PUT", f"{IMAGE}/versions/{name}", copy_of("9.9.9"))

    assert (refused.status, error_code(refused)) == (400, "InvalidParameter")
    assert "MAJOR.MINOR.PATCH" in refused.body["error"]["message"]


def test_a_version_is_a_long_running_operation_that_fails_with_its_source(
    state: ArmState,
) -> None:
    created = call(state, "PUT", f"{IMAGE}/versions/1.0.0", copy_of("9.9.9"))

    assert created.status == 201
    operation = urlsplit(created.headers["Azure-AsyncOperation"])
    assert "/capsOperations/" in operation.path
    status = call(state, "GET", operation.path, query=operation.query).body
    assert status["status"] == "Failed"
    assert status["error"]["code"] == "InvalidParameter"
    assert "9.9.9" in status["error"]["message"]


def test_replication_progresses_in_the_model_s_clock_and_a_region_can_fail(
    state: ArmState,
) -> None:
    state.control(
        "POST", "gallery/config", {"replication_seconds": 100, "fail_regions": ["eastus"]}
    )
    # White-box: a version whose source was read and found good (reading a blob needs Azurite).
    origin = {
        "subscription": SUB,
        "resource_group": RG,
        "gallery": "galmain",
        "image": "golden",
        "name": "1.0.0",
        "location": "westeurope",
        "tags": {},
        "source": {"uri": "https://a.blob.core.windows.net/c/g.vhd", "storageAccountId": "x"},
        "publishing": {"targetRegions": [{"name": "Westeurope"}, {"name": "Eastus"}]},
        "created": state.gallery.now(),
        "operation": 1,
        "problem": "",
        "updating": False,
        "regions": {},
    }
    for region in ("westeurope", "eastus"):
        state.gallery._start_region(origin, region)
    state.gallery.versions[(SUB, RG, "galmain", "golden", "1.0.0")] = origin
    path = f"{IMAGE}/versions/1.0.0"
    expand = f"{api_query(path)}&$expand=ReplicationStatus"

    state.control("POST", "gallery/advance", {"seconds": 50})
    halfway = call(state, "GET", path, query=expand).body["properties"]
    state.control("POST", "gallery/advance", {"seconds": 60})
    ended = call(state, "GET", path, query=expand).body["properties"]

    assert halfway["replicationStatus"]["aggregatedState"] == "InProgress"
    assert {s["progress"] for s in halfway["replicationStatus"]["summary"]} == {50}
    assert ended["provisioningState"] == "Failed"
    assert ended["replicationStatus"]["aggregatedState"] == "Failed"
    summary = {s["region"]: s for s in ended["replicationStatus"]["summary"]}
    assert (summary["Westeurope"]["state"], summary["Eastus"]["state"]) == ("Completed", "Failed")
    assert "eastus" in summary["Eastus"]["details"]
    assert "replicationStatus" not in call(state, "GET", path).body["properties"]


def test_target_regions_must_include_the_version_s_region(state: ArmState) -> None:
    refused = call(state, "PUT", f"{IMAGE}/versions/1.0.0", copy_of("9.9.9", "northeurope"))
    elsewhere = copy_of("9.9.9") | {"location": "northeurope"}
    moved = call(state, "PUT", f"{IMAGE}/versions/1.0.1", elsewhere)

    assert (refused.status, error_code(refused)) == (400, "InvalidParameter")
    assert "must include" in refused.body["error"]["message"]
    assert (moved.status, error_code(moved)) == (400, "InvalidParameter")


def test_a_list_of_versions_is_paged_by_next_link(state: ArmState) -> None:
    for name in ("1.0.0", "1.0.1", "1.0.2"):
        assert call(state, "PUT", f"{IMAGE}/versions/{name}", copy_of("9.9.9")).status == 201

    first = call(state, "GET", f"{IMAGE}/versions").body
    link = urlsplit(first["nextLink"])
    second = call(state, "GET", link.path, query=link.query).body

    names = [v["name"] for v in first["value"] + second["value"]]
    assert names == ["1.0.0", "1.0.1", "1.0.2"]
    assert "nextLink" not in second


def test_sharing_needs_the_groups_permission_then_adds_removes_and_resets(
    state: ArmState,
) -> None:
    add = {"operationType": "Add", "groups": [{"type": "Subscriptions", "ids": ["s1", "s2"]}]}
    private = call(state, "POST", f"{GALLERY}/share", add)
    assert (private.status, error_code(private)) == (409, "OperationNotAllowed")

    groups = {"location": "westeurope", "properties": {"sharingProfile": {"permissions": "Groups"}}}
    assert call(state, "PUT", GALLERY, groups).status == 200
    assert call(state, "POST", f"{GALLERY}/share", add).status == 202
    tenants = {"operationType": "Add", "groups": [{"type": "AADTenants", "ids": ["t1"]}]}
    call(state, "POST", f"{GALLERY}/share", tenants)
    remove = {"operationType": "Remove", "groups": [{"type": "Subscriptions", "ids": ["s1"]}]}
    call(state, "POST", f"{GALLERY}/share", remove)

    profile = call(state, "GET", GALLERY).body["properties"]["sharingProfile"]
    assert profile["groups"] == [
        {"type": "Subscriptions", "ids": ["s2"]},
        {"type": "AADTenants", "ids": ["t1"]},
    ]
    call(state, "POST", f"{GALLERY}/share", {"operationType": "Reset"})
    assert call(state, "GET", GALLERY).body["properties"]["sharingProfile"]["groups"] == []
    bad = call(
        state,
        "POST",
        f"{GALLERY}/share",
        {"operationType": "Add", "groups": [{"type": "Users", "ids": ["u"]}]},
    )
    assert (bad.status, error_code(bad)) == (400, "InvalidParameter")


def test_a_gallery_with_definitions_cannot_be_deleted(state: ArmState) -> None:
    refused = call(state, "DELETE", GALLERY)

    assert (refused.status, error_code(refused)) == (409, "CannotDeleteResource")
    assert call(state, "DELETE", IMAGE).status == 200
    assert call(state, "DELETE", GALLERY).status == 200
    assert call(state, "GET", GALLERY).status == 404
