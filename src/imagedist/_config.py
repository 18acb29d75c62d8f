"""The TOML config file: what to distribute where, validated with pydantic into precise errors."""

from __future__ import annotations

import hashlib
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._config_file import local_root, read_config_bytes
from ._config_gallery import GallerySpec, PublishPolicy
from ._domain import Target
from ._domain.names import ACCOUNT_NAME, CONTAINER_NAME, RESOURCE_GROUP_NAME, NameRule
from ._domain.regions import REGIONS, unknown_region
from ._exceptions import ConfigError

__all__ = [
    "CLOUDS",
    "AzureBackendOptions",
    "AzureCloud",
    "AzureEndpoints",
    "ConcurrencyPolicy",
    "Config",
    "FanoutPolicy",
    "FleetSpec",
    "LocalBackendOptions",
    "NamingPolicy",
    "StagingSpec",
    "TargetSpec",
    "UploadPolicy",
    "account_locations",
    "cloud_of_url",
    "config_from_bytes",
    "generated_account_name",
    "load_config",
]


class _Strict(BaseModel):
    # strict: TOML has types, and `copies = true` or `copies = "8"` is a mistake to name, not a
    # value to coerce; no inf or nan, which would make a wait endless or a bound meaningless.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _checker(rule: NameRule) -> Callable[[str], str]:
    """A field validator of ``rule``: pydantic reports a ValueError under the field's key path."""

    def check(value: str) -> str:
        if not rule.matches(value):
            raise ValueError(rule.problem(value))
        return value

    return check


_check_account = _checker(ACCOUNT_NAME)
_check_container = _checker(CONTAINER_NAME)
_check_resource_group = _checker(RESOURCE_GROUP_NAME)


def _check_region(value: str) -> str:
    if value not in REGIONS:
        raise ValueError(unknown_region(value))
    return value


class StagingSpec(_Strict):
    """The tier-0 storage account that receives the upload."""

    subscription: str = Field(min_length=1)
    region: str
    account: str
    container: str = "imagedist"
    resource_group: str = "imagedist-staging"

    _account = field_validator("account")(_check_account)
    _container = field_validator("container")(_check_container)
    _region = field_validator("region")(_check_region)
    _rg = field_validator("resource_group")(_check_resource_group)


class TargetSpec(_Strict):
    """One explicit target of the fleet."""

    subscription: str = Field(min_length=1)
    region: str
    account: str
    name: str | None = None
    container: str | None = None
    resource_group: str | None = None  # images; default naming.images_resource_group
    storage_resource_group: str | None = None  # default naming.storage_resource_group
    enabled: bool = True

    _account = field_validator("account")(_check_account)
    _region = field_validator("region")(_check_region)

    @field_validator("resource_group", "storage_resource_group", "container")
    @classmethod
    def _optional_names(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return (
            _check_container(value)
            if info.field_name == "container"
            else _check_resource_group(value)
        )


class FleetSpec(_Strict):
    """Targets generated as every subscription × every region, with stable account names."""

    subscriptions: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    account_prefix: str = Field(default="imgd", pattern=r"^[a-z0-9]{1,11}$")

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        return [_check_region(region) for region in value]

    @field_validator("subscriptions")
    @classmethod
    def _subscriptions(cls, value: list[str]) -> list[str]:
        if any(not subscription.strip() for subscription in value):
            raise ValueError("a subscription must not be empty")
        return value


class NamingPolicy(_Strict):
    """How images, containers and resource groups in the targets are named."""

    image_template: str = "{image}.{region}"
    images_resource_group: str = "imagedist-images"
    storage_resource_group: str = "imagedist-storage"
    container: str = "imagedist"

    _container = field_validator("container")(_check_container)
    _rg = field_validator("images_resource_group", "storage_resource_group")(_check_resource_group)

    @field_validator("image_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(image="x", region="r", subscription="s", target="t")
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(
                f"image_template {value!r} may only use {{image}}, {{region}}, {{subscription}}"
                " and {target}"
            ) from exc
        return value


class FanoutPolicy(_Strict):
    """How copies spread: the strategy, tier-1 copies in the staging account, and how many reads
    one source serves at once."""

    strategy: Literal["broadcast", "original"] = "broadcast"
    # "auto": broadcast makes enough same-account clones to seed every region in one round
    # (ceil(regions / max_reads_per_source) sources in all); original makes 300, as it did.
    tier1_copies: int | Literal["auto"] = Field(default="auto")

    @field_validator("tier1_copies", "region_clones", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object, info: ValidationInfo) -> object:
        # Before pydantic's own check, whose error for a union names neither the key nor the value.
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1000
        ):
            return value
        shown = _toml(value) if isinstance(value, bool | int | float | str) else repr(value)
        raise ValueError(
            f'{info.field_name} must be a whole number between 0 and 1000, or "auto", not {shown}'
        )

    def tier1_count(self, regions: int) -> int:
        """How many tier-1 copies a job over ``regions`` regions gets."""
        if isinstance(self.tier1_copies, int):
            return self.tier1_copies
        if self.strategy == "original":
            return 300
        # One seed per region, the staging region's included, all in the first round.
        return max(0, min(50, -(-regions // self.max_reads_per_source) - 1))

    max_reads_per_source: int = Field(default=4, ge=1, le=1000)
    # "auto": broadcast clones each region's seed in its own account until every target of the
    # region can copy at once (ceil((targets - 1) / max_reads_per_source) sources); 0: no clones.
    region_clones: int | Literal["auto"] = Field(default="auto")

    def region_clone_count(self, targets: int) -> int:
        """How many clones of its seed a region of ``targets`` targets gets."""
        if self.strategy == "original":
            return 0  # the original never cloned outside its staging account
        if isinstance(self.region_clones, int):
            return self.region_clones
        return max(0, min(100, -(-(targets - 1) // self.max_reads_per_source) - 1))

    # How a target's copy moves (issue 13): "async" Copy Blob (costs the worker nothing, 4-45
    # MB/s across accounts), "ranged" Put Page From URL in 4 MiB ranges (~190 MB/s, costs calls
    # and worker time), "auto" ranged across accounts where the blob store says it is faster.
    copy_method: Literal["auto", "async", "ranged"] = "auto"

    @field_validator("copy_method", mode="before")
    @classmethod
    def _copy_method(cls, value: object) -> object:
        if value in ("auto", "async", "ranged"):
            return value
        shown = _toml(value) if isinstance(value, bool | int | float | str) else repr(value)
        raise ValueError(f'copy_method must be "auto", "async" or "ranged", not {shown}')

    # "auto" moves at most this many copies by ranges at once per worker, the rest by Copy
    # Blob: a ranged copy costs the worker a request per 4 MiB (about 45 a second at full
    # speed, each a few ms of CPU), so a worker on two cores keeps some 16 going, not 10,000.
    # The first copies of a job (each region's seed, which the rest of its region follows) are
    # the ones that get them. "ranged" moves every copy by ranges, whatever this says.
    ranged_copies: int = Field(default=16, ge=0, le=10_000)


class ConcurrencyPolicy(_Strict):
    """Limits one worker respects, and how it polls and leases work."""

    # No cap by default: a server-side copy or an image creation costs the worker one waiting
    # task, and the limits that matter are the service's (reads per source blob, ARM's write
    # budget), which the engine respects anyway. A number caps what one worker runs at once.
    copies: int | None = Field(default=None, ge=1, le=100_000)
    images: int | None = Field(default=None, ge=1, le=100_000)
    # Bounded both ways: a zero interval spins, an hour-long one looks like a hang.
    poll_interval_seconds: float = Field(default=2.0, ge=0.01, le=3600)
    lease_seconds: float = Field(default=60.0, ge=1, le=86_400)


class UploadPolicy(_Strict):
    """How `submit` sends the golden image: writes in flight, and where conversions go."""

    concurrency: int = Field(default=8, ge=1, le=64)
    # The whole disk's MD5 as Content-MD5, as Add-AzVhd does; on a mostly empty disk hashing
    # the holes can take longer than sending the data.
    content_md5: bool = True
    work_dir: str = ""  # converted images; default: <local root>/work, or the system temp folder


class LocalBackendOptions(_Strict):
    """The embedded backend: a folder of blobs and SQLite files."""

    root: str = ".imagedist"
    copy_bandwidth_mib_s: float = Field(default=0.0, ge=0, le=1_000_000)
    image_create_seconds: float = Field(default=1.0, ge=0, le=86_400)
    fail_copies_to_accounts: list[str] = Field(default_factory=list)
    fail_images_in: list[str] = Field(default_factory=list)  # "subscription/region"
    # Compute Gallery: how long each target region's replication of a version takes, and the
    # regions where every replication fails (until a later one starts without them).
    gallery_replication_seconds: float = Field(default=2.0, ge=0, le=86_400)
    fail_gallery_regions: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class AzureCloud:
    """One Azure cloud: sovereign clouds have their own ARM, storage and sign-in hosts."""

    name: str
    arm_endpoint: str  # also the ARM token audience
    storage_suffix: str  # <account>.blob.<suffix>, <account>.table.<suffix>
    authority: str  # the Entra ID host that signs tokens for this cloud
    domains: tuple[str, ...]  # hosts under these belong to this cloud


#: The clouds ``[azure] cloud`` names; Azure's own settings for each (``az cloud show``).
CLOUDS: dict[str, AzureCloud] = {
    "public": AzureCloud(
        "public",
        "https://management.azure.com",
        "core.windows.net",
        "login.microsoftonline.com",
        ("azure.com", "windows.net"),
    ),
    "usgov": AzureCloud(
        "usgov",
        "https://management.usgovcloudapi.net",
        "core.usgovcloudapi.net",
        "login.microsoftonline.us",
        ("usgovcloudapi.net",),
    ),
    "china": AzureCloud(
        "china",
        "https://management.chinacloudapi.cn",
        "core.chinacloudapi.cn",
        "login.chinacloudapi.cn",
        ("chinacloudapi.cn",),
    ),
}


def cloud_of_url(url: str) -> str | None:
    """The cloud whose hosts include the URL's host, or ``None`` (a test server on loopback)."""
    host = (urlsplit(url).hostname or "").lower()
    for cloud in CLOUDS.values():
        if any(host == domain or host.endswith(f".{domain}") for domain in cloud.domains):
            return cloud.name
    return None


@dataclass(frozen=True)
class AzureEndpoints:
    """Where the Azure backend sends requests, and for which token audience, all of one cloud."""

    cloud: str
    arm: str  # ARM's base URL
    arm_scope: str  # the token scope ARM clients ask for: "<audience>/.default"
    authority: str  # the Entra ID host DefaultAzureCredential signs in with
    blob: str  # the blob service URL, with {account}
    table: str  # the table service URL, with {account}


class AzureBackendOptions(_Strict):
    """Real Azure (or Azurite plus an ARM-protocol server, in tests).

    Storage is reached with Entra ID (``auth = "default"``: DefaultAzureCredential) or, for
    Azurite, with connection strings taken from the environment variable
    ``IMAGEDIST_CONNECTION_STRING_<ACCOUNT>`` (never from this file, so no key is ever in it).

    ``cloud`` sets the ARM endpoint, the ARM token audience, the storage endpoints and the
    sign-in authority together; the ``*_endpoint`` keys override one endpoint each (test
    servers), and an endpoint of a known cloud decides the cloud when ``cloud`` is not given.
    """

    auth: Literal["default", "connection-strings"] = "default"
    cloud: Literal["public", "usgov", "china"] = "public"
    arm_endpoint: str | None = Field(default=None, pattern=r"^https://")  # default: the cloud's
    arm_audience: str | None = Field(default=None, pattern=r"^https://")  # default: the cloud's
    blob_endpoint: str | None = None  # default: https://{account}.blob.<the cloud's suffix>
    table_endpoint: str | None = None  # default: https://{account}.table.<the cloud's suffix>
    # PEM file of the CAs to trust instead of the system's (a TLS-inspecting proxy, a test
    # server); relative to the config file.
    ca_bundle: str | None = None
    state_account: str | None = None  # holds the state tables; default: the staging account
    table_prefix: str = Field(default="imagedist", pattern=r"^[A-Za-z][A-Za-z0-9]{0,54}$")
    storage_sku: str = "Standard_LRS"
    # The default of `submit --hyper-v-generation`; None: V2 for a disk that boots only with
    # UEFI, V1 otherwise.
    hyper_v_generation: Literal["V1", "V2"] | None = None
    # the object id setup grants the data roles to; default: the signed-in identity's (its token's oid)
    principal_id: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
    )

    @field_validator("blob_endpoint", "table_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and (
            "{account}" not in value
            or not value.startswith(("https://", "http://127.", "http://localhost"))
        ):
            raise ValueError(
                f"endpoint {value!r} must be an https:// URL (http only on loopback) containing"
                " {account}"
            )
        return value

    @model_validator(mode="after")
    def _one_cloud(self) -> AzureBackendOptions:
        # A token for one cloud is refused by another: endpoints of two clouds cannot both work.
        claims: list[tuple[str, str]] = []  # (cloud, how the config names it)
        if "cloud" in self.model_fields_set:
            claims.append((self.cloud, f"cloud = {self.cloud!r}"))
        for key in ("arm_endpoint", "blob_endpoint", "table_endpoint"):
            url = getattr(self, key)
            cloud = cloud_of_url(url) if url else None
            if cloud is not None:
                claims.append((cloud, f"{key} {url!r} is in the {cloud!r} cloud"))
        for cloud, said in claims[1:]:
            if cloud != claims[0][0]:
                raise ValueError(f"{claims[0][1]} but {said}; make them name the same cloud")
        return self

    def effective_cloud(self) -> AzureCloud:
        """``cloud`` if given, else the cloud of the first endpoint of a known cloud, else public."""
        if "cloud" not in self.model_fields_set:
            for url in (self.arm_endpoint, self.blob_endpoint, self.table_endpoint):
                name = cloud_of_url(url) if url else None
                if name is not None:
                    return CLOUDS[name]
        return CLOUDS[self.cloud]

    def endpoints(self) -> AzureEndpoints:
        """Every endpoint and the ARM token scope, resolved from ``cloud`` and the overrides."""
        cloud = self.effective_cloud()
        audience = self.arm_audience or cloud.arm_endpoint
        return AzureEndpoints(
            cloud=cloud.name,
            arm=(self.arm_endpoint or cloud.arm_endpoint).rstrip("/"),
            arm_scope=f"{audience.rstrip('/')}/.default",
            authority=cloud.authority,
            blob=self.blob_endpoint or f"https://{{account}}.blob.{cloud.storage_suffix}",
            table=self.table_endpoint or f"https://{{account}}.table.{cloud.storage_suffix}",
        )


class Config(_Strict):
    """The whole config file."""

    backend: Literal["local", "azure"] = "local"
    staging: StagingSpec
    targets: list[TargetSpec] = Field(default_factory=list)
    fleet: FleetSpec = Field(default_factory=FleetSpec)
    naming: NamingPolicy = Field(default_factory=NamingPolicy)
    fanout: FanoutPolicy = Field(default_factory=FanoutPolicy)
    concurrency: ConcurrencyPolicy = Field(default_factory=ConcurrencyPolicy)
    upload: UploadPolicy = Field(default_factory=UploadPolicy)
    local: LocalBackendOptions = Field(default_factory=LocalBackendOptions)
    azure: AzureBackendOptions = Field(default_factory=AzureBackendOptions)
    publish: PublishPolicy = Field(default_factory=PublishPolicy)
    gallery: GallerySpec | None = None
    base_dir: str = Field(default=".", exclude=True)
    _fleet: list[Target] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fleet_is_consistent(self) -> Config:
        fleet = resolve_fleet(self)
        if not fleet:
            # A job over no target would upload, then "complete" having done nothing.
            raise ConfigError(
                "Invalid config: it declares no targets; add [fleet] subscriptions and regions,"
                " or [[targets]] tables.",
                key_path="fleet",
            )
        _check_image_names_unique(fleet, self.naming.image_template)
        _check_gallery(self)
        return self

    def fleet_targets(self) -> list[Target]:
        """The resolved fleet, explicit targets first, then the generated ones (computed once)."""
        if self._fleet is None:
            self._fleet = resolve_fleet(self)
        return list(self._fleet)

    def work_dir(self) -> Path:
        """Where converted images wait for their upload."""
        if self.upload.work_dir:
            return (Path(self.base_dir) / self.upload.work_dir).resolve()
        if self.backend == "local":
            return self.local_root() / "work"
        return Path(tempfile.gettempdir()) / "imagedist-work"

    def local_root(self) -> Path:
        """The local backend's folder, relative paths taken from the config file's folder."""
        return local_root(Path(self.base_dir), self.local.root)


def _check_gallery(config: Config) -> None:
    gallery = config.gallery
    if "gallery" in config.publish.to and gallery is None:
        raise ConfigError(
            'Invalid config: [publish] to includes "gallery" but there is no [gallery] table;'
            " add one with at least a name.",
            key_path="publish.to",
        )
    staging = config.staging
    if (
        gallery is not None
        and gallery.subscription_or(staging.subscription) != staging.subscription
    ):
        raise ConfigError(
            f"Invalid config: the gallery's subscription {gallery.subscription!r} is not the"
            f" staging subscription {staging.subscription!r}, where the upload it is made from"
            " lives; leave [gallery] subscription out (or set it to the staging subscription).",
            key_path="gallery.subscription",
        )
    if gallery is not None and gallery.region_or(config.staging.region) != config.staging.region:
        # A version is made from a VHD in a storage account of the gallery's region: the upload.
        raise ConfigError(
            f"Invalid config: the gallery's region {gallery.region!r} is not the staging"
            f" region {config.staging.region!r}, where the upload it is made from lives; leave"
            " [gallery] region out (or set it to the staging region).",
            key_path="gallery.region",
        )


def generated_account_name(prefix: str, subscription: str, region: str) -> str:
    """A storage account name that is the same on every run for the same target.

    The hash keeps names unique across the fleet without a counter, so re-running setup or
    regenerating the fleet never renames an account.
    """
    digest = hashlib.sha256(f"{subscription}\0{region}".encode()).hexdigest()
    return f"{prefix}{digest[: 22 - len(prefix)]}t2"


def account_locations(config: Config) -> dict[str, tuple[str, str]]:
    """Every account of the config -> (subscription, region): the staging one and the targets'.

    The local and simulated platforms place an account by it, as Azure would by the account's
    own location.
    """
    locations = {t.account: (t.subscription, t.region) for t in config.fleet_targets()}
    locations[config.staging.account] = (config.staging.subscription, config.staging.region)
    return locations


def resolve_fleet(config: Config) -> list[Target]:
    """Expand the fleet into targets and check names are unique.

    :raises ConfigError: on a duplicate target, account name or (subscription, region) pair,
        naming the key path of the second occurrence.
    """
    placed = [
        (f"targets.{i}", _explicit_target(config, spec)) for i, spec in enumerate(config.targets)
    ]
    placed += [
        (
            "fleet",
            Target(
                name=f"{subscription}/{region}",
                subscription=subscription,
                region=region,
                account=generated_account_name(config.fleet.account_prefix, subscription, region),
                container=config.naming.container,
                resource_group=config.naming.images_resource_group,
                storage_resource_group=config.naming.storage_resource_group,
            ),
        )
        for subscription in config.fleet.subscriptions
        for region in config.fleet.regions
    ]
    _check_unique(placed, config.staging.account)
    return [target for _, target in placed]


def _explicit_target(config: Config, spec: TargetSpec) -> Target:
    return Target(
        name=spec.name or f"{spec.subscription}/{spec.region}",
        subscription=spec.subscription,
        region=spec.region,
        account=spec.account,
        container=spec.container or config.naming.container,
        resource_group=spec.resource_group or config.naming.images_resource_group,
        storage_resource_group=spec.storage_resource_group or config.naming.storage_resource_group,
        enabled=spec.enabled,
    )


def _check_image_names_unique(fleet: list[Target], template: str) -> None:
    """Two targets must never get one image (Azure's names are case-insensitive within a
    resource group): the second would take the first's image for its own. Every target's
    name comes from the same image name, so a sample name decides for all of them."""
    seen: dict[tuple[str, str, str], Target] = {}
    for target in fleet:
        image = template.format(
            image="image",
            region=target.region,
            subscription=target.subscription,
            target=target.name,
        )
        key = (target.subscription.lower(), target.resource_group.lower(), image.lower())
        other = seen.setdefault(key, target)
        if other is not target:
            raise ConfigError(
                f"Invalid config at 'naming.image_template': {template!r} gives targets"
                f" {other.name!r} and {target.name!r} the same image in resource group"
                f" {target.resource_group!r}; make it unique per target, e.g."
                ' "{image}.{region}".',
                key_path="naming.image_template",
            )


def _check_unique(placed: list[tuple[str, Target]], staging_account: str) -> None:
    seen: dict[str, set[str]] = {"name": set(), "account": {staging_account}, "pair": set()}
    for key_path, target in placed:
        pair = f"{target.subscription}/{target.region}"
        for kind, value in (("name", target.name), ("account", target.account), ("pair", pair)):
            if value in seen[kind]:
                what = {"name": "target name", "account": "storage account", "pair": "target"}[kind]
                # Raised as ConfigError, not ValueError, so pydantic does not drop the key path.
                raise ConfigError(
                    f"Invalid config at {key_path!r}: duplicate {what} {value!r}; each must"
                    " appear once in the fleet (and accounts must differ from the staging account).",
                    key_path=key_path,
                )
            seen[kind].add(value)


def load_config(path: str | Path) -> Config:
    """Read and validate the config file.

    :raises ConfigError: naming the key path and the fix, if the file is missing or invalid.
    """
    path = Path(path)
    return config_from_bytes(read_config_bytes(path), path)


def config_from_bytes(content: bytes, path: Path) -> Config:
    """Validate the contents of the config file at ``path`` (read by :func:`read_config_bytes`).

    :raises ConfigError: naming the key path and the fix, if they are invalid.
    """
    where = repr(str(path))
    try:
        raw = tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read config file {where}: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {where} is not valid TOML: {exc}.") from None
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw: dict[str, Any], base_dir: Path = Path(".")) -> Config:
    """Validate an already-parsed config mapping.

    :raises ConfigError: naming the first offending key path.
    """
    try:
        return Config.model_validate({**raw, "base_dir": str(base_dir)})
    except ValidationError as exc:
        error = exc.errors()[0]
        key_path = ".".join(str(part) for part in error["loc"])
        where = f"at {key_path!r}: " if key_path else ""
        raise ConfigError(f"Invalid config {where}{_describe(error)}.", key_path=key_path) from None


# Pydantic's own checks, whose message says what is wanted but not what was given.
_SHOW_INPUT = ("_type", "_parsing", "finite_number", "greater_than", "less_than", "literal_error")


def _describe(error: Any) -> str:
    """The error's message, naming the value given when pydantic's message does not."""
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = any(part in error["type"] for part in _SHOW_INPUT)
    if not shown or not isinstance(value, bool | int | float | str):
        return message
    return f"{message[:1].lower()}{message[1:]}, not {_toml(value)}"


def _toml(value: bool | int | float | str) -> str:
    """A scalar as the config file writes it (true, inf, 'text')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
