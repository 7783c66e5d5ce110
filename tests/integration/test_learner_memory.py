"""A learner that outgrows its memory limit shows it in the status: the learner (in this test
process, against a real redis-server) writes its memory into its status hash at every
checkpoint, with a fake cgroup for its container's limit, and the operator's turn reads it
into the LearnerMemory condition."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.helpers import (
    CANARY_ROLLOUT,
    FRAUD_FEATURES,
    as_applied,
    learn_until,
    manifest,
    push_samples,
    turn,
)
from tideline.demo.simulate import SyntheticStream
from tideline.memory import Probe, resident_bytes, size
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

pytestmark = pytest.mark.integration

GIB = 1 << 30


def _cgroup(tmp_path: Path, limit: int | str) -> Probe:
    """A probe of this process's real resident set, in a fake cgroup v2 whose limit is
    ``limit`` (the container's own namespace: its cgroup is the root)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "memory.max").write_text(f"{limit}\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/\n")
    return Probe(root=root, proc_cgroup=proc)


def _learner(r, tmp_path: Path, limit: int | str) -> LearnerProcess:
    m = manifest(
        "fraud", rollout=CANARY_ROLLOUT, learning={"publishEvery": 500, "maxBatchDelay": "20ms"}
    )
    p = LearnerProcess(parse(m), r, checkpoint_seconds=0.0, memory=_cgroup(tmp_path, limit))
    p.start()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=0).take(600)
    push_samples(r, p.keys.samples, rows, y)
    learn_until(p, lambda: p.counters["samples"] == 600)
    return p


def test_each_checkpoint_writes_the_learner_s_memory_its_limit_and_its_state_s_size(
    r, tmp_path
) -> None:
    p = _learner(r, tmp_path, 2 * GIB)
    status = r.hgetall(p.keys.learner(p.revision))
    rss = int(status[b"rssBytes"])
    now = resident_bytes() or 0
    assert 0.5 * now < rss < 2 * now, "this process's resident set, as statm says it"
    assert status[b"memoryLimitBytes"] == str(2 * GIB).encode()
    checkpoint = r.get(p.keys.checkpoint(p.revision))
    assert int(status[b"stateBytes"]) == len(checkpoint), "the last checkpoint's size"
    assert p.metrics.memory_limit_bytes._value.get() == 2 * GIB
    assert p.metrics.state_bytes._value.get() == len(checkpoint)
    assert p.metrics.resident_bytes._value.get() == rss


def test_a_container_without_a_limit_writes_it_empty(r, tmp_path) -> None:
    p = _learner(r, tmp_path, "max")
    status = r.hgetall(p.keys.learner(p.revision))
    assert status[b"memoryLimitBytes"] == b"" and int(status[b"rssBytes"]) > 0
    assert p.metrics.memory_limit_bytes._value.get() == 0


def test_a_learner_near_its_limit_is_logged_once_and_said_in_the_operator_s_condition(
    r, tmp_path, setup, caplog
) -> None:
    rec, kube, clock, events, _ = setup
    # a limit just above what the learner holds: 85 % of it and more is near
    limit = int((resident_bytes() or 0) * 1.1)
    with caplog.at_level(logging.WARNING, logger="tideline.learner"):
        p = _learner(r, tmp_path, limit)
    said = [m for m in caplog.messages if "raise spec.pods.learner.resources" in m]
    assert len(said) == 1, "once an episode, not at every checkpoint"
    assert said[0].startswith(f"learner of revision {p.revision} uses ")

    body = as_applied(manifest("fraud", rollout=CANARY_ROLLOUT,
                          learning={"publishEvery": 500, "maxBatchDelay": "20ms"}))  # fmt: skip
    st = turn(setup, body) or {}
    [cond] = [c for c in st["conditions"] if c["type"] == "LearnerMemory"]
    assert (cond["status"], cond["reason"]) == ("False", "NearLimit")
    state = len(r.get(p.keys.checkpoint(p.revision)))
    share = re.search(rf"^learner of revision {p.revision} uses .+ of its .+ limit \((\d+) %\); "
                      rf"its state is {size(state)}: raise spec\.pods\.learner\.resources\."
                      r"limits\.memory or bound the model$", cond["message"])  # fmt: skip
    assert share is not None and int(share[1]) >= 85, cond["message"]
    assert [e for e in events if e[1] == "LearnerMemoryNearLimit"] == [
        ("Warning", "LearnerMemoryNearLimit", cond["message"])
    ]
    assert st["phase"] != "Degraded", "a warning, not Degraded"

    # the container's limit raised (the pod recreated with more): Ok at the next checkpoint
    (tmp_path / "cgroup" / "memory.max").write_text(f"{4 * limit}\n")
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(10)
    push_samples(r, p.keys.samples, rows, y)
    learn_until(p, lambda: p.counters["samples"] == 610)
    clock.now += 1
    st = turn(setup, body) or {}
    [cond] = [c for c in st["conditions"] if c["type"] == "LearnerMemory"]
    assert (cond["status"], cond["reason"]) == ("True", "Ok")
    assert [e[1] for e in events if e[1].startswith("LearnerMemory")] == [
        "LearnerMemoryNearLimit", "LearnerMemoryOk"
    ]  # fmt: skip
