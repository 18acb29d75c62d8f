"""The api-versions the installed ``azure-mgmt-*`` clients send, per request path.

Read from the clients' own request builders at server start (each ``build_*_request`` function
names its URL template and its default api-version), so the server accepts exactly what the
installed SDKs send and a client pinned to another version is refused, as ARM refuses a version a
resource type does not have.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: The operation modules of the SDK packages the server answers (a missing one is skipped).
#: The SDK packages whose requests the server answers, with their client class.
SDK_PACKAGES = (
    ("azure.mgmt.compute", "ComputeManagementClient"),
    ("azure.mgmt.storage", "StorageManagementClient"),
    ("azure.mgmt.resource.resources", "ResourceManagementClient"),
)

_BUILDER = re.compile(r"^def build_\w+_request\(", re.MULTILINE)
_DEFAULT_VERSION = re.compile(r'_params\.pop\("api-version", "([^"]+)"\)')
# `_url = "/subscriptions/..."`, or in older SDKs `_url = kwargs.pop("template_url", "/...")`.
_URL = re.compile(r'_url = (?:kwargs\.pop\("template_url", )?"(/[^"]+)"')
_PLACEHOLDER = re.compile(r"\{[^/}]+\}")


@dataclass(frozen=True)
class Route:
    """One URL template of the SDK and the api-versions it is sent with."""

    template: str
    pattern: re.Pattern[str]
    versions: frozenset[str]

    @property
    def resource_type(self) -> str:
        """``Microsoft.Compute/images`` for ``.../providers/Microsoft.Compute/images/{imageName}``."""
        segments = self.template.strip("/").split("/")
        if "providers" not in segments:
            return "Microsoft.Resources/" + segments[-1 if len(segments) % 2 else -2]
        at = len(segments) - 1 - segments[::-1].index("providers")
        names = segments[at + 1 :]
        if not names or names[0].startswith("{"):
            return "Microsoft.Resources/providers"
        kinds = [n for i, n in enumerate(names[1:]) if i % 2 == 0 and not n.startswith("{")]
        return "/".join([names[0], *kinds[:1]])


class ApiVersions:
    """Which api-versions a request path may carry: those of the SDK routes it matches."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def allowed(self, path: str) -> frozenset[str] | None:
        """The versions for ``path`` (percent-decoded, no query); ``None`` if no SDK route
        matches it (the server's own operation URLs, or routes it does not answer)."""
        found: set[str] = set()
        for route in self.routes:
            if route.pattern.match(path):
                found |= route.versions
        return frozenset(found) if found else None

    def resource_type(self, path: str) -> str:
        for route in self.routes:
            if route.pattern.match(path):
                return route.resource_type
        return ""


@cache
def installed_api_versions() -> ApiVersions:
    """The table read from the installed SDK packages (once per process)."""
    by_template: dict[str, set[str]] = {}
    for package, client in SDK_PACKAGES:
        for template, version in _builders(operations_module(package, client)):
            by_template.setdefault(template, set()).add(version)
    routes = [
        Route(template, _pattern(template), frozenset(versions))
        for template, versions in sorted(by_template.items())
    ]
    return ApiVersions(routes)


def operations_module(package: str, client: str) -> str:
    """The module of the package's request builders: ``operations._operations``, or, in a
    multi-API package (older SDKs, such as azure-mgmt-resource before 25), that of the API
    version its client sends by default."""
    flat = f"{package}.operations._operations"
    with contextlib.suppress(ModuleNotFoundError):
        if importlib.util.find_spec(flat) is not None:
            return flat
    version = str(getattr(importlib.import_module(package), client).DEFAULT_API_VERSION)
    return f"{package}.v{version.replace('-', '_')}.operations._operations"


def _builders(module: str) -> list[tuple[str, str]]:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return []
    if spec is None or spec.origin is None:
        return []
    source = Path(spec.origin).read_text(encoding="utf-8")
    found = []
    starts = [m.start() for m in _BUILDER.finditer(source)]
    for start, end in zip(starts, [*starts[1:], len(source)], strict=True):
        body = source[start:end]
        version, url = _DEFAULT_VERSION.search(body), _URL.search(body)
        if version and url:
            found.append((url.group(1), version.group(1)))
    return found


def _pattern(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)
    regex = "[^/]+".join(re.escape(p) for p in parts)
    return re.compile(f"^{regex}/?$", re.IGNORECASE)
