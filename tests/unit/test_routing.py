"""The canary routing rule, one for the canaries answered in process and those forwarded."""

from __future__ import annotations

import random

from tideline.contracts import Routing, route_hash


def test_a_key_goes_where_its_hash_says_on_every_replica_and_no_key_goes_by_the_weight() -> None:
    rt = Routing(stable="a", canary="b", weight=30)
    keys = [f"user-{i}" for i in range(2000)]
    picked = [k for k in keys if rt.to_canary(k, random.Random(1))]
    assert picked == [k for k in keys if rt.to_canary(k, random.Random(2))]  # not by chance
    assert picked == [k for k in keys if route_hash(k) < 3000]
    assert 0.25 < len(picked) / len(keys) < 0.35
    rng = random.Random(7)
    share = sum(rt.to_canary(None, rng) for _ in range(20_000)) / 20_000
    assert 0.28 < share < 0.32  # (a rule that read the weight as of 100, not 10,000, fails)
    assert not any(Routing(stable="a", canary="b", weight=0).to_canary(k, rng) for k in keys)
    assert all(Routing(stable="a", canary="b", weight=100).to_canary(k, rng) for k in keys)
