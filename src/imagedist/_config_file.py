"""The config file's bytes and what a command takes from them before (or without) validating
them: kept apart from the config's models, so that reading it does not load pydantic."""

from __future__ import annotations

from pathlib import Path

from ._exceptions import ConfigError
from ._files import NotARegularFile, read_regular_file

__all__ = ["local_root", "read_config_bytes"]


def read_config_bytes(path: Path) -> bytes:
    """The config file's contents.

    :raises ConfigError: naming the path and the fix, if it is missing or cannot be read.
    """
    where = repr(str(path))
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {where} does not exist; pass --config or create it"
            " (see `imagedist demo` for an example)."
        ) from None
    except NotARegularFile as exc:
        raise ConfigError(
            f"Cannot read config file {where}: it is {exc.kind}, not a file; pass the path of"
            " a TOML file."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {where}: {exc.strerror}.") from None


def local_root(base_dir: Path, root: str) -> Path:
    """The local backend's folder: ``[local] root``, relative to the config file's folder."""
    return (base_dir / root).resolve()
