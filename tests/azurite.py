"""Start Azurite (blob + queue + table) for tests, with several storage accounts of our own.

Use the session-scoped :func:`azurite_server` fixture from a conftest::

    from azurite import azurite_server  # noqa: F401  (re-exported fixture)

or build a server yourself with :func:`start_azurite` / :class:`AzuriteServer` as a context manager.
The fixture skips the test, with a hint, when the ``azurite`` command is not installed.

Azurite runs in memory on free ports of 127.0.0.1 and knows only the accounts given to it through
``AZURITE_ACCOUNTS``; each gets a freshly generated key, so tests can grep logs for the keys.

Given a certificate (``tls=``), it speaks HTTPS and accepts Entra ID bearer tokens
(``--oauth basic``): it checks their issuer, audience and lifetime, not their signature, and
issues user delegation keys, so the SDKs' token-credential path runs against it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

import pytest

__all__ = [
    "DEFAULT_ACCOUNTS",
    "INSTALL_HINT",
    "OAUTH_MIN_VERSION",
    "AzuriteNotInstalled",
    "AzuriteServer",
    "azurite_server",
    "azurite_version",
    "start_azurite",
]

HOST = "127.0.0.1"
#: A staging account and a few target accounts; callers may pass their own names.
DEFAULT_ACCOUNTS: tuple[str, ...] = ("stagingacct", "targetacct", "target2acct", "target3acct")
#: Where ``scripts/bootstrap test`` installs it, looked at when it is not on PATH.
LOCAL_AZURITE = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin" / "azurite"
INSTALL_HINT = (
    "Azurite is not installed: the 'azurite' command is not on PATH (nor in .tools/). "
    "Install it with `npm install -g azurite` (Node.js 18+), or run `scripts/bootstrap test`, "
    "then rerun the tests."
)
_START_TIMEOUT = 30.0


#: The first Azurite that checks user-delegation SAS of service version 2026-04-06 and later,
#: which the installed storage SDK signs (Azurite issue 2649); older ones refuse every such copy.
OAUTH_MIN_VERSION = (3, 37, 0)


class AzuriteNotInstalled(RuntimeError):
    """The ``azurite`` command is not on PATH, or is too old for what the test asks."""


def _executable() -> str:
    exe = shutil.which("azurite") or shutil.which(str(LOCAL_AZURITE))
    if exe is None:
        raise AzuriteNotInstalled(INSTALL_HINT)
    return exe


def azurite_version() -> tuple[int, ...]:
    """The installed Azurite's version, as numbers.

    :raises AzuriteNotInstalled: if the ``azurite`` command is not on PATH.
    """
    out = subprocess.run(
        [_executable(), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    return tuple(int(part) for part in out.stdout.strip().split(".")[:3])


@dataclass
class AzuriteServer:
    """A running Azurite process and how to reach each of its accounts."""

    accounts: dict[str, str]  # account name -> base64 key
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    workdir: Path | None = field(default=None, repr=False)
    scheme: str = "http"  # "https" with OAuth

    @property
    def oauth(self) -> bool:
        """Whether it accepts bearer tokens (it then speaks HTTPS only)."""
        return self.scheme == "https"

    # -- endpoints ----------------------------------------------------------------------------------

    def blob_endpoint(self, account: str) -> str:
        self._check(account)
        return f"{self.scheme}://{HOST}:{self.blob_port}/{account}"

    def queue_endpoint(self, account: str) -> str:
        self._check(account)
        return f"{self.scheme}://{HOST}:{self.queue_port}/{account}"

    def table_endpoint(self, account: str) -> str:
        self._check(account)
        return f"{self.scheme}://{HOST}:{self.table_port}/{account}"

    def key(self, account: str) -> str:
        self._check(account)
        return self.accounts[account]

    @property
    def keys(self) -> list[str]:
        """Every account key, for tests that assert no key leaked into a log."""
        return list(self.accounts.values())

    def connection_string(self, account: str) -> str:
        """An account-key connection string with blob, queue and table endpoints."""
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={account};AccountKey={self.key(account)};"
            f"BlobEndpoint={self.blob_endpoint(account)};"
            f"QueueEndpoint={self.queue_endpoint(account)};"
            f"TableEndpoint={self.table_endpoint(account)};"
        )

    def _check(self, account: str) -> None:
        if account not in self.accounts:
            raise KeyError(f"Azurite was not started with account {account!r}")

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its work folder."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> AzuriteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def generate_key() -> str:
    """A random 64-byte account key, base64 encoded like Azure's."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_azurite(
    accounts: Sequence[str] = DEFAULT_ACCOUNTS,
    *,
    tls: tuple[Path, Path, Path] | None = None,
    timeout: float = _START_TIMEOUT,
) -> AzuriteServer:
    """Start Azurite with ``accounts`` and wait until every service accepts connections.

    :param tls: a PEM certificate, its key and the CA that signed it: serve HTTPS and accept
        bearer tokens (``--oauth basic``). Clients must trust the CA; so does Azurite itself,
        which reads a copy's source URL to check its SAS before copying.

    :raises AzuriteNotInstalled: if the ``azurite`` command is not on PATH, or is older than
        :data:`OAUTH_MIN_VERSION` when ``tls`` is given.
    :raises RuntimeError: if it exits or does not listen within ``timeout`` seconds.
    """
    exe = _executable()
    if tls is not None and (version := azurite_version()) < OAUTH_MIN_VERSION:
        wanted = ".".join(map(str, OAUTH_MIN_VERSION))
        raise AzuriteNotInstalled(
            f"Azurite {'.'.join(map(str, version))} is too old for the Entra ID tests: it refuses"
            f" the user-delegation SAS the storage SDK signs; install azurite@{wanted} or later"
            " (`npm install -g azurite@3`), then rerun the tests."
        )
    if not accounts:
        raise ValueError("give Azurite at least one account")
    keys = {name: generate_key() for name in accounts}
    last_error = ""
    for _attempt in range(3):  # a free port may be taken between probing and binding
        server = _launch(exe, keys, tls, timeout)
        if isinstance(server, AzuriteServer):
            return server
        last_error = server
    raise RuntimeError(f"Azurite did not start: {last_error}")


def _launch(
    exe: str, keys: dict[str, str], tls: tuple[Path, Path, Path] | None, timeout: float
) -> AzuriteServer | str:
    ports = _free_port(), _free_port(), _free_port()
    if len(set(ports)) < 3:
        return "port clash"
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    blob, queue, table = ports
    cmd = [
        exe,
        "--silent",
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--blobHost", HOST, "--blobPort", str(blob),
        "--queueHost", HOST, "--queuePort", str(queue),
        "--tableHost", HOST, "--tablePort", str(table),
    ]  # fmt: skip
    if tls is not None:
        cmd += ["--oauth", "basic", "--cert", str(tls[0]), "--key", str(tls[1])]
    env = dict(os.environ)
    env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in keys.items())
    if tls is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(tls[2])  # in addition to Node's CAs, this process only
    log = workdir / "azurite.log"  # a file, not a pipe nobody drains
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,  # Azurite may still drop a file or two in its working folder
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = AzuriteServer(
        dict(keys),
        blob,
        queue,
        table,
        process=proc,
        workdir=workdir,
        scheme="http" if tls is None else "https",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            server.stop()
            return f"exit status {proc.returncode}: {output.strip()[-2000:]}"
        if all(_accepts(port) for port in ports):
            return server
        time.sleep(0.1)
    server.stop()
    return f"no connection on ports {ports} within {timeout:.0f} s"


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """One Azurite for the session, with :data:`DEFAULT_ACCOUNTS`; skips if not installed."""
    try:
        server = start_azurite()
    except AzuriteNotInstalled as exc:
        print(exc)  # shown with -s; the skip reason says the same
        pytest.skip(str(exc))
    with server:
        yield server


@contextlib.asynccontextmanager
async def fresh_table(connection_string: str, prefix: str) -> AsyncIterator[TableClient]:
    """A new table (named ``prefix`` and a random tail) and its client, both closed with the
    service client on the running loop."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(connection_string) as service:
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        await service.create_table(name)
        yield service.get_table_client(name)
