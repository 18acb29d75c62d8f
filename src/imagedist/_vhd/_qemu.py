"""Running qemu-img on qcow2, VMDK and VHDX images, which imagedist does not read itself.

qemu-img is always told the format we detected (``-f``), so a file never chooses how it is
read, and always given an absolute path, so a name such as ``nbd:host:10809`` or ``json:{...}``
is never taken for a protocol. Before converting, ``qemu-img info --backing-chain`` must agree
with our own reading of the headers (:mod:`._foreign`) that the image names no other file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput

__all__ = ["INSTALL_QEMU", "info_reference", "qemu_img_path", "run_convert", "run_info"]

INSTALL_QEMU = (
    "install it with `apt-get install qemu-utils` (Debian, Ubuntu) or `brew install qemu` (macOS)"
)
INFO_TIMEOUT = 120.0  # seconds: reading headers is instant; more means a pipe or a device


def qemu_img_path() -> str | None:
    return shutil.which("qemu-img")


def _require_qemu_img(path: Path, fmt: str) -> str:
    qemu_img = qemu_img_path()
    if qemu_img is None:
        raise InvalidInput(
            f"{str(path)!r} is a {fmt} image, and converting it needs qemu-img, which is not on"
            f" PATH; {INSTALL_QEMU}."
        )
    return qemu_img


def _reason(stderr: str, returncode: int) -> str:
    """qemu-img's last error line without its prefixes, for our own sentence."""
    lines = stderr.strip().splitlines() or [f"exit status {returncode}"]
    return re.sub(r"^(qemu-img: )?(Could not open '.*?': )*", "", lines[-1]).rstrip(".")


def run_info(path: Path, fmt: str) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain --output=json`` of ``path`` read as ``fmt``: one entry
    per image in the chain (just one for a self-contained image).

    :raises InvalidInput: if qemu-img is missing, cannot read the file, or takes too long.
    """
    qemu_img = _require_qemu_img(path, fmt)
    where = repr(str(path))
    command = [qemu_img, "info", "--backing-chain", "--output=json", "-f", fmt]
    try:
        done = subprocess.run(
            [*command, str(path.absolute())],
            capture_output=True,
            text=True,
            check=False,
            timeout=INFO_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            f"qemu-img took more than {INFO_TIMEOUT:.0f} seconds to read the headers of {where};"
            " check that it is a disk image file and not a pipe or a device."
        ) from None
    if done.returncode != 0:
        raise InvalidInput(
            f"qemu-img could not read {where} ({_reason(done.stderr, done.returncode)}); check"
            f" that it is a valid, self-contained {fmt} image."
        )
    try:
        chain = json.loads(done.stdout)
    except ValueError:
        chain = None
    if not isinstance(chain, list) or not all(isinstance(entry, dict) for entry in chain):
        raise InvalidInput(
            f"qemu-img described {where} in a way imagedist does not understand; check that it"
            f" is a valid {fmt} image and that qemu-img is a released version."
        )
    return chain


def info_reference(path: Path, chain: list[dict[str, Any]]) -> str | None:
    """What other file qemu-img says ``path`` names (see :func:`._foreign.external_reference`)."""
    if not chain:
        return "nothing qemu-img could describe"
    first = chain[0]
    backing = first.get("full-backing-filename") or first.get("backing-filename")
    if len(chain) > 1 or backing:
        return f"a backing file ({str(backing or chain[1].get('filename'))!r})"
    specific = first.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if not isinstance(data, dict):
        return None
    if data.get("data-file"):
        return f"an external data file ({str(data['data-file'])!r})"
    for extent in data.get("extents") or []:
        name = extent.get("filename") if isinstance(extent, dict) else None
        if not _same_file(str(name or ""), path):
            return f"an extent in another file ({str(name)!r})"
    return None


def _same_file(name: str, path: Path) -> bool:
    try:
        return bool(name) and os.path.samefile(name, path)
    except (OSError, ValueError):
        return False


def run_convert(path: Path, fmt: str, out: Path) -> None:
    """``qemu-img convert -f fmt -O raw path out``.

    :raises InvalidInput: if qemu-img is missing or fails, with its reason.
    """
    qemu_img = _require_qemu_img(path, fmt)
    command = [qemu_img, "convert", "-q", "-f", fmt, "-O", "raw"]
    done = subprocess.run(
        [*command, str(path.absolute()), str(out.absolute())],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise InvalidInput(
            f"qemu-img could not convert {str(path)!r} ({_reason(done.stderr, done.returncode)});"
            f" check that it is a valid {fmt} image."
        )
