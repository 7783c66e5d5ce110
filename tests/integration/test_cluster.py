"""What only a Redis Cluster (three primaries) shows.

A model's keys share one hash tag, so its transactions (the checkpoint's MULTI with the
publish script) land on one node. The tests of the learner, the server, the store and the
operator that must hold on a cluster too are run on both kinds where they are written
(``tests.helpers.on_one_redis_and_a_cluster``), as are the kill -9 test, the monitor's CLI
test and the prediction-id claims.
"""

from __future__ import annotations

import pytest

from tests.helpers import Served, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_kind", ["redis cluster"], indirect=True),
]


def test_the_client_is_a_cluster_client_and_a_model_s_keys_sit_on_one_node(
    r, served: Served
) -> None:
    from redis.cluster import RedisCluster

    assert isinstance(r, RedisCluster)
    served.client.post("/v1/models/fraud:predict", json={"instances": [{"amount": 1.0}]})
    wait_until(lambda: len(list(r.scan_iter(match=served.dp.keys.prefix + ":*"))) >= 5)
    nodes = {r.get_node_from_key(k).name for k in r.scan_iter(match=served.dp.keys.prefix + ":*")}
    assert len(nodes) == 1
