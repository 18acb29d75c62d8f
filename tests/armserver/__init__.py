"""A test-only Azure Resource Manager server for the real azure-mgmt clients.

Start it in this process (``ArmServer``) or as a shared subprocess (``ArmServerProcess``, i.e.
``python -m armserver --port 0 --cert-dir DIR``); point clients at it with
``**server.client_kwargs()`` and a :class:`StaticTokenCredential` (it mints the unsigned JWTs the
server checks; :func:`mint_token` makes one for an environment variable). Fixtures:
``armserver.plugin``.
"""

from .certs import CertPaths, ensure_certs
from .control import Control
from .credentials import ARM_SCOPE, AsyncStaticTokenCredential, StaticTokenCredential
from .process import ArmServerProcess
from .server import ArmError, ArmServer, ArmState, norm_region
from .tokens import mint_token

__all__ = [
    "ARM_SCOPE",
    "ArmError",
    "ArmServer",
    "ArmServerProcess",
    "ArmState",
    "AsyncStaticTokenCredential",
    "CertPaths",
    "Control",
    "StaticTokenCredential",
    "ensure_certs",
    "mint_token",
    "norm_region",
]
