"""The test-side handle on an ARM test server: counters, faults, preloaded accounts, client kwargs.

Both :class:`~armserver.server.ArmServer` (in this process) and
:class:`~armserver.process.ArmServerProcess` (a subprocess, reached over HTTPS) implement
``_control`` and get these methods from :class:`Control`.
"""

from __future__ import annotations

from typing import Any

from .credentials import ARM_SCOPE

Json = dict[str, Any]


class Control:
    @property
    def url(self) -> str:
        """The server's base URL."""
        raise NotImplementedError

    @property
    def ca_file(self) -> str:
        """The CA certificate a client must trust to talk to the server."""
        raise NotImplementedError

    def _control(self, method: str, path: str, body: Json | None = None) -> Json:
        raise NotImplementedError

    # -- clients

    def client_kwargs(self, *, polling_interval: float = 0.05, **extra: Any) -> Json:
        """Keyword arguments for any azure-mgmt client (sync or ``.aio``) to talk to this server."""
        return {
            "base_url": self.url,
            "credential_scopes": [ARM_SCOPE],
            "connection_verify": self.ca_file,
            "polling_interval": polling_interval,
            **extra,
        }

    def client_env(self) -> dict[str, str]:
        """Environment that makes a *new* process trust this server without ``connection_verify``.

        ``SSL_CERT_FILE`` serves the aiohttp transport (``.aio`` clients), ``REQUESTS_CA_BUNDLE``
        the requests transport (sync clients). Either replaces the system trust store for that
        transport in that process.
        """
        return {
            "ARMSERVER_URL": self.url,
            "ARMSERVER_CA_FILE": self.ca_file,
            "SSL_CERT_FILE": self.ca_file,
            "REQUESTS_CA_BUNDLE": self.ca_file,
        }

    # -- observation

    def counters(self) -> Json:
        """``{"image_creations": [{"subscription", "resource_group", "name", "count"}], "requests": {...},
        "tls_handshakes": n}``."""
        return self._control("GET", "counters")

    def image_creations(self, subscription: str, resource_group: str, name: str) -> int:
        """How many times the server accepted a creation of this image (exactly-once checks)."""
        key = (subscription.lower(), resource_group.lower(), name.lower())
        for entry in self.counters()["image_creations"]:
            if (entry["subscription"], entry["resource_group"], entry["name"]) == key:
                return int(entry["count"])
        return 0

    def total_image_creations(self) -> int:
        return sum(int(e["count"]) for e in self.counters()["image_creations"])

    def request_count(self, kind: str) -> int:
        """E.g. ``async_operation_get``, ``location_get``, ``throttled``, ``unauthorized``, ``image_put``."""
        return int(self.counters()["requests"].get(kind, 0))

    def snapshot(self) -> Json:
        return self._control("GET", "state")

    # -- setup and faults

    def reset(self) -> None:
        self._control("POST", "reset")

    def configure(self, **options: Any) -> Json:
        """``image_delay``, ``lro_delay``, ``lro_retry_after``, ``blob_endpoint_template``,
        ``page_size``, ``audiences``, ``tenant``, ``validate_source_blobs``, ``storage_keys``."""
        return self._control("POST", "config", options)

    def check_source_blobs(self, storage_keys: dict[str, str]) -> Json:
        """Read every image's source blob (in Azurite) before making the image, as Azure does:
        ``storage_keys`` maps each storage account name to its key."""
        keys = {name.lower(): key for name, key in storage_keys.items()}
        return self.configure(validate_source_blobs=True, storage_keys=keys)

    def set_image_state(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        state: str,
        *,
        seconds: float | None = None,
        then: str | None = None,
        **seed: Any,
    ) -> Json:
        """Put an image in provisioning ``state`` (any string: ``Deleting``, ``Updating``,
        ``Canceled``, or one Azure may add) for ``seconds`` (``None``: until changed), then
        ``then``: a state, ``"gone"`` (deleted) or ``None`` (back to its creation's outcome).

        An image that does not exist is made first from ``seed`` (``region``, ``blob_uri``,
        ``tags``, ``os_type``), as if someone had made it outside imagedist.
        """
        body: Json = {
            "subscription": subscription,
            "resource_group": resource_group,
            "name": name,
            "state": state,
            "seconds": seconds,
            "then": then,
            **seed,
        }
        return self._control("POST", "images", body)

    def register_account(
        self,
        name: str,
        subscription: str,
        region: str,
        blob_endpoint: str | None = None,
        *,
        resource_group: str | None = None,
    ) -> Json:
        """Make a storage account known (e.g. an Azurite one) without an ARM PUT.

        ``blob_endpoint`` defaults to the server's template (``https://{name}.blob.core.windows.net/``);
        for Azurite pass ``http://127.0.0.1:10000/<name>/``.
        """
        body: Json = {"name": name, "subscription": subscription, "region": region}
        if blob_endpoint is not None:
            body["blob_endpoint"] = blob_endpoint
        if resource_group is not None:
            body["resource_group"] = resource_group
        return self._control("POST", "accounts", body)

    def fail_image_creation(
        self,
        subscription: str,
        region: str,
        *,
        code: str = "InternalExecutionError",
        message: str = "An internal execution error occurred. Please retry later.",
        count: int | None = None,
        status: int | None = None,
        state: str = "Failed",
    ) -> Json:
        """Image creations in (subscription, region) fail with ``code``/``message``.

        ``state="Canceled"`` ends the operation and the image ``Canceled`` instead of ``Failed``.

        By default the PUT is accepted and the async operation ends ``Failed`` (the image's
        provisioningState too); with ``status`` the PUT itself is refused with that HTTP status.
        ``count`` limits it to the next N creations there; ``None`` means until cleared.
        """
        body: Json = {
            "kind": "image_failure",
            "subscription": subscription,
            "region": region,
            "code": code,
            "message": message,
            "count": count,
            "status": status,
            "state": state,
        }
        return self._control("POST", "faults", body)

    def register_disk(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        size_bytes: int,
        access_url: str,
        *,
        region: str = "westeurope",
    ) -> Json:
        """Make a managed disk known; its ``beginGetAccess`` hands out ``access_url``.

        In tests ``access_url`` is an Azurite SAS URL of the page blob that holds the disk's bytes.
        Returns the disk's counters (see :meth:`disk_access`).
        """
        body: Json = {
            "subscription": subscription,
            "resource_group": resource_group,
            "name": name,
            "size_bytes": size_bytes,
            "access_url": access_url,
            "region": region,
        }
        return self._control("POST", "disks", body)

    def disk_access(self, subscription: str, resource_group: str, name: str) -> Json:
        """``{"grants": n, "revokes": n, "granted": bool}`` of a registered disk.

        ``grants`` counts accepted ``beginGetAccess`` requests, ``revokes`` ``endGetAccess``
        requests; ``granted`` is whether access is granted now.
        """
        key = (subscription.lower(), resource_group.lower(), name.lower())
        for entry in self.counters().get("disks", []):
            if (
                entry["subscription"].lower(),
                entry["resource_group"].lower(),
                entry["name"].lower(),
            ) == key:
                return {k: entry[k] for k in ("grants", "revokes", "granted")}
        raise KeyError(f"no disk {subscription}/{resource_group}/{name} on the ARM test server")

    def fail_disk_grant(
        self,
        *,
        code: str = "InternalExecutionError",
        message: str = "An internal execution error occurred. Please retry later.",
        count: int | None = None,
        status: int | None = None,
    ) -> Json:
        """Make ``beginGetAccess`` fail, on any disk.

        By default the request is accepted (202, counted as a grant) and its long-running operation
        fails with ``code``/``message`` (HTTP 400 on the poll), granting nothing; with ``status``
        the request itself is refused with that status. ``count`` limits it to the next N grants;
        ``None`` means until cleared.
        """
        body: Json = {
            "kind": "disk_grant_failure",
            "code": code,
            "message": message,
            "count": count,
            "status": status,
        }
        return self._control("POST", "faults", body)

    def throttle(self, count: int, *, retry_after: int = 1, include_reads: bool = False) -> Json:
        """Answer the next ``count`` write calls (reads too with ``include_reads``) with 429."""
        return self._control(
            "POST",
            "faults",
            {
                "kind": "throttle",
                "count": count,
                "retry_after": retry_after,
                "include_reads": include_reads,
            },
        )

    def clear_faults(self) -> None:
        self._control("DELETE", "faults")
