"""scripts/floors pins every runtime dependency at the floor pyproject.toml gives it.

CI installs the Azure-facing tests at those versions (scripts/test-floors); this keeps the
constraints it installs with equal to pyproject.toml's floors, for every dependency there is now
and any added later, in the core list or in any extra.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "floors"


def _floors(pyproject: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pyproject)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def test_every_runtime_dependency_has_a_floor() -> None:
    for requirement in _runtime_requirements():
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(floors) == 1, f"{requirement} needs one '>=' floor"


def test_the_constraints_pin_each_dependency_at_its_floor() -> None:
    result = _floors(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stderr
    pins = {
        Requirement(line).name: Requirement(line)
        for line in result.stdout.splitlines()
        if line and not line.startswith("#")
    }

    expected = _runtime_requirements()
    assert sorted(pins) == sorted(r.name for r in expected)
    for requirement in expected:
        (floor,) = (spec.version for spec in requirement.specifier if spec.operator == ">=")
        assert str(pins[requirement.name].specifier) == f"=={floor}", requirement
        assert pins[requirement.name].marker == requirement.marker


def test_a_dependency_without_a_floor_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = ["click>=8.1"]\n'
        '[project.optional-dependencies]\nextra = ["some-sdk<3"]\n',
        encoding="utf-8",
    )

    result = _floors(pyproject)

    assert result.returncode == 2
    assert "'some-sdk<3' has no single '>=' floor" in result.stderr
    assert result.stdout == ""


def test_markers_and_extras_of_a_requirement_are_handled(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\nversion = "1"\n'
        "dependencies = [\"uvloop[dev] >=0.19, <1 ; sys_platform != 'win32'\"]\n",
        encoding="utf-8",
    )

    result = _floors(pyproject)

    assert result.returncode == 0, result.stderr
    assert "uvloop==0.19 ; sys_platform != 'win32'" in result.stdout.splitlines()
