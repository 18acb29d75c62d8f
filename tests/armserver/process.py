"""Run the test ARM server as a subprocess (``python -m armserver``) shared by many client processes."""

from __future__ import annotations

import json
import os
import select
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .control import Control

Json = dict[str, Any]
TESTS_DIR = Path(__file__).resolve().parent.parent  # the directory that holds the armserver package


class ArmServerProcess(Control):
    """``with ArmServerProcess(cert_dir) as server:`` — a server in a child process.

    The child exits when this handle stops it or when this process dies (its stdin closes).
    Its stderr goes to ``<cert_dir>/armserver.log``.
    """

    def __init__(
        self,
        cert_dir: str | os.PathLike[str],
        *,
        image_delay: float | None = None,
        lro_delay: float | None = None,
        blob_endpoint_template: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        page_size: int | None = None,
        verbose: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.cert_dir = Path(cert_dir)
        self._args: list[str] = [
            "--port",
            "0",
            "--cert-dir",
            str(self.cert_dir),
            "--exit-on-stdin-eof",
        ]
        if image_delay is not None:
            self._args += ["--image-delay", str(image_delay)]
        if lro_delay is not None:
            self._args += ["--lro-delay", str(lro_delay)]
        if blob_endpoint_template is not None:
            self._args += ["--blob-endpoint-template", blob_endpoint_template]
        if state_file is not None:
            self._args += ["--state-file", str(state_file)]
        if page_size is not None:
            self._args += ["--page-size", str(page_size)]
        if verbose:
            self._args.append("--verbose")
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}" if self.port else ""

    @property
    def ca_file(self) -> str:
        return str(self.cert_dir / "ca.pem") if self.port else ""

    @property
    def log_file(self) -> Path:
        return self.cert_dir / "armserver.log"

    def start(self) -> ArmServerProcess:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        self._log = open(self.log_file, "a")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "armserver", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], self._start_timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(
                f"armserver did not start (first line {line!r}); see {self.log_file}:\n"
                + self.log_file.read_text()[-2000:]
            )
        self.port = int(line)
        self._ssl = ssl.create_default_context(cafile=self.ca_file)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # --exit-on-stdin-eof: the child shuts down
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ArmServerProcess:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _control(self, method: str, path: str, body: Json | None = None) -> Json:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/_test/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
                result: Json = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            err.close()
            raise RuntimeError(
                f"armserver control {method} {path} failed: {err.code} {detail}"
            ) from None
