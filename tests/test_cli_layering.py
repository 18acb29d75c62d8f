"""The CLI is a thin client of the library: it parses and renders, `Imagedist` does (issue 9).

Every module of ``imagedist._cli`` may import only the library's front door and the values it
speaks in; never the engine, the planner, the adapters or the disk-image internals. The web
dashboard (issue 12) is a client of the same front door, held to a narrower rule still.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imagedist._cli

CLI_DIR = Path(imagedist._cli.__file__).parent
WEB_DIR = CLI_DIR.parent / "_web"
# The imagedist modules a command may use: the API, loading the config, the domain's values,
# the errors it maps to exit codes, redaction (the terminal is an edge), the disk-image
# package's public names (sizes and their formatting) and the dashboard `serve` starts.
ALLOWED = {"", "_api", "_config", "_domain", "_exceptions", "_redact", "_vhd", "_web"}
FORBIDDEN = ("_engine", "_plan", "_backends", "_sim", "_vhd.", "_web.")
# The dashboard's modules: the API, the config, the domain's values, the errors it maps to HTTP
# statuses and redaction (every response is an edge); nothing of the CLI or the disk internals.
WEB_ALLOWED = {"", "_api", "_config", "_domain", "_exceptions", "_redact"}


def _imported(tree: ast.Module) -> list[str]:
    """The imagedist modules ``tree`` imports, relative to the package ("" for the package)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 2:
            found.append(node.module or "")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += _absolute([node.module])
        elif isinstance(node, ast.Import):
            found += _absolute([alias.name for alias in node.names])
    return found


def _absolute(names: list[str]) -> list[str]:
    return [
        n.removeprefix("imagedist").lstrip(".") for n in names if n.split(".")[0] == "imagedist"
    ]


def _allowed(module: str) -> bool:
    return module.split(".")[0] in ALLOWED and not module.startswith(FORBIDDEN)


def _web_allowed(module: str) -> bool:
    return module.split(".")[0] in WEB_ALLOWED and not module.startswith(FORBIDDEN)


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_a_command_module_imports_only_the_library_api(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    wrong = [m for m in _imported(tree) if not _allowed(m)]
    assert not wrong, f"{path.name} reaches past the library API into {wrong}"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("from .._engine import JobStatus", id="engine"),
        pytest.param("from .._engine._setup import Change", id="engine-module"),
        pytest.param("from .._plan import plan_distribution", id="plan"),
        pytest.param("from .._backends.sim import open_backend", id="backends"),
        pytest.param("from .._vhd._validate import human", id="vhd-internals"),
        pytest.param("import imagedist._engine", id="absolute-import"),
        pytest.param("from imagedist._plan import Plan", id="absolute-from"),
    ],
)
def test_the_check_catches_a_reach_past_the_api(source: str) -> None:
    assert not all(_allowed(m) for m in _imported(ast.parse(source)))


def test_the_check_lets_the_api_through() -> None:
    source = "from .._api import Imagedist\nfrom .._vhd import human\nfrom ._common import State"
    assert all(_allowed(m) for m in _imported(ast.parse(source)))


@pytest.mark.parametrize("path", sorted(WEB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_a_dashboard_module_imports_only_the_library_api(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    wrong = [m for m in _imported(tree) if not _web_allowed(m)]
    assert not wrong, f"{path.name} reaches past the library API into {wrong}"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("from .._engine import JobStatus", id="engine"),
        pytest.param("from .._plan import Plan", id="plan"),
        pytest.param("from .._cli._render import status_to_dict", id="cli"),
        pytest.param("from .._vhd import human", id="vhd"),
        pytest.param("from .._backends.local import open_backend", id="backends"),
    ],
)
def test_the_dashboard_check_catches_a_reach_past_the_api(source: str) -> None:
    assert not all(_web_allowed(m) for m in _imported(ast.parse(source)))
