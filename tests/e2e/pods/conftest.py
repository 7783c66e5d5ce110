"""Real pods: the one-node cluster (``tests/e2e/cluster/node.py``), the chart installed on it
with its bundled Redis, and the operator running as the chart's pod.

Every image is imported into the node's containerd (pause and Redis from ``make e2e-bin``,
the runtime image from ``make image``); nothing is pulled. The Redis claim binds a
hostPath PersistentVolume made here, as an administrator (or a provisioner) would.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from tests.e2e.cluster.node import RealCluster, runtime_archive
from tests.e2e.pods.kit import (
    NAMESPACE,
    RELEASE,
    Release,
    all_ready,
    explain,
    get,
    install_chart,
    until,
)


@pytest.fixture(scope="package")
def real() -> Iterator[RealCluster]:
    try:
        rc = RealCluster([runtime_archive()])
    except RuntimeError as e:  # not built, or a tool missing: the message says which
        pytest.fail(str(e), pytrace=False)
    with rc:
        yield rc


@pytest.fixture(scope="package")
def release(real: RealCluster) -> Release:
    """``helm install`` with the bundled Redis; the operator pod Ready."""
    started = time.monotonic()
    install_chart(real)
    try:
        until(lambda: all_ready(real, NAMESPACE, "app.kubernetes.io/component=redis", 1), 120,
              "the bundled Redis Ready")  # fmt: skip
        until(lambda: all_ready(real, NAMESPACE, "app.kubernetes.io/component=operator", 1), 120,
              "the operator Ready")  # fmt: skip
    except AssertionError:
        print(explain(real, NAMESPACE))
        raise
    print(f"\n[pods] helm install -> Redis and operator Ready: {time.monotonic() - started:.1f}s")
    secret = get(real, "secret", "-n", NAMESPACE, f"{RELEASE}-redis-auth")
    password = base64.b64decode(secret["data"]["password"]).decode()
    return Release(real, password)
