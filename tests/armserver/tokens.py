"""Bearer tokens as the test ARM server sees them: unsigned JWTs with Entra ID's claims.

The test credentials (:mod:`armserver.credentials`) mint them with :func:`mint_token`; the server
reads them with :func:`principal_of`, which refuses what ARM refuses (a missing or malformed token,
a token for another audience or tenant, an expired one) with ARM's 401 codes and messages and a
``WWW-Authenticate`` challenge. Nothing is signed: these tests check *which* token a client sends,
not cryptography.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The audiences public-cloud ARM accepts (its error message lists exactly these).
PUBLIC_ARM_AUDIENCES = (
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
)
DEFAULT_AUDIENCE = "https://management.azure.com/"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-0000000000aa"
DEFAULT_OID = "0f0f0f0f-0000-4000-8000-0000000000bb"
AUTHORITY = "https://login.windows.net"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: route handlers (RBAC) read ``oid``."""

    oid: str
    tenant: str
    audience: str


class TokenRefused(Exception):
    """ARM's 401 for a token: ``code``, ``message`` and the ``WWW-Authenticate`` challenge."""

    def __init__(self, code: str, message: str, tenant: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
        description = message.replace('"', "'")
        self.challenge = (
            f'Bearer authorization_uri="{AUTHORITY}/{tenant}", error="invalid_token", '
            f'error_description="{description}"'
        )


def audience_of_scope(scope: str) -> str:
    """The ``aud`` Entra ID puts in a token asked for ``scope`` (``<resource>/.default``)."""
    return scope[: -len(".default")] if scope.endswith("/.default") else scope


def mint_token(
    *,
    audience: str = DEFAULT_AUDIENCE,
    tenant: str = DEFAULT_TENANT,
    oid: str = DEFAULT_OID,
    expires_at: float | None = None,
    lifetime_seconds: float = 3600,
) -> str:
    """An unsigned JWT (``alg: none``) with the claims ARM reads."""
    now = int(time.time())
    exp = int(expires_at) if expires_at is not None else now + int(lifetime_seconds)
    header = {"typ": "JWT", "alg": "none"}
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": exp,
        "tid": tenant,
        "oid": oid,
    }
    return f"{_b64(header)}.{_b64(claims)}."


def principal_of(
    authorization: str, *, audiences: list[str], tenant: str, now: float | None = None
) -> Principal:
    """The principal of an ``Authorization`` header, or :class:`TokenRefused` as ARM words it."""
    if not authorization.strip():
        raise TokenRefused(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            tenant,
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRefused(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not a bearer token.",
            tenant,
        )
    claims = _claims(token.strip())
    if claims is None:
        raise TokenRefused("InvalidAuthenticationToken", "The access token is invalid.", tenant)
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        raise TokenRefused(
            "ExpiredAuthenticationToken",
            f"The access token expiry UTC time '{_arm_time(exp)}' is earlier than current UTC "
            f"time '{_arm_time(now)}'.",
            tenant,
        )
    audience = str(claims.get("aud", ""))
    if audience not in audiences:
        allowed = ",".join(f"'{a}'" for a in audiences)
        raise TokenRefused(
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{audience}'. "
            f"It should exactly match with one of the allowed audiences {allowed}.",
            tenant,
        )
    token_tenant = str(claims.get("tid", ""))
    if token_tenant.lower() != tenant.lower():
        raise TokenRefused(
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer 'https://sts.windows.net/{token_tenant}/'."
            f" It must match the tenant 'https://sts.windows.net/{tenant}/' associated with this"
            f" subscription. Please use the authority (URL) '{AUTHORITY}/{tenant}' to get the"
            " token.",
            tenant,
        )
    return Principal(oid=str(claims.get("oid", "")), tenant=token_tenant, audience=audience)


def _b64(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _arm_time(t: float) -> str:
    """ARM's way of writing a UTC time in this message: ``12/2/2026 4:41:19 AM``."""
    d = datetime.fromtimestamp(t, UTC)
    hour = d.hour % 12 or 12
    return f"{d.month}/{d.day}/{d.year} {hour}:{d.minute:02d}:{d.second:02d} {d.strftime('%p')}"
