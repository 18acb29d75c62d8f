"""Config validation: the resolved fleet, and one precise ConfigError per kind of mistake."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagedist import ConfigError, InvalidInput, load_config
from imagedist._config import generated_account_name, parse_config

ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
STAGING_ACCOUNT = "imgdstaging"
STAGING = {"subscription": "sub-staging", "region": "westeurope", "account": STAGING_ACCOUNT}


def _raw(**sections: Any) -> dict[str, Any]:
    return {"staging": dict(STAGING), **sections}


def _target(subscription: str, region: str, account: str, **more: Any) -> dict[str, Any]:
    return {"subscription": subscription, "region": region, "account": account, **more}


def _config_error(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value


def _is_sentence(message: str) -> bool:
    return "\n" not in message and message[:1].isupper() and message.endswith(".")


# the valid case


def test_valid_config_resolves_explicit_then_generated_targets(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        targets=[_target("sub-x", "northeurope", "explicitacct", name="special")],
        fleet={"subscriptions": ["sub-a", "sub-b"], "regions": ["westeurope", "eastus"]},
    )
    config = load_config(path)
    fleet = config.fleet_targets()

    assert [t.name for t in fleet] == [
        "special",
        "sub-a/westeurope",
        "sub-a/eastus",
        "sub-b/westeurope",
        "sub-b/eastus",
    ]
    assert fleet[0].account == "explicitacct"
    assert fleet[0].container == config.naming.container
    assert fleet[0].resource_group == config.naming.images_resource_group
    generated = fleet[1:]
    assert {(t.subscription, t.region) for t in generated} == {
        (s, r) for s in ("sub-a", "sub-b") for r in ("westeurope", "eastus")
    }
    accounts = [t.account for t in fleet]
    assert len(set(accounts)) == len(accounts)
    assert STAGING_ACCOUNT not in accounts
    for target in generated:
        assert ACCOUNT.fullmatch(target.account), target.account
        assert target.account.startswith(config.fleet.account_prefix)


def test_generated_names_are_stable_across_loads(write_config: Callable[..., Path]) -> None:
    path = write_config()
    first = [(t.name, t.account) for t in load_config(path).fleet_targets()]
    second = [(t.name, t.account) for t in load_config(path).fleet_targets()]
    assert first == second
    assert len(first) == 6


def test_relative_local_root_is_taken_from_the_config_folder(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = load_config(write_config(local={"root": "somewhere"}))
    assert config.local_root() == (tmp_path / "somewhere").resolve()


def test_disabled_explicit_target_is_kept_but_disabled() -> None:
    config = parse_config(_raw(targets=[_target("s", "eastus", "acct1", enabled=False)]))
    (target,) = config.fleet_targets()
    assert target.enabled is False


@given(
    prefix=st.from_regex(r"[a-z0-9]{1,11}", fullmatch=True),
    subscription=st.text(max_size=60),
    region=st.text(max_size=40),
)
def test_generated_account_name_is_always_valid_and_deterministic(
    prefix: str, subscription: str, region: str
) -> None:
    name = generated_account_name(prefix, subscription, region)
    assert ACCOUNT.fullmatch(name)
    assert name.startswith(prefix)
    assert name == generated_account_name(prefix, subscription, region)


@given(
    prefix=st.from_regex(r"[a-z0-9]{1,11}", fullmatch=True),
    pairs=st.sets(
        st.tuples(
            st.text(min_size=1, max_size=20), st.from_regex(r"[a-z][a-z0-9]{1,12}", fullmatch=True)
        ),
        min_size=2,
        max_size=30,
    ),
)
def test_generated_account_names_are_unique_across_a_fleet(
    prefix: str, pairs: set[tuple[str, str]]
) -> None:
    names = [generated_account_name(prefix, s, r) for s, r in pairs]
    assert len(set(names)) == len(names)


def test_generated_account_name_separates_subscription_from_region() -> None:
    # ("ab", "c") and ("a", "bc") must not collide by plain concatenation.
    assert generated_account_name("p", "ab", "c") != generated_account_name("p", "a", "bc")


# invalid inputs: ConfigError with the key path and one sentence


@pytest.mark.parametrize(
    ("raw", "key_path", "needle"),
    [
        pytest.param(
            _raw(staging={**STAGING, "account": "Bad_Account"}),
            "staging.account",
            "Bad_Account",
            id="staging-account-uppercase",
        ),
        pytest.param(
            _raw(staging={**STAGING, "account": "ab"}),
            "staging.account",
            "'ab'",
            id="staging-account-too-short",
        ),
        pytest.param(
            _raw(targets=[_target("s", "eastus", "a" * 25)]),
            "targets.0.account",
            "a" * 25,
            id="target-account-too-long",
        ),
        pytest.param(
            _raw(targets=[_target("s", "eastus", "ok1"), _target("s", "westus", "no-dash")]),
            "targets.1.account",
            "no-dash",
            id="second-target-account",
        ),
        pytest.param(
            _raw(staging={**STAGING, "region": "West Europe"}),
            "staging.region",
            "West Europe",
            id="staging-region",
        ),
        pytest.param(
            _raw(targets=[_target("s", "east-us", "acct1")]),
            "targets.0.region",
            "east-us",
            id="target-region",
        ),
        pytest.param(
            _raw(fleet={"subscriptions": ["s"], "regions": ["westeurope", "EastUS"]}),
            "fleet.regions",
            "EastUS",
            id="fleet-region",
        ),
        pytest.param(
            _raw(fleet={"account_prefix": "Too_Long_Prefix"}),
            "fleet.account_prefix",
            "",
            id="fleet-prefix",
        ),
        pytest.param(_raw(bogus=1), "bogus", "", id="unknown-top-level-key"),
        pytest.param(
            _raw(staging={**STAGING, "acount": "x"}), "staging.acount", "", id="unknown-nested-key"
        ),
        pytest.param(
            _raw(targets=[_target("s", "eastus", "acct1", colour="red")]),
            "targets.0.colour",
            "",
            id="unknown-target-key",
        ),
        pytest.param(
            _raw(naming={"image_template": "{image}-{zone}"}),
            "naming.image_template",
            "{zone}",
            id="template-unknown-placeholder",
        ),
        pytest.param(
            _raw(naming={"image_template": "{0}"}),
            "naming.image_template",
            "{0}",
            id="template-positional",
        ),
        pytest.param(
            _raw(naming={"image_template": "{image"}),
            "naming.image_template",
            "{image",
            id="template-unbalanced",
        ),
        pytest.param(
            _raw(concurrency={"poll_interval_seconds": 0}),
            "concurrency.poll_interval_seconds",
            "",
            id="poll-interval-zero",
        ),
        pytest.param(
            _raw(fanout={"tier1_copies": -1}), "fanout.tier1_copies", "", id="negative-copies"
        ),
        pytest.param(
            _raw(fanout={"copy_method": "fast"}),
            "fanout.copy_method",
            '"auto", "async" or "ranged"',
            id="unknown-copy-method",
        ),
        pytest.param(
            _raw(fanout={"region_clones": -1}), "fanout.region_clones", "", id="negative-clones"
        ),
        pytest.param(
            _raw(fanout={"region_clones": "many"}), "fanout.region_clones", "", id="word-clones"
        ),
        pytest.param(_raw(backend="cloud"), "backend", "", id="unknown-backend"),
        pytest.param({"targets": []}, "staging", "", id="missing-staging"),
    ],
)
def test_invalid_value_names_its_key_path(raw: dict[str, Any], key_path: str, needle: str) -> None:
    error = _config_error(raw)
    assert error.key_path == key_path
    assert f"'{key_path}'" in str(error)
    assert needle in str(error)
    assert _is_sentence(str(error)), str(error)
    assert isinstance(error, InvalidInput)


DUPLICATES = [
    pytest.param(
        _raw(targets=[_target("s", "eastus", "acct1"), _target("s", "eastus", "acct2")]),
        "s/eastus",
        "targets.1",
        id="same-subscription-and-region-twice",
    ),
    pytest.param(
        _raw(
            targets=[
                _target("s", "eastus", "acct1", name="one"),
                _target("s", "eastus", "acct2", name="two"),
            ]
        ),
        "s/eastus",
        "targets.1",
        id="same-pair-under-two-names",
    ),
    pytest.param(
        _raw(
            targets=[
                _target("s", "eastus", "acct1", name="one"),
                _target("t", "westus", "acct2", name="one"),
            ]
        ),
        "one",
        "targets.1",
        id="same-name-twice",
    ),
    pytest.param(
        _raw(targets=[_target("s", "eastus", "acct1"), _target("t", "eastus", "acct1")]),
        "acct1",
        "targets.1",
        id="same-account-twice",
    ),
    pytest.param(
        _raw(targets=[_target("s", "eastus", STAGING_ACCOUNT)]),
        STAGING_ACCOUNT,
        "targets.0",
        id="account-equals-staging",
    ),
    pytest.param(
        _raw(
            targets=[_target("s", "eastus", "acct1")],
            fleet={"subscriptions": ["s"], "regions": ["eastus"]},
        ),
        "s/eastus",
        "fleet",
        id="explicit-target-also-in-fleet",
    ),
    pytest.param(
        _raw(fleet={"subscriptions": ["s", "s"], "regions": ["eastus"]}),
        "s/eastus",
        "fleet",
        id="fleet-subscription-twice",
    ),
    pytest.param(
        _raw(fleet={"subscriptions": ["s"], "regions": ["eastus", "eastus"]}),
        "s/eastus",
        "fleet",
        id="fleet-region-twice",
    ),
]


@pytest.mark.parametrize(("raw", "needle", "key_path"), DUPLICATES)
def test_duplicates_are_refused_naming_the_second_occurrence(
    raw: dict[str, Any], needle: str, key_path: str
) -> None:
    # Regression: the key path used to be '' because the check ran in a model validator.
    error = _config_error(raw)
    assert error.key_path == key_path
    assert f"'{key_path}'" in str(error)
    assert "duplicate" in str(error)
    assert repr(needle) in str(error)
    assert _is_sentence(str(error)), str(error)


@pytest.mark.parametrize("template", ["{image.foo}", "{image[x]}", "{region.upper.x}"])
def test_template_attribute_or_index_access_is_a_config_error(template: str) -> None:
    # Regression: AttributeError/TypeError from str.format used to escape parse_config.
    error = _config_error(_raw(naming={"image_template": template}))
    assert error.key_path == "naming.image_template"
    assert _is_sentence(str(error)), str(error)


@pytest.mark.parametrize(
    ("staging", "key_path"),
    [
        ({"account": "imgdstaging\n"}, "staging.account"),
        ({"region": "westeurope\n"}, "staging.region"),
        ({"container": "imagedist\n"}, "staging.container"),
        ({"resource_group": "rg\n"}, "staging.resource_group"),
    ],
)
def test_trailing_newline_in_a_name_is_refused(staging: dict[str, str], key_path: str) -> None:
    # Regression: the name patterns ended in '$', which also matches before a final newline.
    error = _config_error(_raw(staging={**STAGING, **staging}))
    assert error.key_path == key_path


@pytest.mark.parametrize("subscription", ["", "   "])
def test_empty_fleet_subscription_is_refused(subscription: str) -> None:
    error = _config_error(_raw(fleet={"subscriptions": [subscription], "regions": ["eastus"]}))
    assert error.key_path == "fleet.subscriptions"


# the file itself


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)
    assert "does not exist" in str(info.value)
    assert info.value.key_path == ""


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"staging = {", id="unclosed-inline-table"),
        pytest.param(b"[staging]\naccount = imgdstaging\n", id="unquoted-string"),
        pytest.param(b'{"json": true}', id="json"),
        pytest.param(b"\xff\xfe\x00binary", id="binary"),
    ],
)
def test_non_toml_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "imagedist.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.key_path == ""


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read"):
        load_config(tmp_path)


def test_default_test_config_is_valid(config_path: Path) -> None:
    # The fixture the other suites rely on must itself produce a valid, fast config.
    config = load_config(config_path)
    assert config.concurrency.poll_interval_seconds == 0.05
    assert config.local.image_create_seconds == 0.1
    assert len(config.fleet_targets()) == 6
