"""Config contents this code has validated, remembered so that reading jobs can skip pydantic.

`status`, `jobs` and `logs` need from the config only where the state store is, yet loading
pydantic and validating the config's models is most of their start (issue 13). So once the full
validation accepted a config's contents, a small record in the user's cache folder says so: it
is named by the SHA-256 of the contents and holds the local backend's folder as the config
gives it. The next read of the same contents by the same code takes the folder from it. Other
contents (an edit, a mistake) or other code (any file of a module the validation had loaded
changed, another Python) are validated in full again, so a bad config gets exactly the error it
always got. Nothing here imports pydantic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config_file import local_root

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["remember_valid", "remembered_local_root"]

FORMAT = 1  # of the records; a record of another format is not used
# The packages whose code decides whether a config is valid: a record holds the size and time
# of each of their files the validation had loaded, and is used only while all are unchanged.
VALIDATING_PACKAGES = frozenset(
    {
        "imagedist",
        "pydantic",
        "pydantic_core",
        "annotated_types",
        "typing_extensions",
        "typing_inspection",
    }
)


def remembered_local_root(content: bytes, config_path: Path) -> Path | None:
    """The local backend's folder of the config at ``config_path`` whose contents are
    ``content``, if this code validated these very contents before; ``None`` if it did not (or
    the config names another backend): then validate it in full."""
    record = _read_record(content)
    if record is None:
        return None
    return local_root(config_path.parent, record["local_root"])


def remember_valid(content: bytes, config: Config) -> None:
    """Remember that ``content`` validated as ``config`` (with the code loaded now). A config of
    another backend than the local one is not remembered: its state store needs the settings of
    the whole ``[azure]`` table. Best effort: a cache folder that cannot be written to only
    means the next read validates in full again."""
    folder = _cache_folder()
    if folder is None or config.backend != "local":
        return
    record = {
        "format": FORMAT,
        "python": sys.version,
        "code": _code_files(),
        "local_root": config.local.root,
    }
    path = folder / f"{_name(content)}.json"
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, path)  # whole or not at all, for a reader at the same moment
    except OSError:
        with contextlib.suppress(OSError):  # not made, or its folder cannot be reached either
            partial.unlink()


def _read_record(content: bytes) -> dict[str, Any] | None:
    """The record of ``content``, if there is one of this format, Python and code."""
    folder = _cache_folder()
    if folder is None:
        return None
    try:
        record = json.loads((folder / f"{_name(content)}.json").read_text(encoding="utf-8"))
        current = (
            record["format"] == FORMAT
            and record["python"] == sys.version
            and isinstance(record["local_root"], str)
            and all(_stamp(file) == [size, mtime] for file, size, mtime in record["code"])
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None  # none yet, or damaged: validate in full (which writes it anew)
    return record if current else None


def _code_files() -> list[list[Any]]:
    """[file, size, modification time] of every loaded module of the validating packages."""
    files = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.partition(".")[0] in VALIDATING_PACKAGES and file:
            files.append([file, *_stamp(file)])
    return sorted(files)


def _stamp(file: str) -> list[int]:
    status = os.stat(file)
    return [status.st_size, status.st_mtime_ns]


def _name(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _cache_folder() -> Path | None:
    """Where the records go: ``$XDG_CACHE_HOME/imagedist/configs``, by default under
    ``~/.cache``; ``None`` if there is no home folder to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "imagedist" / "configs"
