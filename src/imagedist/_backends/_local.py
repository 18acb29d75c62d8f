"""The embedded backend: blobs in a folder, images and state in SQLite. No cloud at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._clock import SystemClock
from . import Backend
from ._local_blobs import LocalBlobStore
from ._local_images import LocalImageService
from ._local_provisioner import LocalProvisioner
from ._sqlite_state import SqliteStateStore

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["open_backend"]

MIB = 1024 * 1024


def open_backend(config: Config) -> Backend:
    """Open the local backend under the config's ``local.root`` folder."""
    root = config.local_root()
    root.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    options = config.local
    blobs = LocalBlobStore(
        root / "blobs",
        clock,
        copy_bandwidth=options.copy_bandwidth_mib_s * MIB,
        fail_copies_to_accounts=frozenset(options.fail_copies_to_accounts),
    )
    locations = {t.account: (t.subscription, t.region) for t in config.fleet_targets()}
    locations[config.staging.account] = (config.staging.subscription, config.staging.region)
    images = LocalImageService(
        root / "images.db",
        clock,
        blobs,
        account_locations=locations,
        create_seconds=options.image_create_seconds,
        fail_in=frozenset(_pair(item) for item in options.fail_images_in),
    )
    # A local disk's access URL opens a copy only while the image service says it is granted.
    blobs.set_url_verifier(images.disk_url_granted)
    return Backend(
        blobs=blobs,
        images=images,
        state=SqliteStateStore(root / "state.db"),
        clock=clock,
        provisioner=LocalProvisioner(root),
    )


def _pair(item: str) -> tuple[str, str]:
    subscription, _, region = item.rpartition("/")
    return subscription, region
