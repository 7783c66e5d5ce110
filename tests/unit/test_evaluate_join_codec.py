"""Metrics, the delayed-feedback join, the array format and the replay buffer."""

from __future__ import annotations

import numpy as np
import pytest

from tideline import codec
from tideline.evaluate import RollingMetrics, calibration_error, log_loss, ramp_size, scores
from tideline.training import ReplayBuffer


def test_scores_match_their_definitions() -> None:
    p = np.array([0.9, 0.2, 0.6, 0.4])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    s = scores("binary", p, y)
    assert s["accuracy"] == 0.5
    assert s["logloss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.4])))
    r = scores("regression", np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    assert (r["mae"], r["rmse"]) == (1.5, pytest.approx(np.sqrt(2.5)))


def test_calibration_error_is_zero_when_confidence_matches_frequency() -> None:
    p = np.full(10, 0.35)
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0], dtype=float)  # 30 % positives in the 0.3-0.4 bin
    assert calibration_error(p, y) == pytest.approx(0.05)
    assert calibration_error(np.full(4, 0.75), np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(0.0)


def test_log_loss_is_finite_at_certainty() -> None:
    assert np.isfinite(log_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]))).all()


def test_rolling_metrics_keep_only_the_window() -> None:
    m = RollingMetrics("binary", window=100)
    m.update(np.ones(150), np.zeros(150))  # 150 wrong
    m.update(np.ones(60), np.ones(60))  # then 60 right
    rep = m.report()
    assert rep["count"] == 100 and rep["accuracy"] == pytest.approx(0.6)
    assert m.total == 210


def test_the_ramp_doubles_up_to_the_batch_size() -> None:
    sizes, n = [], 0
    while n < 300:
        sizes.append(ramp_size(n, 64))
        n += sizes[-1]
    assert sizes[:8] == [1, 2, 4, 8, 16, 32, 64, 64]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"PK\x03\x04 a zip file", "bad magic"),
        (codec.MAGIC + b"\x05\x00\x00\x00{not", "bad header"),
        (codec.encode({"a": np.arange(4.0)})[:-8], "runs past the end"),
    ],
    ids=["another format", "a broken header", "a truncated array"],
)
def test_bad_blobs_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(blob)


def test_object_arrays_are_never_stored() -> None:
    with pytest.raises(codec.CodecError, match="not storable"):
        codec.encode({"o": np.array([{"a": 1}], dtype=object)})


def test_the_codec_keeps_dtypes_shapes_and_big_endian_input() -> None:
    arrays = {
        "f": np.arange(6.0).reshape(2, 3),
        "i": np.array([1, -2], dtype=np.int64),
        "b": np.array([True, False]),
        "be": np.arange(3, dtype=">f8"),
        "scalar": np.array(3.5),
    }
    out, _ = codec.decode(codec.encode(arrays))
    for k, v in arrays.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].shape == v.shape


def test_replay_keeps_recent_samples_more_often_than_old_ones() -> None:
    rb = ReplayBuffer(size=100, width=1, seed=0)
    for t in range(50):
        rb.add(np.full((20, 1), float(t)), np.zeros(20))
    ages = 49 - rb.X[:, 0]
    assert rb.filled == 100
    assert np.mean(ages < 10) > 0.8  # most of the buffer is from the last 200 samples
    X, _ = rb.sample(30)
    assert X.shape == (30, 1)


def test_every_key_of_a_model_is_in_one_redis_cluster_slot() -> None:
    from redis.crc import key_slot

    from tideline.contracts import Keys

    k = Keys("risk", "fraud")
    keys = [k.events, k.samples, k.feedback, k.log("a1b2c3"), k.logs, k.log_ids(12), k.taken("learner-x", "10s:5"),
            k.log_claim("order-{42}"), k.deadletter, k.routing, k.servers, k.health, k.driftlog, k.forward_token, k.retired,
            k.pointers("f2b7345303"), k.checkpoint("f2b7345303"), k.version("f2b7345303", 7)]  # fmt: skip
    assert len({key_slot(key.encode()) for key in keys}) == 1
    other = Keys("risk", "ads")
    assert key_slot(other.samples.encode()) != key_slot(k.samples.encode())  # models spread


@pytest.mark.parametrize("seed", range(5))
def test_auc_is_scikit_learns_on_scores_with_ties_and_the_means_are_the_rates(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = (rng.random(2000) < 0.03).astype(float)  # a click-through rate of 3 %
    p = np.round(np.clip(0.03 + 0.2 * y + rng.normal(0, 0.05, 2000), 0, 1), 2)  # (ties)
    s = scores("binary", p, y)
    assert s["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert (s["mean_predicted"], s["mean_observed"]) == (pytest.approx(p.mean()), y.mean())
    assert "auc" not in scores("binary", p, np.zeros(2000)), "one class: no AUC"
