"""Drift of a multiclass model's predicted class: a bin per class, PSI or the total variation
distance against the first window; exact indices, batches as one by one, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tideline.drift import CategoricalPSI, TotalVariation

FALLING = [0.4, 0.3, 0.2, 0.1]  # the shares of four classes, then reversed
RISING = [0.1, 0.2, 0.3, 0.4]


def _classes(seed: int, before: list[float], after: list[float], n: int = 10_000,
             at: int = 5_000) -> np.ndarray:  # fmt: skip
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(len(before), size=at, p=before), rng.choice(len(after), size=n - at, p=after)]
    )


SHIFTS = [
    ("PSI: four classes' shares reversed at 5,000", CategoricalPSI, 0.2, FALLING, RISING, 5449),
    ("PSI: the first class loses 15 points to the last", CategoricalPSI, 0.2, FALLING,
     [0.25, 0.3, 0.2, 0.25], 6099),
    ("total variation: four classes' shares reversed", TotalVariation, 0.1, FALLING, RISING, 5299),
    ("total variation: the first class loses 15 points to the last", TotalVariation, 0.1,
     FALLING, [0.25, 0.3, 0.2, 0.25], 5499),
    ("total variation: two classes, 50/50 to 35/65", TotalVariation, 0.1, [0.5, 0.5],
     [0.35, 0.65], 5749),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "threshold", "before", "after", "first"),
                         [s[1:] for s in SHIFTS], ids=[s[0] for s in SHIFTS])  # fmt: skip
def test_a_shift_of_the_class_shares_fires_at_a_pinned_index(
    cls, threshold, before, after, first
) -> None:
    xs = _classes(7, before, after)
    d = cls(len(before), window=1000, threshold=threshold)
    fired = d.update_many(xs)
    assert fired[0] == first and (fired >= 5000).all()
    one = cls(len(before), window=1000, threshold=threshold)
    alone = []
    for i, x in enumerate(xs):
        one.update(x)
        if one.drift_detected:
            alone.append(i)
    assert alone == fired.tolist()


@pytest.mark.parametrize(
    ("cls", "k"),
    [(CategoricalPSI, 4), (TotalVariation, 4), (CategoricalPSI, 50), (TotalVariation, 50)],
    ids=["PSI of 4 classes", "total variation of 4 classes", "PSI of 50 classes",
         "total variation of 50 classes"],
)  # fmt: skip
def test_steady_class_shares_raise_no_alarm_over_100_000_answers(cls, k) -> None:
    rng = np.random.default_rng(3)
    shares = rng.dirichlet(np.ones(k))
    d = cls(k, window=5000, threshold=0.2 if cls is CategoricalPSI else 0.1)
    assert d.update_many(rng.choice(k, size=100_000, p=shares)).tolist() == []
    # no more than the sampling noise the docstring says: 2 (k - 1) / n, sqrt(k / (pi n))
    floor = 2 * (k - 1) / 5000 if cls is CategoricalPSI else np.sqrt(k / (np.pi * 5000))
    assert 0.0 < d.scores[0] < 2 * floor


@pytest.mark.parametrize(("window", "alarms"), [(5000, True), (50_000, False)],
                         ids=["5,000 predictions: sampling noise alone passes 0.2",
                              "50 predictions a class (the monitor's floor): quiet"])  # fmt: skip
def test_a_thousand_steady_classes_need_a_window_of_fifty_predictions_a_class(
    window: int, alarms: bool
) -> None:
    rng = np.random.default_rng(5)
    d = CategoricalPSI(1000, window=window, threshold=0.2)
    fired = d.update_many(rng.integers(0, 1000, size=3 * window))
    assert bool(len(fired)) is alarms


def test_the_event_names_the_classes_whose_share_moved_most() -> None:
    d = CategoricalPSI(4, window=1000)
    d.update_many(_classes(1, FALLING, [0.1, 0.3, 0.2, 0.4]))
    moved = d.moved(top=2)
    assert sorted(moved) == [0, 3]
    assert moved[0][0] == pytest.approx(0.4, abs=0.04) and moved[0][1] == pytest.approx(
        0.1, abs=0.04
    )
    assert CategoricalPSI(4, window=1000).moved() == {}, "nothing to compare before a reference"


def test_total_variation_is_half_the_sum_of_the_shares_differences() -> None:
    d = TotalVariation(3, window=10, check_every=10)
    d.update_many([0] * 5 + [1] * 3 + [2] * 2)  # the reference: 0.5, 0.3, 0.2
    d.update_many([0] * 2 + [1] * 3 + [2] * 5)  # now: 0.2, 0.3, 0.5
    assert d.scores[0] == pytest.approx(0.5 * (0.3 + 0.0 + 0.3))


def test_its_memory_is_the_window_and_the_classes_however_long_the_stream() -> None:
    d = CategoricalPSI(1000, window=2000)
    rng = np.random.default_rng(0)
    for _ in range(20):
        d.update_many(rng.integers(0, 1000, size=10_000))
    assert d.reference is not None and d.reference.shape == (2000, 1)
    assert d._ring.shape == (2000, 1) and d._counts.shape == (1, 1000)
    assert d._ref == []


@pytest.mark.parametrize("bad", [[4.0], [-1.0], [1.5], [np.nan]],
                         ids=["a class past the last", "a negative class", "half a class",
                              "no number"])  # fmt: skip
def test_a_value_that_is_no_class_is_refused(bad) -> None:
    d = TotalVariation(4, window=10)
    d.update_many([0, 1, 2, 3] * 3)  # (the reference: its values are checked too)
    with pytest.raises(ValueError, match="whole numbers 0 to 3"):
        d.update_many(bad)


def test_fewer_than_two_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="2 or more"):
        CategoricalPSI(1)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from([CategoricalPSI, TotalVariation]), st.integers(0, 10**6),
       st.sampled_from([40, 100]), st.sampled_from([1, 3, 7, 20, 100]),
       st.lists(st.integers(1, 400), min_size=1, max_size=8), st.sampled_from([3, 12]))  # fmt: skip
def test_each_check_reads_its_window_as_a_plain_recount_would(
    cls, seed, window, check_every, blocks, k
) -> None:
    """Each check's window recounted from scratch (its classes counted, scored): the same
    checks fire, with the same scores, whatever blocks the answers come in."""
    check_every = min(check_every, window)
    rng = np.random.default_rng(seed)
    n = window + sum(blocks)
    xs = rng.integers(0, k, size=n)
    xs[n // 2 :] = np.minimum(xs[n // 2 :], rng.integers(0, k, size=n - n // 2))  # (shifts)
    d = cls(k, window=window, threshold=0.1, check_every=check_every)
    got, at = d.update_many(xs[:window]).tolist(), window  # (the reference)
    for b in blocks:
        got += (d.update_many(xs[at : at + b]) + at).tolist()
        at += b
    ref_share = np.bincount(xs[:window], minlength=k) / window
    post = xs[window:]
    want, last = [], 0.0
    for t in range(check_every, len(post) + 1, check_every):
        rows = post[max(0, t - window) : t]
        share = np.bincount(rows, minlength=k) / len(rows)
        if cls is TotalVariation:
            last = 0.5 * float(np.abs(share - ref_share).sum())
        else:
            cur = (share * len(rows) + 0.5) / (len(rows) + 0.5 * k)
            ref = (ref_share * window + 0.5) / (window + 0.5 * k)
            last = float(((cur - ref) * np.log(cur / ref)).sum())
        last = last if len(rows) >= window // 2 else 0.0
        if last > 0.1:
            want.append(window + t - 1)
    assert got == want
    assert d.scores[0] == pytest.approx(last)
