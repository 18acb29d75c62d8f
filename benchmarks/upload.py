"""Upload of a sparse golden image to Azurite: imagedist against the SDK's upload_blob and the floor.

    .venv/bin/python benchmarks/upload.py [--size-gib 8] [--data-gib 1] [--skip-naive]

Three measurements in the same run, each into a fresh page blob of the same Azurite:

* imagedist: ``upload_file`` (non-zero pages only, 8 writes in flight, resumable), with the MD5
  of the whole disk computed beside it (the default), and without;
* naive: ``BlobClient.upload_blob(file, blob_type=PageBlob)`` with the SDK's defaults;
* floor: the time to read the allocated data, plus the time Azurite takes to accept exactly
  those bytes (the same chunks, already in memory, with the same concurrency).

Needs Azurite (``npm install -g azurite`` or ``scripts/bootstrap test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import GIB, sparse_disk, table, timed

from azurite import generate_key
from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore
from imagedist._disks import open_disk_file
from imagedist._disks.pages import DiskScan
from imagedist._domain import BlobRef
from imagedist._engine._upload import upload_file

ACCOUNT = "benchacct"
CONCURRENCY = 8


def start_azurite(folder: Path, key: str) -> tuple[subprocess.Popen[bytes], int]:
    """Azurite persisting to disk (an 8 GiB naive upload does not belong in memory)."""
    exe = shutil.which("azurite-blob") or str(
        Path(__file__).parent.parent / ".tools/node_modules/.bin/azurite-blob"
    )
    port = 10000 + os.getpid() % 20000
    process = subprocess.Popen(
        [exe, "--silent", "--skipApiVersionCheck", "--loose", "--location", str(folder),
         "--blobHost", "127.0.0.1", "--blobPort", str(port)],
        env={**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{key}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(3)
    return process, port


def connection_string(port: int, key: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


async def ours(conn: str, disk: Path, md5: bool) -> None:
    store = AzureBlobStore({ACCOUNT: AccountAccess.from_connection_string(conn)})
    ref = BlobRef(ACCOUNT, "bench", f"ours-{md5}.vhd")
    await store.ensure_container(ACCOUNT, "bench")
    with open_disk_file(disk) as reading:
        await upload_file(store, ref, reading, concurrency=CONCURRENCY, content_md5=md5)
    await store.aclose()


def naive(conn: str, disk: Path) -> None:
    from azure.storage.blob import BlobServiceClient, BlobType

    service = BlobServiceClient.from_connection_string(conn)
    with disk.open("rb") as data:
        service.get_blob_client("bench", "naive.vhd").upload_blob(
            data, blob_type=BlobType.PAGEBLOB, length=disk.stat().st_size, overwrite=True
        )
    service.close()


def read_data(disk: Path) -> list[tuple[int, bytes]]:
    return list(DiskScan(disk).chunks())  # the data runs only: no hashing in the floor


async def accept(conn: str, size: int, chunks: list[tuple[int, bytes]]) -> None:
    store = AzureBlobStore({ACCOUNT: AccountAccess.from_connection_string(conn)})
    ref = BlobRef(ACCOUNT, "bench", "floor.vhd")
    await store.create_page_blob(ref, size, overwrite=True)
    queue = list(reversed(chunks))

    async def writer() -> None:
        while queue:
            offset, data = queue.pop()
            await store.write_pages(ref, offset, data)

    await asyncio.gather(*(writer() for _ in range(CONCURRENCY)))
    await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=8)
    parser.add_argument("--data-gib", type=float, default=1.0)
    parser.add_argument("--skip-naive", action="store_true")
    options = parser.parse_args()
    key = generate_key()
    with tempfile.TemporaryDirectory(prefix="imagedist-bench-") as folder:
        work = Path(folder)
        disk = sparse_disk(
            work / "disk.raw", options.size_gib * GIB, int(options.data_gib * GIB), extents=8
        )
        process, port = start_azurite(work / "azurite", key)
        conn = connection_string(port, key)
        try:
            asyncio.run(
                AzureBlobStore(
                    {ACCOUNT: AccountAccess.from_connection_string(conn)}
                ).ensure_container(ACCOUNT, "bench")
            )
            rows = []
            if not options.skip_naive:
                rows.append(
                    (
                        "naive: SDK upload_blob (PageBlob)",
                        timed("naive", lambda: naive(conn, disk))[0],
                    )
                )
            t_ours = timed("imagedist", lambda: asyncio.run(ours(conn, disk, True)))[0]
            t_plain = timed("imagedist, no MD5", lambda: asyncio.run(ours(conn, disk, False)))[0]
            t_read, chunks = timed("floor: read the data", lambda: read_data(disk))
            t_accept = timed(
                "floor: Azurite accepts it",
                lambda: asyncio.run(accept(conn, disk.stat().st_size, chunks)),
            )[0]
            rows += [
                ("floor: read data + Azurite accepts it", t_read + t_accept),
                ("imagedist upload (Content-MD5 of the whole disk)", t_ours),
                ("imagedist upload, upload.content_md5 = false", t_plain),
            ]
        finally:
            process.terminate()
            process.wait()
    print()
    title = (
        f"upload to Azurite, {options.size_gib} GiB sparse disk with {options.data_gib} GiB"
        f" of data in 8 extents"
    )
    print(table(title, rows, "floor: read data + Azurite accepts it"))
    if not options.skip_naive:
        print()
        print(table(title + " (against naive)", rows, rows[0][0]))


if __name__ == "__main__":
    main()
