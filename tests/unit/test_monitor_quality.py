"""The monitor's quality and evidence part without Redis (:class:`tideline.monitoring.candidates.Candidates`):
which version plays which role, what is loaded into the window, and the comparisons the
operator's decisions read - fed what the monitor would have read, with real models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tideline.algorithms import make_learner
from tideline.contracts import Pointers, Routing
from tideline.monitoring.candidates import CONSTANT, Candidates, Key, Loaded, Named
from tideline.tasks import Task

REV = "r1"
FEATURES = [{"name": "a"}, {"name": "b"}]


def _stream(n: int, seed: int) -> tuple[list[dict[str, float]], np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = ((X[:, 0] + 0.3 * rng.normal(size=n)) > 0).astype(float)
    return [{"a": a, "b": b} for a, b in X.tolist()], y


def _trained(poisoned: bool = False, seed: int = 0) -> Any:
    """An sgd model that learned the stream (``poisoned``: its labels flipped)."""
    m = make_learner({"task": "binary", "algorithm": "sgd", "features": FEATURES})
    rows, y = _stream(2000, seed)
    m.learn_many(m.schema.encode(rows), 1.0 - y if poisoned else y)
    return m


class Store:
    """The versions as a loader hands them in, and what was asked for."""

    def __init__(self, versions: dict[Key, tuple[Any, float | None]]) -> None:
        self.versions = versions
        self.asked: list[Key] = []

    def load(self, key: Key) -> Loaded:
        self.asked.append(key)
        return self.versions.get(key)


def _named(c: Candidates, pointers: Pointers, **kw: Any) -> Named:
    routing = kw.pop("routing", Routing(REV))
    return c.name(routing, pointers, kw.pop("canary", None),
                  warm_started=kw.pop("warm_started", False), labelled=kw.pop("labelled", {}))  # fmt: skip


# -- naming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routing", "pointers", "canary", "warm_started", "labelled", "roles", "recent"),
    [
        (Routing(REV), Pointers(latest=3), None, False, {}, {}, ()),
        (Routing(REV), Pointers(latest=2, served=2), None, False, {},
         {"latest": (REV, 2), "served": (REV, 2), "constant": CONSTANT}, ()),
        (Routing(REV), Pointers(latest=3, served=3, lastGood=1), None, False,
         {(REV, 1): 100, (REV, 2): 99, ("old", 7): 500, (REV, None): 900},
         {"latest": (REV, 3), "served": (REV, 3), "lastGood": (REV, 1), "recent": (REV, 1),
          "constant": CONSTANT}, ((REV, 1),)),
        (Routing(REV), Pointers(served=4), None, False, {(REV, 1): 100, (REV, 3): 150},
         {"served": (REV, 4), "recent": (REV, 3), "constant": CONSTANT}, ((REV, 3), (REV, 1))),
        (Routing(REV, canary="c2", weight=10), Pointers(served=2), Pointers(latest=5, served=4),
         False, {}, {"served": (REV, 2), "canary": ("c2", 4), "constant": CONSTANT}, ()),
        (Routing(REV, canary="c2", weight=10), Pointers(served=2), Pointers(latest=5), False, {},
         {"served": (REV, 2), "constant": CONSTANT}, ()),
        (Routing(REV), Pointers(served=2), None, True, {},
         {"served": (REV, 2), "baseline": (REV, 0), "constant": CONSTANT}, ()),
        (Routing(REV), Pointers(latest=1), None, True, {(REV, 1): 100}, {}, ((REV, 1),)),
    ],
    ids=[
        "nothing served: no roles at all, not even the constant",
        "a version served: served, latest and the best constant",
        "recent is a stable version served on minSamples labels, not fewer, nor another revision's",
        "recent is the newest counted version, the older ones wait behind it",
        "the canary revision's served version plays the canary",
        "a canary revision that serves nothing yet plays no role",
        "a warm-started revision offers its v0 as the baseline",
        "roles wait for a served version even when recent and a baseline are there",
    ],
)  # fmt: skip
def test_the_roles_as_the_pointers_name_them(
    routing, pointers, canary, warm_started, labelled, roles, recent
) -> None:
    c = Candidates(Task("binary"), min_samples=100)
    named = c.name(routing, pointers, canary, warm_started=warm_started, labelled=labelled)
    assert named.roles == roles
    assert named.recent == recent


@pytest.mark.parametrize(
    ("pointers", "pin"),
    [
        (Pointers(served=1, pinned=True, pinAt=123.0), (123.0, 1)),
        (Pointers(served=1, pinned=True), (None, 1)),
        (Pointers(served=1, pinAt=123.0), None),
        (Pointers(pinned=True, pinAt=123.0), None),
    ],
    ids=[
        "a pinned served version is the pin, with its time",
        "a pin without its time is still a pin",
        "a pin time without the pin is no pin (unpinned)",
        "a pin with nothing served is no pin",
    ],
)
def test_a_pin_is_the_pinned_served_version(pointers, pin) -> None:
    assert _named(Candidates(Task("binary"), 100), pointers).pin == pin


# -- loading into the window -------------------------------------------------------------------


def test_what_moved_is_what_the_window_does_not_score_yet() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    store = Store({(REV, 1): (_trained(), None), (REV, 2): (_trained(seed=1), None)})
    first = _named(c, Pointers(latest=1, served=1))
    assert c.moved(first), "nothing scored yet"
    c.refresh(first, store.load)
    assert not c.moved(_named(c, Pointers(latest=1, served=1)))
    assert c.moved(_named(c, Pointers(latest=2, served=1))), "a new latest"
    assert c.moved(_named(c, Pointers(latest=1, served=1, pinned=True))), "a pin"
    c.refresh(_named(c, Pointers(latest=2, served=1)), store.load)
    assert store.asked == [(REV, 1), (REV, 2)], "each version loaded once"


def test_a_recent_version_no_longer_stored_gives_way_to_the_newest_older_one_stored() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    store = Store({(REV, 5): (_trained(), None), (REV, 2): (_trained(seed=2), None)})
    labelled = {(REV, 4): 300, (REV, 3): 200, (REV, 2): 100}
    c.refresh(_named(c, Pointers(served=5), labelled=labelled), store.load)
    assert c.roles["recent"] == (REV, 2)
    assert store.asked == [(REV, 5), (REV, 4), (REV, 3), (REV, 2)]


def test_a_role_whose_version_is_not_stored_is_left_out_and_the_rest_judged() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    store = Store({(REV, 2): (_trained(), None)})
    c.refresh(_named(c, Pointers(latest=3, served=2, lastGood=1)), store.load)
    assert c.roles == {"served": (REV, 2), "constant": CONSTANT}
    rows, y = _stream(50, seed=9)
    c.add_samples(rows, y)
    q = c.quality({}, feedback=True)
    assert q is not None and set(q.candidates) == {"served", "constant"}


def test_nothing_served_is_no_evidence() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    c.refresh(_named(c, Pointers(latest=1)), Store({}).load)
    assert c.roles == {} and c.quality({}, feedback=True) is None


# -- the evidence ------------------------------------------------------------------------------


def test_a_rollback_target_is_compared_out_of_sample_and_on_the_whole_window() -> None:
    """``vsServed``: the labels neither version learned; ``vsServedWhole``: those lastGood has
    not learned, the served version scored on all of them."""
    c = Candidates(Task("binary"), min_samples=100)
    rows, y = _stream(300, seed=5)
    c.add_samples(rows, y, np.arange(300.0))  # labels arriving at t = 0 ... 299
    store = Store({(REV, 1): (_trained(), 99.0), (REV, 2): (_trained(poisoned=True), 199.0)})
    c.refresh(_named(c, Pointers(latest=2, served=2, lastGood=1)), store.load)
    q = c.quality({(REV, 2): 40}, feedback=True)
    assert q is not None and (q.window, q.source) == (300, "feedback")
    good, served = q.candidates["lastGood"], q.candidates["served"]
    assert (good.samples, served.samples, served.served_labelled) == (200, 100, 40)
    assert good.vs_served is not None and good.vs_served.samples == 100
    assert good.vs_served_whole is not None and good.vs_served_whole.samples == 200
    assert good.vs_served.better(), "the poisoned version loses"
    assert served.vs_served is None, "the served version is not compared with itself"


def test_a_pin_s_evidence_counts_the_labels_after_it_alone_and_goes_with_the_pin() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    store = Store({(REV, 1): (_trained(), None), (REV, 2): (_trained(poisoned=True), None),
                   (REV, 3): (_trained(seed=3), None)})  # fmt: skip
    before, y_before = _stream(200, seed=6)
    c.add_samples(before, y_before)
    c.refresh(_named(c, Pointers(latest=2, served=2, lastGood=1)), store.load)
    pinned = Pointers(latest=3, served=1, lastGood=1, pinned=True, pinAt=50.0)
    c.refresh(_named(c, pinned), store.load)
    q = c.quality({}, feedback=True)
    assert q is not None and q.pin is not None
    assert (q.pin.at, q.pin.version, q.pin.samples, q.pin.error_since) == (50.0, 1, 0, None)
    assert q.pin.error_before is not None and q.pin.error_before < 0.3
    latest = q.candidates["latest"]
    assert latest.since_pin is not None and latest.since_pin.samples == 0
    after, y_after = _stream(120, seed=7)
    c.add_samples(after, y_after)
    c.refresh(_named(c, pinned), store.load)  # (the same pin: its evidence goes on)
    q = c.quality({}, feedback=True)
    assert q is not None and q.pin is not None and q.pin.samples == 120
    assert q.pin.error_since is not None and q.pin.error_since < 0.3
    assert q.candidates["latest"].since_pin.samples == 120  # type: ignore[union-attr]
    assert q.candidates["latest"].vs_served.samples == 320  # type: ignore[union-attr]
    c.refresh(_named(c, Pointers(latest=3, served=3, lastGood=1)), store.load)  # unpinned
    q = c.quality({}, feedback=False)
    assert q is not None and q.pin is None and q.source == "samples"
    assert all(x.since_pin is None for x in q.candidates.values())


def test_a_canary_is_judged_on_its_track_which_grows_across_its_versions() -> None:
    c = Candidates(Task("binary"), min_samples=100)
    canary = Routing(REV, canary="c2", weight=10)
    store = Store({(REV, 1): (_trained(), None), ("c2", 1): (_trained(seed=1), None),
                   ("c2", 2): (_trained(seed=2), None)})  # fmt: skip
    old, y_old = _stream(100, seed=8)
    c.add_samples(old, y_old)  # before the canary: its track did not answer these
    c.refresh(_named(c, Pointers(served=1), routing=canary, canary=Pointers(served=1)),
              store.load)  # fmt: skip
    q = c.quality({}, feedback=True)
    assert q is not None
    assert q.candidates["canary"].samples == 100, "its version is scored on the whole window"
    assert q.candidates["canary"].vs_served.samples == 0  # type: ignore[union-attr]
    rows, y = _stream(60, seed=10)
    c.add_samples(rows, y)
    c.refresh(_named(c, Pointers(served=1), routing=canary, canary=Pointers(served=2)),
              store.load)  # fmt: skip
    c.add_samples(*_stream(40, seed=11))
    q = c.quality({}, feedback=True)
    assert q is not None and q.candidates["canary"].version == 2
    assert q.candidates["canary"].vs_served.samples == 100  # type: ignore[union-attr]


def _compared(c: Any) -> set[str]:
    """What a candidate of the summary is compared with."""
    fields = {"vsServed": c.vs_served, "vsServedWhole": c.vs_served_whole,
              "sincePin": c.since_pin}  # fmt: skip
    return {k for k, v in fields.items() if v is not None} | {f"versus {k}" for k in c.versus}


@pytest.mark.parametrize(
    ("pointers", "labelled", "warm_started", "compared"),
    [
        (Pointers(latest=2, served=2), {}, False,
         {"served": set(), "latest": set(), "constant": {"vsServed"}}),
        (Pointers(latest=3, served=3, lastGood=2), {}, False,
         {"served": set(), "latest": set(), "lastGood": {"vsServed", "vsServedWhole"},
          "constant": {"vsServed"}}),
        (Pointers(latest=3, served=2, lastGood=2), {}, False,
         {"served": set(), "latest": {"vsServed"}, "lastGood": set(), "constant": {"vsServed"}}),
        (Pointers(served=3, lastGood=1), {(REV, 2): 100}, False,
         {"served": set(), "lastGood": {"vsServed", "vsServedWhole"}, "constant": {"vsServed"},
          "recent": {"vsServed", "versus lastGood", "versus constant"}}),
        (Pointers(served=3, lastGood=2), {(REV, 2): 100}, False,
         {"served": set(), "lastGood": {"vsServed", "vsServedWhole"}, "constant": {"vsServed"},
          "recent": {"vsServed", "versus constant"}}),
        (Pointers(served=3), {}, True,
         {"served": set(), "baseline": {"vsServed", "vsServedWhole"}, "constant": {"vsServed"}}),
        (Pointers(latest=3, served=2, lastGood=2, pinned=True, pinAt=9.0), {}, False,
         {"served": set(), "latest": {"vsServed", "sincePin"}, "lastGood": set(),
          "constant": {"vsServed"}}),
    ],
    ids=[
        "served alone: the constant is compared with it",
        "lastGood, a rollback target: out of sample and on the whole window",
        "lastGood served: not compared with itself",
        "recent is compared with lastGood and the constant, what its proof reads",
        "recent that is lastGood: with the constant alone",
        "a warm-start baseline is a rollback target too",
        "while pinned, latest is also compared on the labels since the pin",
    ],
)  # fmt: skip
def test_what_each_role_is_compared_with(pointers, labelled, warm_started, compared) -> None:
    c = Candidates(Task("binary"), min_samples=100)
    store = Store({(REV, v): (_trained(seed=v), None) for v in range(4)})
    c.add_samples(*_stream(200, seed=12))
    c.refresh(_named(c, pointers, labelled=labelled, warm_started=warm_started), store.load)
    q = c.quality(labelled, feedback=True)
    assert q is not None
    assert {role: _compared(x) for role, x in q.candidates.items()} == compared


@pytest.mark.parametrize(
    ("written", "now", "countable"),
    [(None, 100, False), (0, 99, False), (0, 100, True), (99, 150, True), (100, 150, False)],
    ids=[
        "the served version short of minSamples labels: not yet",
        "the served version at minSamples labels, never written: now",
        "written with none, now at minSamples: now",
        "written short of minSamples, now past it: now",
        "written at minSamples already: its proof has what it waits for",
    ],
)
def test_the_served_version_is_countable_once_when_it_reaches_min_samples(
    written, now, countable
) -> None:
    c = Candidates(Task("binary"), min_samples=100)
    c.refresh(_named(c, Pointers(served=1)), Store({(REV, 1): (_trained(), None)}).load)
    if written is not None:
        c.written({(REV, 1): written})
    assert c.countable({(REV, 1): now}) is countable
