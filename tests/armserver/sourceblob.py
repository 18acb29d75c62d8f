"""What Azure checks of an image's source blob before it makes the image, read from the blob store.

Azure reads the VHD an image is created from: it must exist, be a page blob with no copy pending
into it, be a whole number of MiB plus the 512-byte footer, and end in a valid fixed-VHD footer.
The test ARM server asks this module when source checking is on; the answers carry the codes and
messages Azure fails such an image with (``InvalidVhd`` for a bad disk, ``InvalidParameter`` for
a blob it cannot use).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobType

from imagedist._vhd import fixed_footer_problem

MiB = 1024 * 1024
FOOTER = 512

Problem = tuple[str, str]  # (error code, message)


def source_blob_problem(blob_uri: str, account: str, account_key: str) -> Problem | None:
    """Why Azure would not make an image of ``blob_uri`` (in ``account``), or ``None``."""
    client = BlobClient.from_blob_url(
        blob_uri,
        credential={"account_name": account, "account_key": account_key},
        retry_total=1,
        connection_timeout=10,
        read_timeout=30,
        # Azurite on loopback, over HTTPS with a certificate its test made (Entra ID mode): the
        # test server reads it as the storage service would, not as a client checking its CA.
        connection_verify=not _loopback(blob_uri),
    )
    with client:
        try:
            props = client.get_blob_properties()
        except ResourceNotFoundError:
            return (
                "InvalidParameter",
                f"The blob {blob_uri} does not exist or is not accessible; the source of an"
                " image must be an existing page blob.",
            )
        except AzureError as exc:
            return ("InvalidParameter", f"The blob {blob_uri} could not be read: {exc}")
        if props.blob_type != BlobType.PAGEBLOB:
            return (
                "InvalidParameter",
                f"The blob {blob_uri} is a {props.blob_type} blob. Only page blobs can be used"
                " to create a disk or an image.",
            )
        if props.copy is not None and props.copy.status == "pending":
            return (
                "InvalidParameter",
                f"The blob {blob_uri} has a pending copy operation; wait for the copy to"
                " complete before creating an image from it.",
            )
        size = int(props.size)
        if size < MiB + FOOTER or (size - FOOTER) % MiB:
            return (
                "InvalidVhd",
                f"The VHD {blob_uri} has an unsupported virtual size of {size - FOOTER} bytes."
                " The size must be a whole number (in MBs).",
            )
        footer = client.download_blob(offset=size - FOOTER, length=FOOTER).readall()
    problem = fixed_footer_problem(footer, size)
    if problem is None:
        return None
    if footer[:8] != b"conectix":
        name = blob_uri.rstrip("/").rsplit("/", 1)[-1]
        return (
            "InvalidVhd",
            f"The specified cookie value in VHD footer indicates that disk '{name}' with blob"
            f" {blob_uri} is not a supported VHD. Disk is expected to have cookie value"
            " 'conectix'.",
        )
    return ("InvalidVhd", f"The VHD {blob_uri} is not a supported VHD: {problem}.")


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
