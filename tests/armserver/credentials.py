"""Bearer-token credentials for pointing the real mgmt clients at the test ARM server.

By default they mint a fresh unsigned JWT (:func:`armserver.tokens.mint_token`) for each request of
a token, its audience taken from the scope asked for (as Entra ID does), so a client that asks for
the wrong scope sends a token the server refuses. ``token=`` hands out a fixed string instead.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

from .tokens import DEFAULT_OID, DEFAULT_TENANT, audience_of_scope, mint_token

ARM_SCOPE = "https://management.azure.com/.default"


class _Minter:
    def __init__(
        self,
        token: str | None,
        lifetime_seconds: int,
        audience: str | None,
        tenant: str,
        oid: str,
    ) -> None:
        self._token = token
        self._lifetime = lifetime_seconds
        self._audience, self._tenant, self._oid = audience, tenant, oid

    def _access_token(self, scopes: tuple[str, ...]) -> AccessToken:
        expires_on = int(time.time()) + self._lifetime
        if self._token is not None:
            return AccessToken(self._token, expires_on)
        audience = self._audience or audience_of_scope(scopes[0] if scopes else ARM_SCOPE)
        token = mint_token(
            audience=audience, tenant=self._tenant, oid=self._oid, expires_at=expires_on
        )
        return AccessToken(token, expires_on)

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(<redacted>)"


class StaticTokenCredential(_Minter):
    """A sync ``TokenCredential`` for the test server (never a real secret).

    :param token: a fixed token to hand out; ``None`` mints a JWT per request.
    :param audience: the ``aud`` of minted tokens; ``None``: the resource of the scope asked for.
    :param lifetime_seconds: how long a token lives (negative: already expired).
    """

    def __init__(
        self,
        token: str | None = None,
        lifetime_seconds: int = 3600,
        *,
        audience: str | None = None,
        tenant: str = DEFAULT_TENANT,
        oid: str = DEFAULT_OID,
    ) -> None:
        super().__init__(token, lifetime_seconds, audience, tenant, oid)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._access_token(scopes)

    def close(self) -> None:
        pass

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStaticTokenCredential(_Minter):
    """The ``AsyncTokenCredential`` twin of :class:`StaticTokenCredential` for ``.aio`` clients."""

    def __init__(
        self,
        token: str | None = None,
        lifetime_seconds: int = 3600,
        *,
        audience: str | None = None,
        tenant: str = DEFAULT_TENANT,
        oid: str = DEFAULT_OID,
    ) -> None:
        super().__init__(token, lifetime_seconds, audience, tenant, oid)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._access_token(scopes)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()
