"""The user's files: only regular files are read, and never with a call that can block.

Opening a FIFO for reading waits for a writer, and /dev/zero never ends; a path given as a config,
a subscriptions list or a disk is therefore checked to be a regular file before anything reads it
(``os.stat`` never blocks), and read through a non-blocking open so that a file swapped for a
FIFO in between cannot hang either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._exceptions import InvalidInput

__all__ = [
    "NotARegularFile",
    "check_folder",
    "check_regular_file",
    "kind_of",
    "open_regular_file",
    "read_regular_file",
]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFile(OSError):
    """Raised for a path that exists but is a directory, FIFO, device or socket.

    :ivar kind: what it is instead, as a phrase ("a FIFO (named pipe)").
    """

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{str(path)!r} is {kind}, not a regular file")
        self.kind = kind


def kind_of(mode: int) -> str | None:
    """What a file of this ``st_mode`` is, as a phrase, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


# Not every platform has every flag (Windows has no O_NONBLOCK; only it has O_BINARY).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0)


def open_regular_file(path: Path) -> int:
    """A read-only descriptor of the regular file ``path``, opened without blocking.

    :raises NotARegularFile: if it is anything else (checked on the open file, so a FIFO put in
        its place after a check still cannot block a read).
    :raises OSError: if it cannot be opened (FileNotFoundError when it does not exist).
    """
    fd = os.open(path, _OPEN_FLAGS)
    kind = kind_of(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise NotARegularFile(path, kind)
    return fd


def read_regular_file(path: Path) -> bytes:
    """The contents of the regular file ``path``.

    :raises NotARegularFile: if it is anything else (see :func:`open_regular_file`).
    :raises OSError: if it cannot be opened or read (FileNotFoundError when it does not exist).
    """
    with os.fdopen(open_regular_file(path), "rb") as file:
        return file.read()


def check_regular_file(path: Path, fix: str) -> None:
    """Check, without opening it, that ``path`` is a regular file one can read.

    :param fix: what the user should give instead, ending the sentence ("give the path of a
        disk image file").
    :raises InvalidInput: naming the path, what it is, and ``fix``.
    """
    where = repr(str(path))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidInput(f"File {where} does not exist; {fix}.") from None
    except OSError as exc:
        raise InvalidInput(f"{where} cannot be read ({exc.strerror}); {fix}.") from None
    kind = kind_of(mode)
    if kind is not None:
        raise InvalidInput(f"{where} is {kind}, not a regular file; {fix}.")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"{where} cannot be read (permission denied); {fix}.")


def check_folder(path: Path, key: str) -> None:
    """Check that ``path`` is a folder or can be made one: neither it nor a parent is a file.

    :param key: the config key that named it ("[local] root"), for the message.
    :raises InvalidInput: naming the key, the path and the file in the way.
    """
    for place in (path, *path.parents):
        try:
            mode = place.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # made when first needed, or a parent is in the way: look further up
        except OSError as exc:
            raise InvalidInput(
                f"{key} {str(path)!r} cannot be used ({exc.strerror} at {str(place)!r});"
                f" point {key} at a folder you can write to."
            ) from None
        if stat.S_ISDIR(mode):
            return
        what = "is" if place == path else f"lies under {str(place)!r}, which is"
        raise InvalidInput(
            f"{key} {str(path)!r} {what} {kind_of(mode) or 'a file'}, not a folder;"
            f" point {key} at a folder."
        )
