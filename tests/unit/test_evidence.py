"""The paired comparison behind every automatic decision: valid under repeated looks, and powerful."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tideline.evidence import ALPHA, CommonWindow, Constant, Paired, cs_radius


def _alarm_rates(
    disagree: float, runs: int = 1000, looks: int = 50, every: int = 100
) -> tuple[float, float]:
    """Share of null runs (mean difference 0) in which some look excludes 0: the
    confidence sequence's, and a fixed-sample z-test's read at every look."""
    rng = np.random.default_rng(17)
    d = rng.choice(
        [1.0, -1.0, 0.0], size=(runs, looks * every), p=[disagree / 2, disagree / 2, 1 - disagree]
    )
    cs_alarm = z_alarm = 0
    z = 1.959963984540054  # two-sided 5 %
    for row in d:
        p = Paired()
        cs_hit = z_hit = False
        for k in range(looks):
            p.update(row[k * every : (k + 1) * every])
            lo, hi = p.interval(ALPHA)
            cs_hit = cs_hit or lo > 0 or hi < 0
            z_hit = z_hit or abs(p.mean) > z * math.sqrt(p.variance / p.n)
        cs_alarm += cs_hit
        z_alarm += z_hit
    return cs_alarm / runs, z_alarm / runs


@pytest.mark.parametrize(
    "disagree", [0.05, 0.2, 0.6], ids=lambda d: f"versions disagree on {d:.0%} of samples"
)
def test_false_alarms_stay_under_alpha_over_fifty_looks_while_a_repeated_z_test_inflates(
    disagree: float,
) -> None:
    cs, z = _alarm_rates(disagree)
    # 1000 runs: the rate's standard error at 5 % is 0.7 points
    assert cs <= ALPHA, f"confidence sequence false alarm rate {cs:.3f} over {ALPHA}"
    assert z > 1.5 * ALPHA, f"a z-test read 50 times should inflate (got {z:.3f})"


@pytest.mark.parametrize(
    ("disagree", "power"),
    [(0.05, 0.85), (0.10, 0.55)],
    ids=["3 points on 2000 samples, versions disagreeing on 5 %: power >= 0.85",
         "3 points on 2000 samples, versions disagreeing on 10 %: power >= 0.55"],
)  # fmt: skip
def test_power_on_a_three_point_difference_with_2000_samples(disagree: float, power: float) -> None:
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(1000):
        p = Paired()
        p.update(rng.choice([1.0, -1.0, 0.0], size=2000,
                            p=[(disagree + 0.03) / 2, (disagree - 0.03) / 2, 1 - disagree]))  # fmt: skip
        hits += p.interval()[0] > 0
    assert hits / 1000 >= power


def test_the_interval_narrows_with_samples_and_is_infinite_without_any() -> None:
    assert cs_radius(0, 0.2) == math.inf
    radii = [cs_radius(n, 0.2) for n in (100, 1000, 10_000, 100_000)]
    assert radii == sorted(radii, reverse=True)
    assert radii[-1] < 0.01


def test_identical_versions_get_a_zero_centred_interval_and_the_reference_loss_is_averaged() -> (
    None
):
    p = Paired()
    p.update(np.zeros(500), reference_loss=np.full(500, 2.0))
    lo, hi = p.interval()
    assert lo < 0 < hi and p.mean == 0.0
    assert p.reference_loss == 2.0


def test_the_common_window_scores_every_candidate_on_the_same_samples_and_grows_each_comparison() -> (
    None
):
    from tideline.algorithms import make_learner
    from tideline.demo.simulate import SyntheticStream
    from tideline.evidence import CommonWindow, Constant

    feats = [{"name": "a"}, {"name": "b"}, {"name": "c", "type": "categorical"}]
    stream = SyntheticStream(feats, "binary", seed=4)
    rows, y = stream.take(3000)
    good = make_learner({"algorithm": "sgd", "features": feats})
    good.learn_many(good.schema.encode(rows), y)
    bad = make_learner({"algorithm": "sgd", "features": feats})
    bad.learn_many(bad.schema.encode(rows), 1.0 - y)
    w = CommonWindow("binary", size=1000)
    test_rows, test_y = stream.take(1500)
    w.add_samples(test_rows[:600], test_y[:600])
    w.add_candidate("good", good)
    w.add_candidate("bad", bad)
    w.add_candidate("constant", Constant(1.0))
    first = w.compare("good", "bad")
    assert first.n == 600
    w.add_samples(test_rows[600:], test_y[600:])  # the window keeps 1000; the comparison grows
    pair = w.compare("good", "bad")
    assert pair is first and pair.n == 1500 and w.count == 1000
    right = lambda m: (m.predict_many(m.schema.encode(test_rows)) >= 0.5) == test_y  # noqa: E731
    assert pair.mean == pytest.approx(np.mean(right(good).astype(float) - right(bad)))
    assert w.score("good")["accuracy"] == pytest.approx(np.mean(right(good)[500:]))
    assert w.relative(pair)[1] > 0.3  # surely better
    w.keep_only({"good", "constant"})
    assert "bad" not in w and "good" in w


def test_a_comparison_opened_since_a_point_holds_only_the_samples_that_came_after_it() -> None:
    w = CommonWindow("binary", size=6)
    w.add_candidate("one", Constant(1.0))
    w.add_candidate("zero", Constant(0.0))
    w.add_samples([{}] * 4, np.array([1.0, 1.0, 1.0, 1.0]))
    since = w.total
    fresh, whole = w.compare("zero", "one", since=since), w.compare("zero", "one")
    w.add_samples([{}] * 4, np.array([0.0, 0.0, 0.0, 0.0]))
    assert (whole.n, whole.mean) == (8, 0.0)
    assert (fresh.n, fresh.mean) == (4, 1.0), "the labels since the point alone"
    assert w.score("one", last=4)["accuracy"] == 0.0 and w.score("one")["accuracy"] == 2 / 6
    # opened late, it is seeded with the samples since the point the window still holds
    assert w.compare("one", "zero", since=since).n == 4
    w.keep_since(set())
    assert w.compare("zero", "one", since=since) is not fresh
