"""The e2e suite's control plane: one per test session, built and started here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cluster.controlplane import ControlPlane


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        yield cp
