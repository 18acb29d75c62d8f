"""Entra ID for tests: unsigned JWTs with the audience each service checks, handed out by a fake
managed-identity endpoint, so the production ``DefaultAzureCredential`` path runs unchanged.

``DefaultAzureCredential`` uses the App Service managed identity when ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER`` are set: it asks ``GET <endpoint>?api-version=2019-08-01&resource=<audience>``
with the header ``X-IDENTITY-HEADER``. :class:`FakeManagedIdentity` answers that on loopback with a
token for the audience asked (ARM's for the mgmt clients, ``https://storage.azure.com`` for blobs
and tables) and records every audience, so a test sees which scopes were asked for. Azurite in
OAuth mode checks issuer, audience and lifetime (not the signature), as the ARM test server does.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from armserver.tokens import DEFAULT_TENANT

__all__ = [
    "ARM_AUDIENCE",
    "ISSUER_PREFIX",
    "OBJECT_ID",
    "STORAGE_AUDIENCE",
    "TENANT_ID",
    "FakeManagedIdentity",
    "claims",
    "entra_environment",
    "mint_token",
]

ARM_AUDIENCE = "https://management.azure.com"
STORAGE_AUDIENCE = "https://storage.azure.com"
TENANT_ID = DEFAULT_TENANT  # the one the ARM test server trusts
OBJECT_ID = "0b1ec7a1-0000-4000-8000-0000000000d1"
#: Azure's issuer for tokens of the public cloud; Azurite accepts only Entra issuers.
ISSUER_PREFIX = "https://sts.windows.net/"
#: Variables that would make DefaultAzureCredential pick another identity than the fake one.
_IDENTITY_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMAGEDIST_ARM_ACCESS_TOKEN",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(
    audience: str,
    *,
    tenant: str = TENANT_ID,
    object_id: str = OBJECT_ID,
    lifetime_seconds: int = 3600,
) -> str:
    """An unsigned JWT (``alg: none``) with the claims Entra ID puts in an access token."""
    now = int(time.time())
    header = {"typ": "JWT", "alg": "none"}
    payload = {
        "aud": audience,
        "iss": f"{ISSUER_PREFIX}{tenant}/",
        "iat": now - 60,
        "nbf": now - 60,  # a little skew, as Entra ID allows
        "exp": now + lifetime_seconds,
        "tid": tenant,
        "oid": object_id,
        "sub": object_id,
        "jti": secrets.token_hex(8),  # every token distinct, so a leaked one can be found
        "ver": "1.0",
    }
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


class FakeManagedIdentity:
    """``with FakeManagedIdentity() as identity:`` an App Service identity endpoint on loopback.

    :attr:`resources` lists the audience of every token asked for, in order; :attr:`tokens` every
    token handed out (for tests that check no token leaked into a log).
    """

    def __init__(self, *, tenant: str = TENANT_ID, object_id: str = OBJECT_ID) -> None:
        self.tenant = tenant
        self.object_id = object_id
        self.header_secret = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._resources: list[str] = []
        self._tokens: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/msi/token"

    @property
    def resources(self) -> list[str]:
        with self._lock:
            return list(self._resources)

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def clear(self) -> None:
        with self._lock:
            self._resources.clear()

    def environment(self) -> dict[str, str]:
        """The variables that make DefaultAzureCredential in any process sign in here."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header_secret}

    def issue(self, resource: str) -> dict[str, str]:
        token = mint_token(resource, tenant=self.tenant, object_id=self.object_id)
        with self._lock:
            self._resources.append(resource)
            self._tokens.append(token)
        expires = str(claims(token)["exp"])
        return {
            "access_token": token,
            "expires_on": expires,
            "resource": resource,
            "token_type": "Bearer",
        }

    def __enter__(self) -> FakeManagedIdentity:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(identity: FakeManagedIdentity) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            resource = query.get("resource", [""])[0]
            if self.headers.get("X-IDENTITY-HEADER") != identity.header_secret:
                self._reply(401, {"error": "invalid_request", "error_description": "bad header"})
            elif query.get("api-version") != ["2019-08-01"] or not resource:
                self._reply(400, {"error": "invalid_request", "error_description": "bad query"})
            else:
                self._reply(200, identity.issue(resource))

        def _reply(self, status: int, body: Mapping[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test output is for failures

    return Handler


def entra_environment(base: Mapping[str, str], identity: FakeManagedIdentity) -> dict[str, str]:
    """``base`` without any other identity's variables, signed in through ``identity``."""
    kept = {name: value for name, value in base.items() if name not in _IDENTITY_VARIABLES}
    return {**kept, **identity.environment()}
