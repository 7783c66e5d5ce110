"""The server, the learner and the store on a real Redis Cluster (three primaries).

A model's keys share one hash tag, so its transactions (the checkpoint's MULTI
with the publish script) land on one node. Tests written for one Redis are run
here again with ``r``, ``served`` and the operator's ``setup`` on the cluster; the kill -9 test and the
monitor's CLI test run on both through the ``backend`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import manifest
from tests.integration.test_learner_process import (  # noqa: F401 (run here on the cluster)
    test_feedback_is_joined_with_the_prediction_log_in_any_order,
    test_late_unmatched_and_invalid_entries_go_to_the_dead_letter_stream,
    test_learns_every_sample_acks_them_and_publishes_versions,
    test_packed_entries_are_learned_whole_and_a_bad_row_in_one_is_dead_lettered_alone,
    test_pause_and_reset_by_control_hash,
    test_the_label_streams_lose_only_what_every_consumer_group_acknowledged,
)
from tests.integration.test_reconcile import (  # noqa: F401 (run here on the cluster)
    Clock,
    FakeKube,
    test_a_guardrail_breach_pins_served_to_last_good_and_resets_the_learner,
    test_a_new_revision_runs_a_warm_started_canary_then_replaces_stable,
    test_a_removed_revisions_redis_keys_go_a_grace_after_its_objects,
    test_rollback_by_annotation_points_served_at_the_named_version,
)
from tests.integration.test_server import (  # noqa: F401 (run here on the cluster)
    Served,
    _trained,
    _wait,
    test_a_new_served_version_is_live_within_a_second,
    test_every_prediction_is_logged_with_its_track,
    test_the_learner_joins_feedback_with_what_the_server_logged,
)
from tests.integration.test_store import (  # noqa: F401 (run here on the cluster)
    test_a_published_version_loads_back_identical,
    test_forgetting_a_revision_deletes_its_keys_and_learner_groups_and_nothing_else,
)
from tideline.pods.store import ModelStore

pytestmark = pytest.mark.integration


@pytest.fixture
def r(redis_cluster) -> Iterator:
    client = redis_cluster.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def setup(r, redis_cluster) -> tuple:
    """The operator's reconciler on the cluster (an in-memory Kubernetes API)."""
    from tideline_operator.builders import OperatorConfig
    from tideline_operator.reconcile import ModelMemory, Reconciler

    kube, clock = FakeKube(), Clock()
    rec = Reconciler(kube, OperatorConfig(image="img:1", redis_url=redis_cluster.url), clock=clock)  # type: ignore[arg-type]
    return rec, kube, clock, [], ModelMemory()


@pytest.fixture
def served(r, redis_cluster) -> Iterator[Served]:
    s = Served(redis_cluster.url, manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, _trained())
    with s.client:
        _wait(lambda: s.dp.ready)
        yield s


def test_the_client_is_a_cluster_client_and_a_model_s_keys_sit_on_one_node(r, served) -> None:
    from redis.cluster import RedisCluster

    assert isinstance(r, RedisCluster)
    served.client.post("/v1/models/fraud:predict", json={"instances": [{"amount": 1.0}]})
    _wait(lambda: len(list(r.scan_iter(match=served.dp.keys.prefix + ":*"))) >= 5)
    nodes = {r.get_node_from_key(k).name for k in r.scan_iter(match=served.dp.keys.prefix + ":*")}
    assert len(nodes) == 1
