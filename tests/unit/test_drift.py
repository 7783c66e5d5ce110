"""Drift detectors: exact detection indices on seeded streams, batches equal to one-by-one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tideline.drift import ADWIN, KS, PSI, EventOrder, PageHinkley


def _errors(seed: int, before: float, after: float, n: int = 10_000, at: int = 5_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(at) < before, rng.random(n - at) < after]).astype(float)


def _one_by_one(detector, xs) -> list[int]:
    fired = []
    for i, x in enumerate(xs):
        detector.update(x)
        if detector.drift_detected:
            fired.append(i)
    return fired


CONCEPT = [
    ("ADWIN on an abrupt rise of the error rate from 0.1 to 0.3", ADWIN, 7, 0.1, 0.3, [5119]),
    ("ADWIN on a rise from 0.1 to 0.4", ADWIN, 7, 0.1, 0.4, [5119]),
    ("Page-Hinkley on a rise from 0.1 to 0.4", PageHinkley, 7, 0.1, 0.4, [5134]),
    ("Page-Hinkley on a rise from 0.1 to 0.3", PageHinkley, 7, 0.1, 0.3, [5186]),
]


@pytest.mark.parametrize(("cls", "seed", "before", "after", "expected"), [c[1:] for c in CONCEPT],
                         ids=[c[0] for c in CONCEPT])  # fmt: skip
def test_concept_detectors_fire_at_pinned_indices(cls, seed, before, after, expected) -> None:
    xs = _errors(seed, before, after)
    assert cls().update_many(xs).tolist() == expected
    assert _one_by_one(cls(), xs) == expected


@pytest.mark.parametrize(
    ("cls", "n"),
    [(ADWIN, 300_000), (PageHinkley, 30_000)],
    ids=[
        "ADWIN over 300,000 observations",
        "Page-Hinkley over 30,000 (its fading sum wanders further)",
    ],
)
def test_no_alarm_on_a_long_stationary_stream(cls, n) -> None:
    xs = _errors(3, 0.2, 0.2, n=n, at=n // 2)
    assert cls().update_many(xs).tolist() == []


@pytest.mark.parametrize("cls", [ADWIN, PageHinkley], ids=["ADWIN", "Page-Hinkley"])
def test_batches_of_any_size_leave_the_state_feeding_one_by_one_leaves(cls) -> None:
    xs = _errors(11, 0.1, 0.5, n=20_000, at=6_000)
    single = cls()
    expected = _one_by_one(single, xs)
    batched = cls()
    rng = np.random.default_rng(0)
    fired, i = [], 0
    while i < len(xs):
        k = int(rng.integers(1, 700))
        fired += (batched.update_many(xs[i : i + k]) + i).tolist()
        i += k
    assert fired == expected
    if cls is ADWIN:
        assert (batched.width, batched.estimation) == (
            single.width,
            pytest.approx(single.estimation),
        )


def test_adwin_forgets_the_old_concept() -> None:
    d = ADWIN()
    d.update_many(_errors(7, 0.1, 0.4, n=20_000))
    assert d.width < 15_000  # the part before the change is gone
    assert d.estimation == pytest.approx(0.4, abs=0.03)


CONCEPT_DIRECTION = [
    (
        "ADWIN up: an error rate that falls (a model learning) is no concept drift",
        ADWIN(direction="up"),
        0.4,
        0.1,
        [],
    ),
    ("ADWIN up: an error rate that rises is", ADWIN(direction="up"), 0.1, 0.4, [5119]),
    ("ADWIN both: a fall fires too (ADWIN's own test)", ADWIN(), 0.4, 0.1, [5087]),
    ("ADWIN down: only the fall fires", ADWIN(direction="down"), 0.1, 0.4, []),
    ("Page-Hinkley: a fall is no increase", PageHinkley(), 0.2, 0.05, []),
    (
        "ADWIN up, min_change 0.05: a 3-point rise is adapted to silently",
        ADWIN(direction="up", min_change=0.05),
        0.10,
        0.13,
        [],
    ),
    (
        "ADWIN up, min_change 0.05: a 20-point rise fires",
        ADWIN(direction="up", min_change=0.05),
        0.1,
        0.3,
        [5119],
    ),
    ("ADWIN up, no min_change: the 3-point rise fires", ADWIN(direction="up"), 0.10, 0.13, None),
]


@pytest.mark.parametrize(("detector", "before", "after", "expected"), [c[1:] for c in CONCEPT_DIRECTION],
                         ids=[c[0] for c in CONCEPT_DIRECTION])  # fmt: skip
def test_concept_drift_is_the_error_going_up(detector, before, after, expected) -> None:
    fired = detector.update_many(_errors(7, before, after, n=20_000, at=5_000)).tolist()
    if expected is None:
        assert fired, "fires"
    else:
        assert fired == expected


def test_adwin_up_still_drops_the_old_part_after_a_fall_so_a_later_rise_is_found_soon() -> None:
    rng = np.random.default_rng(2)
    xs = np.concatenate([rng.random(n) < p for n, p in ((5000, 0.4), (5000, 0.1), (5000, 0.3))])
    d = ADWIN(direction="up")
    fired = d.update_many(xs.astype(float)).tolist()
    assert len(fired) == 1 and 10_000 <= fired[0] < 10_600, fired


def _features(seed: int, shift_at: int, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[shift_at:, 2] += 0.6  # one feature's mean moves
    return x


@pytest.mark.parametrize(("cls", "expected_first"), [(PSI, 15249), (KS, 15249)], ids=["PSI", "KS"])
def test_feature_drift_is_found_in_the_feature_that_moved(cls, expected_first) -> None:
    d = cls(n_features=4, window=5000, threshold=0.2)
    fired = d.update_many(_features(5, 11_000))
    assert fired[0] == expected_first
    assert int(np.argmax(d.scores)) == 2
    assert (d.scores[[0, 1, 3]] < 0.1).all()


@pytest.mark.parametrize("cls", [PSI, KS], ids=["PSI", "KS"])
def test_feature_detectors_stay_quiet_without_a_change(cls) -> None:
    d = cls(n_features=4, window=5000)
    assert d.update_many(_features(6, shift_at=10**9, n=60_000)).tolist() == []


@pytest.mark.parametrize("cls", [PSI, KS], ids=["PSI", "KS"])
def test_feature_detectors_batch_equals_one_by_one(cls) -> None:
    xs = _features(8, 7_000, n=12_000)
    one = cls(n_features=4, window=2000)
    expected = [i for i, row in enumerate(xs) if (one.update(row) or one.drift_detected)]
    many = cls(n_features=4, window=2000)
    got = []
    for i in range(0, len(xs), 777):
        got += (many.update_many(xs[i : i + 777]) + i).tolist()
    assert got == expected and expected
    np.testing.assert_array_equal(one.scores, many.scores)


@pytest.mark.parametrize(
    "reference",
    [
        lambda rng: rng.normal(size=5000),
        lambda rng: rng.lognormal(0, 2, 5000),
        lambda rng: rng.exponential(1, 5000) * 1e6,
        lambda rng: np.concatenate([np.zeros(2500), rng.normal(size=2500)]),
        lambda rng: rng.integers(0, 24, 5000).astype(float),  # duplicate edges
        lambda rng: np.full(5000, 3.0),  # one value: no grid, binary search
    ],
    ids=["normal", "lognormal", "exponential", "half zeros", "integers", "constant"],
)
def test_ks_bins_every_value_as_a_binary_search_does(reference) -> None:
    rng = np.random.default_rng(7)
    ref = reference(rng)
    ks = KS(n_features=1, window=len(ref))
    ks.update_many(ref.reshape(-1, 1))
    edges = ks._edges[0]
    x = np.concatenate(
        [
            rng.choice(ref, 20_000),
            rng.normal(ref.mean(), 3 * ref.std() + 1, 5000),
            edges,
            np.nextafter(edges, np.inf),
            np.nextafter(edges, -np.inf),
            [np.nan, np.inf, -np.inf],
        ]
    )
    expected = np.searchsorted(edges, x, side="right")
    np.testing.assert_array_equal((ks._flat_bins(x.reshape(-1, 1)) - ks._offsets)[:, 0], expected)


def test_ks_bins_a_feature_without_a_grid_beside_one_with_a_grid() -> None:
    rng = np.random.default_rng(8)
    ref = np.column_stack([rng.normal(size=3000), np.full(3000, 2.0)])  # the second is constant
    ks = KS(n_features=2, window=len(ref))
    ks.update_many(ref)
    assert ks._grid_set is None and ks._grids[0] is not None and ks._grids[1] is None
    x = np.column_stack([rng.normal(size=5000), rng.choice([1.0, 2.0, 3.0, np.nan], 5000)])
    expected = np.column_stack(
        [np.searchsorted(ks._edges[j], x[:, j], side="right") for j in (0, 1)]
    )
    np.testing.assert_array_equal(ks._flat_bins(x) - ks._offsets, expected)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.integers(1, 3), st.booleans()),
        max_size=60,
    ),
    st.integers(1, 50),
)
def test_event_order_releases_in_event_time_and_loses_nothing_unseen(arrivals, max_held) -> None:
    o = EventOrder(max_held=max_held)
    released: list[float] = []
    added = 0
    for ts, n, release in arrivals:
        o.add(ts, [ts] * n, ("rev", n))  # each value is its own event time
        added += n
        if release:
            values, tags = o.release()
            assert len(tags) == len(values)
            released += values.tolist()
            assert o.held <= max_held
    assert released == sorted(released), "never an older value after a newer one"
    assert len(released) + o.late + o.held == added


def test_event_order_waits_as_long_as_values_have_been_coming_late() -> None:
    o = EventOrder(quantile=0.99)
    rng = np.random.default_rng(1)
    ts = np.arange(10_000) * 0.001  # a prediction each ms ...
    arrival = ts + rng.uniform(0, 2.0, len(ts))  # ... its label 0 to 2 s later
    for i in np.argsort(arrival):
        o.add(float(ts[i]), [float(ts[i])], None)
    values, _ = o.release()
    assert list(values) == sorted(values)
    assert 0.02 * len(ts) <= o.held <= 0.25 * len(ts)  # the last ~2 s wait for stragglers
    assert o.late == 0
    o.add(float(values[-1]) - 0.5, [0.0], None)  # behind what was released: late
    assert o.late == 1


def test_event_order_holds_at_most_max_held_values() -> None:
    o = EventOrder(max_held=100)
    for k in range(1000):
        o.add(float(k), [1.0], None)
        o.add(float(k) - 500.0, [1.0], None)  # lateness of 500 s: a watermark far behind
    values, _ = o.release()
    assert o.held == 100 and len(values) == 1900
    assert list(values) == sorted(values)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from([PSI, KS]), st.integers(0, 10**6), st.sampled_from([40, 100]),
       st.sampled_from([1, 3, 7, 20, 100]), st.lists(st.integers(1, 400), min_size=1, max_size=8),
       st.floats(0.0, 3.0))  # fmt: skip
def test_feature_detectors_check_every_window_as_a_plain_recount_would(
    cls, seed, window, check_every, blocks, shift
) -> None:
    """Each check's window recounted from scratch (its rows binned, counted, scored): the same
    checks fire, with the same scores, whatever blocks the rows come in."""
    check_every = min(check_every, window)
    rng = np.random.default_rng(seed)
    n = window + sum(blocks)
    xs = rng.normal(size=(n, 2))
    xs[n // 2 :, 1] += shift  # a feature that moves (or not) halfway
    d = cls(n_features=2, window=window, threshold=0.1, check_every=check_every)
    got, at = d.update_many(xs[:window]).tolist(), window  # (the reference)
    for b in blocks:
        got += (d.update_many(xs[at : at + b]) + at).tolist()
        at += b
    ref = cls(n_features=2, window=window, threshold=0.1, check_every=check_every)
    ref.update_many(xs[:window])
    post = xs[window:]
    want, last = [], np.zeros(2)
    for t in range(check_every, len(post) + 1, check_every):
        rows = post[max(0, t - window) : t]
        counts = ref._histogram(ref._flat_bins(rows)).astype(float)
        last = ref._scores(counts[None], np.array([len(rows)]))[0]
        if (last > 0.1).any():
            want.append(window + t - 1)
    assert got == want
    np.testing.assert_array_equal(d.scores, last)
