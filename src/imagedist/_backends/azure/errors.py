"""The one place where Azure SDK exceptions become imagedist's (see :mod:`imagedist._exceptions`).

Every Azure adapter wraps its SDK calls in :func:`translate_errors`. Messages name the operation and
keep Azure's HTTP status and error code, and go through :func:`imagedist._redact.redact` so that no
SAS token, account key or URL query string, in any encoding, ends up in an exception, a log line or
the job's log.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..._exceptions import (
    AuthFailed,
    Conflict,
    NotFound,
    OperationFailed,
    PreconditionFailed,
    TransientError,
)
from ..._redact import redact

__all__ = ["Override", "error_code", "redact", "retry_after", "translate_errors"]

#: Statuses worth retrying later: throttled, server error, gateway trouble, timeouts.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: An override maps an Azure error code (str) or HTTP status (int) to a factory of the exception to
#: raise instead of the default translation; it receives the finished message.
Override = Mapping[str | int, Callable[[str], Exception]]


def error_code(exc: BaseException) -> str:
    """Azure's error code (``BlobNotFound``, ``PendingCopyOperation``...) or ``""``."""
    code: Any = getattr(exc, "error_code", None)
    if code is None:  # Resource Manager errors carry it in the ARM error body instead
        code = getattr(getattr(exc, "error", None), "code", None)
    if code is None:
        return ""
    return str(getattr(code, "value", code))  # the storage SDK gives a StorageErrorCode enum


def _status(exc: BaseException) -> int | None:
    status: Any = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after(exc: BaseException, *, now: float | None = None) -> float | None:
    """Seconds the service asked us to wait (``Retry-After`` or ``retry-after-ms``), if it said."""
    response = getattr(exc, "response", None)
    raw: Any = getattr(response, "headers", None)
    if not raw:
        return None
    headers = {str(name).lower(): str(value) for name, value in raw.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in headers:
            try:
                return max(0.0, float(headers[name]) / 1000)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _message(operation: str, exc: AzureError) -> str:
    # Only the first line of Azure's message: the rest is RequestId, Time and the raw XML body.
    text = str(getattr(exc, "message", None) or exc).strip()
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    details = [f"HTTP {status}" for status in [_status(exc)] if status is not None]
    if code := error_code(exc):
        details.append(code)
    suffix = f" ({', '.join(details)})" if details else ""
    return redact(f"{operation} failed: {first}{suffix}")


def _translate(operation: str, exc: AzureError, overrides: Override | None) -> Exception:
    message = _message(operation, exc)
    status, code = _status(exc), error_code(exc)
    if overrides:
        for key in (code, status):
            if key is not None and key != "" and key in overrides:
                return overrides[key](message)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TransientError(message)  # the request never got an answer: DNS, connect, timeout
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        # Before NotFound: the storage SDK calls a refused copy source (403 CannotVerifyCopySource)
        # a ResourceNotFoundError, but the source was there and our grant to read it was refused.
        return AuthFailed(message)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(message)
    if isinstance(exc, ResourceModifiedError) or status == 412:
        return PreconditionFailed(message)
    if isinstance(exc, ResourceExistsError) or status == 409:
        return Conflict(message)
    if status in TRANSIENT_STATUSES:
        return TransientError(message, retry_after=retry_after(exc))
    return OperationFailed(message, code=code)


@contextmanager
def translate_errors(operation: str, overrides: Override | None = None) -> Iterator[None]:
    """Raise imagedist's exception for any Azure SDK error raised in the block.

    Usable around ``await`` in a coroutine as well as around sync calls. ``operation`` is a short
    phrase naming what was attempted ("read blob 'acct/cont/name'"); ``overrides`` maps specific
    Azure error codes or HTTP statuses to other exceptions, checked before the defaults:

    ====================================================================  =====================
    ResourceNotFoundError, HTTP 404                                       NotFound
    ResourceExistsError, HTTP 409 (``PendingCopyOperation``...)           Conflict
    ResourceModifiedError, HTTP 412                                       PreconditionFailed
    ClientAuthenticationError, HTTP 401 and 403                           AuthFailed
    HTTP 408, 429, 500, 502, 503, 504, ServiceRequest/ResponseError       TransientError
    any other HttpResponseError or AzureError                             OperationFailed
    ====================================================================  =====================
    """
    try:
        yield
    except AzureError as exc:
        raise _translate(operation, exc, overrides) from exc
