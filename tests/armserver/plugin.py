"""pytest fixtures: ``arm_server`` (one subprocess server per session) and ``arm`` (reset per test).

Use them from a conftest with ``from armserver.plugin import arm, arm_server  # noqa: F401`` or,
in the root conftest, ``pytest_plugins = ["armserver.plugin"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .process import ArmServerProcess

TEST_PAGE_SIZE = 2
#: Long-running operations other than image creation take this long (an image delete reads
#: Deleting meanwhile): long enough that every client really polls, short enough for the suite.
TEST_LRO_SECONDS = 0.1


@pytest.fixture(scope="session")
def arm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArmServerProcess]:
    """The shared test ARM server (a subprocess); ``.url``, ``.ca_file``, counters, faults.

    Lists answer in pages of 2, so every client that lists must follow ``nextLink``; long-running
    operations take :data:`TEST_LRO_SECONDS`.
    """
    with ArmServerProcess(
        tmp_path_factory.mktemp("armserver"), page_size=TEST_PAGE_SIZE, lro_delay=TEST_LRO_SECONDS
    ) as server:
        yield server


@pytest.fixture
def arm(arm_server: ArmServerProcess) -> Iterator[ArmServerProcess]:
    """``arm_server`` with empty state, default config and no faults for this test."""
    arm_server.reset()
    yield arm_server
    arm_server.clear_faults()
