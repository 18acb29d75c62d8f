"""The one redaction of secrets, applied wherever text from outside can reach a person or a store.

Azure's error messages, a managed disk's access URL and HTTP bodies may carry SAS tokens, account
keys and bearer tokens, and not always in plain text: a URL inside a query string is
percent-encoded (``%3Fsv%3D...%26sig%3D...``), sometimes twice (``%253F``), and a URL inside a JSON
error body is escaped (``\\u0026sig=``, ``\\/``). :func:`redact` removes every such secret in each of
these forms. The Azure error translation, the state stores (logs and error fields), the engine's
log and the CLI's error line all call it, so a secret that slips past one edge stops at the next.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from urllib.parse import unquote

from ._domain import LogRecord
from ._domain.publications import PublicationRow

__all__ = ["REDACTED", "redact", "redact_record"]

REDACTED = "REDACTED"


def _forms(char: str) -> str:
    """A regex for ``char`` as it is, percent-encoded once or twice, or JSON-escaped."""
    code = f"{ord(char):02x}"
    return rf"(?:{re.escape(char)}|%{code}|%25{code}|\\u00{code})"


_Q, _EQ, _AMP, _SEMI, _COLON = (_forms(c) for c in "?=&;:")
_AMP = rf"(?:{_AMP}|&amp;)"
# A quote, also as JSON writes it inside a string (\").
_QUOTE = rf"(?:\\?{_forms(chr(34))}|\\?{_forms(chr(39))})"
# Names start where no letter precedes: after a space, a quote, '&', or '%26' (which ends in 6).
_START = r"(?<![A-Za-z])"
# Between a scheme and its credentials: spaces, '+' (form encoding) or their encoded forms.
_GAP = r"(?:\s|\+|%20|%2520|\\u0020)+"
# A value ends at a separator, a quote or whitespace, in any of their forms.
_VALUE = rf"(?:(?!{_AMP}|{_SEMI}|{_QUOTE})[A-Za-z0-9+/=%._~*:\\-])+"
# A whole query: anything up to whitespace, a quote or a closing bracket, not ending in punctuation
# (the full stop after a URL at the end of a sentence is the sentence's).
_QUERY_REST = rf"(?:(?!{_QUOTE})[^\s<>()\[\]{{}}])*(?<![.,;:!])"
_B64 = r"(?:[A-Za-z0-9+/]|%2[bf]|%252[bf]|\\/)"


def _named(name: str, value: str = _VALUE) -> tuple[re.Pattern[str], str]:
    """``name=value`` (any form of '=') with the value replaced."""
    return re.compile(rf"({_START}{name}{_EQ}){value}", re.IGNORECASE), rf"\g<1>{REDACTED}"


@functools.cache
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    """The patterns and their replacements, compiled on the first redaction: compiling them
    is a twentieth of a command's start, and most commands never redact (issue 13)."""
    return [
        # Every query string (a SAS lives there): a '?' followed by name=...; dropped with its '?'.
        (re.compile(rf"{_Q}[A-Za-z][\w.-]*{_EQ}{_QUERY_REST}", re.IGNORECASE), ""),
        # Connection-string parts; a SAS in a connection string runs up to the next ';'.
        _named("SharedAccessSignature", rf"(?:(?!{_SEMI}|{_QUOTE})[^\s<>])+"),
        _named("AccountKey"),
        # A bare SAS token outside a URL: its signature, and the whole token when it starts with sv=.
        _named("sig"),
        (
            re.compile(
                rf"{_START}sv{_EQ}\d{{4}}-\d\d-\d\d(?:{_AMP}[A-Za-z]+{_EQ}(?:{_VALUE})?)*",
                re.IGNORECASE,
            ),
            REDACTED,
        ),
        # Authorization header values: SharedKey account:signature, Bearer token, anything else.
        (
            re.compile(
                rf"({_START}SharedKey(?:Lite)?{_GAP}[^:\s%]+{_COLON}){_VALUE}", re.IGNORECASE
            ),
            rf"\g<1>{REDACTED}",
        ),
        (re.compile(rf"({_START}Bearer{_GAP}){_VALUE}", re.IGNORECASE), rf"\g<1>{REDACTED}"),
        (
            # Possessive quantifiers: the quotes around the value cannot be given back to let the
            # value start at a quote and slip past the look-ahead.
            re.compile(
                rf"({_START}Authorization{_QUOTE}?+\s*+(?:[:=]|{_COLON})\s*+{_QUOTE}?+)"
                rf"(?!Bearer|SharedKey|{REDACTED})(?:[A-Za-z]+{_GAP})?[A-Za-z0-9]{_VALUE}?",
                re.IGNORECASE,
            ),
            rf"\g<1>{REDACTED}",
        ),
        # JSON Web Tokens (Entra ID access tokens) wherever they stand: eyJ... is '{"' in base64url.
        (re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"), REDACTED),
        # A storage account key: 64 bytes in base64, 88 characters ending in '=='.
        (re.compile(rf"{_B64}{{86}}{_forms('=')}{{2}}", re.IGNORECASE), REDACTED),
    ]


# Escapes a chunk may hide a secret behind: percent-encoding, JSON string escapes, HTML's &amp;.
_ENCODED = re.compile(r"%[0-9a-f]{2}|\\u[0-9a-f]{4}|\\[/\"\\]|&amp;", re.IGNORECASE)
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([/\"\\])")


# What every pattern above needs somewhere in the text, in one of its forms: a '?' or '=' (a
# query, a name=value, an account key's padding), the '%', '\\' or '&' of an encoded form, or the
# name of a scheme. Text with none of them (most log lines) holds nothing to redact, and one
# search tells.
_MAY_HOLD_A_SECRET = re.compile(r"[?=%\\&]|sharedkey|bearer|authorization|eyj", re.IGNORECASE)


def _may_hold_a_secret(text: str) -> bool:
    return _MAY_HOLD_A_SECRET.search(text) is not None


def _apply(text: str) -> str:
    for pattern, replacement in _patterns():
        text = pattern.sub(replacement, text)
    return text


def _decode_once(text: str) -> str:
    text = _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else m[2], text)
    return unquote(text.replace("&amp;", "&"))


def _decoded(text: str) -> str:
    """``text`` with every layer of encoding taken off (a few layers at most, as in the wild)."""
    for _ in range(4):
        decoded = _decode_once(text)
        if decoded == text:
            break
        text = decoded
    return text


def _redact_chunk(chunk: str) -> str:
    """A chunk the patterns already went over in place, checked once more decoded: one that
    still hides a secret (an odd mix of escapes, letters encoded too) is shown decoded and
    redacted."""
    if not _ENCODED.search(chunk):
        return chunk
    decoded = _decoded(chunk)
    redacted = _apply(decoded)
    return chunk if redacted == decoded else redacted


def redact(text: str) -> str:
    """``text`` without SAS query strings or signatures, account keys or bearer tokens, in plain,
    percent-encoded (once or more) or JSON-escaped form.

    URLs keep their scheme, host and path, which name the blob; their query string goes.
    Idempotent, and cheap for text with nothing to redact.
    """
    if not _may_hold_a_secret(text):
        return text
    return _redact_everywhere(text)


def _redact_everywhere(text: str) -> str:
    # First the whole text (a header's scheme and token are separated by whitespace), then each
    # whitespace-free chunk through its decoded form.
    text = _apply(text)
    return "".join(_redact_chunk(part) for part in re.split(r"(\s+)", text))


def redact_record(record: LogRecord) -> LogRecord:
    """The log line with its message and extra values redacted (the same record if clean)."""
    message = redact(record.message)
    extra = {key: redact(value) for key, value in record.extra.items()}
    if message == record.message and extra == record.extra:
        return record
    return dataclasses.replace(record, message=message, extra=extra)


def redact_publication(row: PublicationRow) -> PublicationRow:
    """The gallery version's row with its error and every region's error redacted (a region's
    error quotes the platform's message, which may carry a SAS)."""
    regions = {
        name: dataclasses.replace(status, error=redact(status.error))
        for name, status in row.regions.items()
    }
    return dataclasses.replace(row, error=redact(row.error), regions=regions)
