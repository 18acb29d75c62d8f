"""Static bearer-token credentials for pointing the real mgmt clients at the test ARM server."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

ARM_SCOPE = "https://management.azure.com/.default"


class StaticTokenCredential:
    """A sync ``TokenCredential`` that always returns the same token (never a real secret)."""

    def __init__(self, token: str = "test-token", lifetime_seconds: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime_seconds

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

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

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(<redacted>)"


class AsyncStaticTokenCredential:
    """The ``AsyncTokenCredential`` twin of :class:`StaticTokenCredential` for ``.aio`` clients."""

    def __init__(self, token: str = "test-token", lifetime_seconds: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime_seconds

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"
