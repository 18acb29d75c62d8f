"""`imagedist serve` (issue 12): bad input is one sentence and exit status 2; a host other than
loopback gets a token, printed once; loopback needs none."""

from __future__ import annotations

import fnmatch
import os
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import imagedist._web

Served = list[dict[str, Any]]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    """What `serve` would have served with, instead of serving (the socket is really bound)."""
    calls: Served = []

    def record(factory: Any, sock: socket.socket, **options: Any) -> None:
        calls.append({"address": sock.getsockname(), **options})

    monkeypatch.setattr(imagedist._web, "serve", record)
    return calls


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _one_sentence(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_a_port_in_use_is_one_sentence(
    cli: Callable[..., Result], config_path: Path, busy_port: int, served: Served
) -> None:
    line = _one_sentence(cli(config_path, "serve", "--port", str(busy_port)))
    assert line == (
        f"Error: Port {busy_port} on 127.0.0.1 is in use; stop what listens there or give"
        " another --port."
    )
    assert served == []


def test_a_missing_token_file_is_one_sentence(
    cli: Callable[..., Result], config_path: Path, tmp_path: Path, served: Served
) -> None:
    missing = tmp_path / "nope"
    line = _one_sentence(cli(config_path, "serve", "--token-file", str(missing)))
    assert line.startswith(f"Error: Cannot read the token file {str(missing)!r}")
    assert served == []


def test_a_token_file_that_is_not_a_regular_file_is_refused(
    cli: Callable[..., Result], config_path: Path, tmp_path: Path, served: Served
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block until a writer came
    for path in (tmp_path, fifo):
        line = _one_sentence(cli(config_path, "serve", "--token-file", str(path)))
        assert line == (
            f"Error: The token file {str(path)!r} is not a regular file; give a file that holds"
            " the dashboard's token."
        )
    assert served == []


def test_an_unreadable_or_short_token_is_refused(
    cli: Callable[..., Result], config_path: Path, tmp_path: Path, served: Served
) -> None:
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    line = _one_sentence(cli(config_path, "serve", "--token-file", str(short)))
    assert "must be one word of at least 16 characters" in line
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked"
        locked.write_text("x" * 32)
        locked.chmod(0)
        assert "Cannot read the token file" in _one_sentence(
            cli(config_path, "serve", "--token-file", str(locked))
        )
    assert served == []


def test_a_bad_port_is_one_sentence(cli: Callable[..., Result], config_path: Path) -> None:
    line = _one_sentence(cli(config_path, "serve", "--port", "70000"))
    assert "70000" in line and "`imagedist serve --help` shows the usage." in line


def test_loopback_needs_no_token(
    cli: Callable[..., Result], config_path: Path, served: Served
) -> None:
    result = cli(config_path, "serve", "--port", "0", "--read-only")
    assert result.exit_code == 0, result.output
    assert served[0]["token"] is None and served[0]["read_only"] is True
    port = served[0]["address"][1]
    assert f"Dashboard at http://127.0.0.1:{port}/ (read-only, Ctrl-C stops it)" in result.output


def test_another_host_gets_a_token_printed_once(
    cli: Callable[..., Result], config_path: Path, served: Served
) -> None:
    result = cli(config_path, "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 0, result.output
    token = served[0]["token"]
    assert isinstance(token, str) and len(token) >= 32
    assert result.stderr.count(token) == 1
    assert token not in result.stdout


def test_a_token_file_is_used_on_any_host(
    cli: Callable[..., Result], config_path: Path, tmp_path: Path, served: Served
) -> None:
    secret = tmp_path / "token"
    secret.write_text("a-long-enough-token-for-the-test\n")
    result = cli(config_path, "serve", "--port", "0", "--token-file", str(secret), "--worker")
    assert result.exit_code == 0, result.output
    assert served[0]["token"] == "a-long-enough-token-for-the-test"
    assert served[0]["worker"] is True
    assert "a-long-enough-token" not in result.output


def test_demo_serve_runs_the_job_in_the_dashboard(
    cli: Callable[..., Result], config_path: Path, tmp_path: Path, served: Served
) -> None:
    result = cli(config_path, "demo", "--dir", str(tmp_path / "demo"), "--serve", "--port", "0")
    assert result.exit_code == 0, result.output
    assert served[0]["worker"] is True and served[0]["token"] is None
    job = next(line.split()[1] for line in result.output.splitlines() if line.startswith("job "))
    port = served[0]["address"][1]
    assert f"Dashboard at http://127.0.0.1:{port}/jobs/{job} " in result.output


def test_the_wheel_carries_every_template_and_static_file() -> None:
    root = Path(__file__).parent.parent
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["imagedist"]
    package = root / "src" / "imagedist"
    files = [
        p.relative_to(package).as_posix()
        for folder in ("_web/templates", "_web/static")
        for p in (package / folder).iterdir()
    ]
    assert files
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []
