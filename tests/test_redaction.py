"""No secret reaches a log, the state store, an error message or the terminal, in any encoding.

Each kind of secret (a SAS in a URL or bare, a ``sig=``, an account key, a bearer token or JWT) is
planted in plain, percent-encoded (once and twice), JSON-escaped, JSON-body and inside-a-URL form
into errors raised by every adapter, and every output is searched for it afterwards: stdout,
stderr, ``status --json``, ``logs --json`` and the bytes of the SQLite state files.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from azure.core.exceptions import HttpResponseError
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st

from imagedist._api import JobReader
from imagedist._backends.azure.errors import translate_errors
from imagedist._backends.local import blobs as _local_blobs
from imagedist._backends.local import images as _local_images
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._backends.local.images import LocalImageService
from imagedist._backends.sim import (
    SimBlobStore,
    SimImageService,
    open_sim_backend,
    preload_tier0,
    run_virtual,
    scenario_config,
)
from imagedist._backends.sim.scenario import _sparse_fixed_vhd
from imagedist._cli._render import log_to_dict, status_to_dict
from imagedist._config import generated_account_name
from imagedist._domain import BlobRef, OsType
from imagedist._engine import EngineContext, Worker, job_status, submit_job
from imagedist._exceptions import ImagedistError, OperationFailed, TransientError
from imagedist._redact import _redact_everywhere, redact
from imagedist.abc import ImageSpec

Cli = Callable[..., Result]

# The secrets: each carries an alphanumeric marker that no encoding changes, so finding the
# marker anywhere means the secret leaked, whatever form it took.
MARKERS = ("Sig5ecretMarker", "KeySecretMarker", "JwtSecretMarker", "OpaqueSecretMarker")
SIG = "Sig5ecretMarker0Q9+/w2Zk7Lm0Pq8Rt4Yv6Bn3Cx5D="
KEY = "KeySecretMarker0" + "Ab+/" * 17 + "Zq=="  # 88 characters, as a storage account key
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL3N0b3JhZ2UifQ.JwtSecretMarker0_-x"
OPAQUE = "OpaqueSecretMarker0abc-._~+/"
SAS_URL = (
    "https://acct.blob.core.windows.net/imagedist/jobs/j/golden.vhd?sv=2024-08-04&ss=b&srt=o"
    f"&sp=r&se=2026-01-01T00%3A00%3A00Z&sig={quote(SIG, safe='')}"
)

FORMS = {
    "sas-url": f"copy source {SAS_URL} was refused",
    "sas-query": f"query ?sv=2024-08-04&sr=b&sp=r&sig={SIG}",
    "bare-sas": f"token sv=2024-08-04&sr=b&sp=r&sig={SIG}",
    "sig": f"signature sig={SIG} did not match",
    "connection-string": (
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=x"
    ),
    "sas-connection-string": (
        f"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2024-08-04"
        f"&sig={SIG}"
    ),
    "account-key": f"the key {KEY} was refused",
    "shared-key": f"Authorization: SharedKey acct:{SIG}",
    "bearer-jwt": f"Authorization: Bearer {JWT}",
    "jwt": f"token {JWT} expired",
    "bearer-token": f"Authorization: Bearer {OPAQUE}",
}


def _json_escaped(text: str) -> str:
    # As a JSON encoder that escapes '/' and '&' writes it inside a string.
    return json.dumps(text)[1:-1].replace("/", "\\/").replace("&", "\\u0026")


ENCODINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda text: text,
    "percent": lambda text: quote(text, safe=""),
    "percent-twice": lambda text: quote(quote(text, safe=""), safe=""),
    "json-escaped": _json_escaped,
    "json-body": lambda text: json.dumps({"error": {"code": "AuthFailure", "message": text}}),
    "in-url": lambda text: f"https://h.example/a?comp=copy&detail={quote(text, safe='')}",
}


def leaks(text: str) -> list[str]:
    return [marker for marker in MARKERS if marker in text]


def planted(encoding: str) -> str:
    """Every form of secret, in one encoding, behind a marker that shows the message arrived."""
    encode = ENCODINGS[encoding]
    return "PLANTED " + " | ".join(encode(form) for form in FORMS.values())


# -- redact() itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("form", FORMS)
def test_redact_removes_every_form_in_every_encoding(form: str, encoding: str) -> None:
    text = f"error: {ENCODINGS[encoding](FORMS[form])} (HTTP 403)"
    assert leaks(text)  # the planted text does carry the secret
    cleaned = redact(text)
    assert not leaks(cleaned), cleaned
    assert redact(cleaned) == cleaned  # idempotent: every layer may redact again


@pytest.mark.parametrize(
    "text",
    [
        "copy into blob 'acct/imagedist/jobs/20260101-000000-ab12/golden.vhd' failed"
        " (HTTP 409, PendingCopyOperation)",
        "image 'golden.eastus' refused: InvalidParameter",
        "job submitted: golden (8388608 bytes) to 6 targets, 1 disabled and skipped",
        "source blob 'https://acct.blob.core.windows.net/c/d.vhd' does not exist",
        "converted 'C:\\disks\\golden.vhd' to a fixed VHD at 12:30:00",
        "Config file '/tmp/x/imagedist.toml' is not valid TOML: Expected '=' (at line 2).",
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


SECRET_TEMPLATES = [
    "sig={s}",
    "?sv=2024-08-04&sr=b&sig={q}",
    "https://a.blob.core.windows.net/c/b.vhd?se=2026&sig={q}",
    "AccountKey={k};",
    "key {k}",
    "Authorization: Bearer {s}",
]
CONTEXT = st.text(alphabet=" .:,;()[]{}'\"-=&?/", max_size=12)


@given(
    short=st.binary(min_size=32, max_size=32),
    long=st.binary(min_size=64, max_size=64),
    template=st.sampled_from(SECRET_TEMPLATES),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    before=CONTEXT,
    after=CONTEXT,
)
def test_redact_removes_any_secret_in_any_context(
    short: bytes, long: bytes, template: str, encoding: str, before: str, after: str
) -> None:
    s, k = base64.b64encode(short).decode(), base64.b64encode(long).decode()
    secret = template.format(s=s, q=quote(s, safe=""), k=k)
    cleaned = redact(f"{before} {ENCODINGS[encoding](secret)} {after}")
    for run in re.findall(r"[A-Za-z0-9]{10,}", k if "{k}" in template else s):
        assert run not in cleaned, cleaned


FRAGMENTS = st.sampled_from(
    [
        *(ENCODINGS[e](FORMS[f]) for e in sorted(ENCODINGS) for f in sorted(FORMS)),
        *"?=%\\&:;/ .'\"",
        "sig",
        "sv",
        "Bearer ",
        "SharedKey ",
        "Authorization",
        "eyJ",
        "AccountKey",
        "copied by ranges from target:sub-0001/eastus",
    ]
)


@given(pieces=st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=8))
def test_the_quick_look_never_passes_over_what_the_patterns_redact(pieces: list[str]) -> None:
    # redact() returns text at once when no pattern can match it; that look must never be
    # wrong: whatever the text, the result is what every pattern and decoding would give.
    text = "".join(pieces)
    assert redact(text) == _redact_everywhere(text)


# -- the Azure adapters' error mapping ------------------------------------------------------------


class _Response:
    """Just enough of an azure-core HTTP response."""

    status_code, reason, request, content_type = 403, "Forbidden", None, "text/xml"
    headers: dict[str, str] = {}  # noqa: RUF012 (never mutated)

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("form", FORMS)
def test_azure_errors_never_carry_a_secret(form: str, encoding: str) -> None:
    text = ENCODINGS[encoding](FORMS[form])
    error = HttpResponseError(message=f"{text}\nRequestId:x", response=_Response())
    error.error_code = "AuthorizationFailure"  # type: ignore[attr-defined]  # as the storage SDK does
    with pytest.raises(ImagedistError) as caught, translate_errors("start copy into 'a/c/b'"):
        raise error
    assert not leaks(str(caught.value)), str(caught.value)


# -- the local backend, end to end through the CLI ------------------------------------------------


def _account(subscription: str, region: str) -> str:
    return generated_account_name("imgd", subscription, region)


def _plant_in_raised_errors(
    monkeypatch: pytest.MonkeyPatch, blobs: type[Any], images: type[Any], message: str
) -> None:
    """Port calls that raise with ``message``: a copy that fails to start, one that is throttled
    once, and an image creation that is refused."""
    refused = _account("sub-alpha", "southeastasia")
    throttled = {_account("sub-bravo", "eastus")}
    start_copy, begin_create_image = blobs.start_copy, images.begin_create_image

    async def failing_start_copy(self: Any, source: BlobRef, dest: BlobRef) -> str:
        if dest.account == refused:
            raise OperationFailed(message, code="CannotVerifyCopySource")
        if dest.account in throttled:
            throttled.discard(dest.account)
            raise TransientError(message)
        return str(await start_copy(self, source, dest))

    async def failing_begin_create_image(self: Any, spec: ImageSpec) -> None:
        if (spec.subscription, spec.region) == ("sub-bravo", "southeastasia"):
            raise OperationFailed(message, code="InvalidParameter")
        await begin_create_image(self, spec)

    monkeypatch.setattr(blobs, "start_copy", failing_start_copy)
    monkeypatch.setattr(images, "begin_create_image", failing_begin_create_image)


def _state_files(root: Path) -> Iterator[Path]:
    return (path for path in root.glob("state.db*") if path.is_file())


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_secret_reaches_any_output_of_the_local_backend(
    encoding: str,
    write_config: Callable[..., Path],
    sample_disk: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = planted(encoding)
    template = message.replace("{", "{{").replace("}", "}}")
    monkeypatch.setattr(_local_blobs, "INJECTED_COPY_FAILURE", template)
    monkeypatch.setattr(_local_images, "INJECTED_IMAGE_FAILURE", template)
    _plant_in_raised_errors(monkeypatch, LocalBlobStore, LocalImageService, message)
    config = write_config(
        local={
            "fail_copies_to_accounts": [_account("sub-alpha", "eastus")],
            "fail_images_in": ["sub-bravo/westeurope"],
        }
    )

    ran = cli(config, "run", str(sample_disk), "--image-name", "golden", "--os-type", "linux")
    assert ran.exit_code == 1, ran.output
    job = json.loads(cli(config, "jobs", "--json").stdout)[0]["job"]
    outputs = {
        "run stdout": ran.stdout,
        "run stderr": ran.stderr,
        "jobs": cli(config, "jobs", "--json").output,
        "status": cli(config, "status", job).output,
        "status --json": cli(config, "status", job, "--json").stdout,
        "logs": cli(config, "logs", job).output,
        "logs --json": cli(config, "logs", job, "--json").stdout,
    }
    for path in _state_files(config.parent / "state"):
        outputs[path.name] = path.read_bytes().decode("latin-1")

    assert "PLANTED" in outputs["logs --json"]  # the errors did arrive
    assert len(json.loads(outputs["status --json"])["targets"]) == 6
    for name, output in outputs.items():
        assert not leaks(output), f"{name}: {output}"


def test_no_secret_reaches_the_cli_s_error_line(
    config_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: JobReader, job_id: str) -> None:
        raise OperationFailed(planted("percent"))

    monkeypatch.setattr(JobReader, "status", refused)
    result = cli(config_path, "status", "some-job")
    assert result.exit_code == 1
    assert "PLANTED" in result.stderr
    assert not leaks(result.output), result.output


# -- the sim backend ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_secret_reaches_the_sim_state(
    encoding: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant_in_raised_errors(monkeypatch, SimBlobStore, SimImageService, planted(encoding))
    config = scenario_config(2, 3, poll_interval_seconds=5.0, lease_seconds=60.0)
    config = config.model_copy(
        update={
            "fleet": config.fleet.model_copy(
                update={
                    "subscriptions": ["sub-alpha", "sub-bravo"],
                    "regions": ["westeurope", "eastus", "southeastasia"],
                }
            ),
            "upload": config.upload.model_copy(update={"work_dir": str(tmp_path)}),
        }
    )
    config._fleet = None  # the fleet changed: resolve it again
    backend = open_sim_backend(config)

    async def main() -> str:
        ctx = EngineContext(backend, config)
        disk = _sparse_fixed_vhd(tmp_path / "golden.vhd", 64 * 1024 * 1024)
        job = await submit_job(ctx, disk, "golden", OsType.LINUX)
        await preload_tier0(backend, job, 16 * 1024 * 1024)
        await Worker(ctx, [job.id]).run()
        status = await job_status(ctx.backend.state, job.id)
        logs = await backend.state.list_logs(job.id)
        return json.dumps([status_to_dict(status, logs), [log_to_dict(r) for r in logs]])

    outputs = run_virtual(main())
    assert "PLANTED" in outputs
    assert not leaks(outputs), outputs
    assert not leaks(repr(backend.state.tables))  # type: ignore[attr-defined]
