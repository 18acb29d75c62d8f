"""imagedist's own exceptions. Every adapter translates foreign errors into these, in one place.

The tree::

    ImagedistError
    ├── InvalidInput          bad file, config, flag or id: the user fixes it (exit status 2)
    │   └── ConfigError       the config file is malformed; carries the key path
    ├── NotFound              a blob, image, job or target does not exist
    ├── Conflict              the resource exists, or an operation is already in flight on it
    ├── PreconditionFailed    an optimistic-concurrency check (version, ETag) did not hold
    ├── AuthFailed            the credentials were refused
    ├── OperationFailed       the platform ran the operation and it failed (copy failed, image failed)
    │   ├── SourceUnusable    the job's disk file cannot be uploaded (gone, changed, not a fixed VHD)
    │   └── SourceChanged     the disk file changed while it was read
    ├── TransientError        worth retrying later (throttled, busy, timeout on the wire)
    └── BackendUnavailable    the backend cannot be loaded (missing extra, unknown name)
"""

from __future__ import annotations

__all__ = [
    "AuthFailed",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "ImagedistError",
    "InvalidInput",
    "NotFound",
    "OperationFailed",
    "PreconditionFailed",
    "SourceChanged",
    "SourceUnusable",
    "TransientError",
]


class ImagedistError(Exception):
    """Base class of every error imagedist raises on purpose."""


class InvalidInput(ImagedistError):
    """Raised when a file, config value, flag or id given by the user is invalid.

    The message is one sentence naming the problem and the fix.
    """


class ConfigError(InvalidInput):
    """Raised when the config file cannot be read or does not validate.

    :ivar key_path: the dotted path of the offending key, or ``""`` for the whole file.
    """

    def __init__(self, message: str, key_path: str = "") -> None:
        super().__init__(message)
        self.key_path = key_path


class NotFound(ImagedistError):
    """Raised when a blob, image, job or target does not exist."""


class Conflict(ImagedistError):
    """Raised when a resource already exists or an operation is already in flight on it."""


class PreconditionFailed(ImagedistError):
    """Raised when an optimistic-concurrency check (row version, ETag) did not hold."""


class AuthFailed(ImagedistError):
    """Raised when the backend refused the credentials."""


class OperationFailed(ImagedistError):
    """Raised when the platform ran an operation to its end and it failed.

    :ivar code: the platform's error code, when it gave one.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class SourceUnusable(OperationFailed):
    """The job's file cannot be uploaded (gone, changed since submission, not a fixed VHD);
    found before anything was sent."""


class SourceChanged(OperationFailed):
    """The file changed while it was read: what was read is not one disk."""


class TransientError(ImagedistError):
    """Raised when an operation failed in a way that is worth retrying later.

    :ivar retry_after: seconds the platform asked us to wait, when it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendUnavailable(ImagedistError):
    """Raised when a backend is unknown or its optional dependencies are not installed."""
