"""Faults the loop must survive, one line each: what clients were served during and after, and what was lost.

Each scenario is a ``tideline run`` of examples/fraud.yaml (real Redis, the
learner, two servers, the monitor and the operator's reconcile loop as the
processes a pod runs, 2,000 predictions/s) with a fault injected, over
seeds. The scenarios of issue 30's table grow here one by one:

* ``drift-then-poison``: a concept drift at ``--drift-at``, then
  ``--poison-after`` seconds later a label producer sends flipped labels
  through ``:learn`` for ``--poison-for``. Expected: a concept-drift event
  and adaptation, then a rollback as fast as without the drift: the goal is
  at most 2 s from the poisoning to the rollback, for every seed.
* ``group-deleted-then-poison``: the monitor's consumer groups on
  ``feedback`` and ``samples`` are deleted (a store reset or an eviction)
  ``--group-lead`` seconds before the same poisoning, without a drift.
  Expected: the monitor reads again (it re-creates its group on
  ``NOGROUP``) and the poisoning is rolled back as with a working monitor.

Reported per seed: the time from the poisoning to the first rollback (``-``:
none), whether the poisoning was read as concept drift before it was rolled
back, served accuracy (what clients got, against their true labels) in the
5 s before the poisoning, from it to the rollback, and from 2 s after the
rollback to the end; the accuracy-seconds lost (the sum over seconds of how
far the served accuracy fell below its level in the 5 s before the
poisoning) and what else was lost (a process that exited). Then one line
per scenario over the seeds, with the slowest rollback.

A run stops 6 s after its rollback (or 16 s after the poisoning began
without one), so a seed takes about 35 s: ``python bench/faults.py --seeds
20`` runs a scenario in about 12 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
import yaml

from tideline.contracts import Keys
from tideline.demo.local import run_local
from tideline.spec import parse

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.0  # seconds from the poisoning to the rollback, for every seed
AFTER_ROLLBACK = 6.0  # seconds a run goes on after its rollback (served accuracy after)
WITHOUT_ROLLBACK = 16.0  # seconds a run goes on after the poisoning began without one

_EVENT = re.compile(r"^\s*([0-9.]+)s\s+>>> (\w+): ")


class Watch(io.TextIOBase):
    """The run's printed lines, read as they come: the Redis URL, when traffic began, its
    events (``>>> Reason:``); ``at`` runs actions at times of the run, ``stop`` ends it."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.url: str | None = None
        self.began: float | None = None  # monotonic time of the run's second 0
        self.events: list[tuple[float, str]] = []
        self._plan: list[tuple[float, Callable[[Watch], None]]] = []
        self._buffer = ""
        self._lock = threading.Lock()

    def at(self, t: float, action: Callable[[Watch], None]) -> None:
        self._plan.append((t, action))

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if line.startswith("redis "):
            self.url = line.split()[-1]
        elif line.startswith("started ") and self.began is None:
            self.began = time.monotonic()  # (the run's clock starts as its servers are up)
            threading.Thread(target=self._play, daemon=True).start()
        elif m := _EVENT.match(line):
            self.events.append((float(m.group(1)), m.group(2)))

    def _play(self) -> None:
        assert self.began is not None
        for t, action in sorted(self._plan, key=lambda p: p[0]):
            if self.stop.wait(max(0.0, self.began + t - time.monotonic())):
                return
            action(self)

    def client(self) -> Any:
        assert self.url is not None
        return redis.Redis.from_url(self.url)


@dataclass
class Scenario:
    """A fault and when the poisoning that follows it begins (seconds of the run)."""

    name: str
    poison_at: float
    drift_at: float | None = None
    inject: list[tuple[float, Callable[[Watch], None]]] = field(default_factory=list)


def _delete_monitor_groups(keys: Keys) -> Callable[[Watch], None]:
    def act(watch: Watch) -> None:
        client = watch.client()
        for stream in (keys.feedback, keys.samples):
            with contextlib.suppress(redis.ResponseError):  # (no such stream yet)
                client.xgroup_destroy(stream, "monitor")
        client.close()

    return act


def scenarios(args: argparse.Namespace, keys: Keys) -> dict[str, Scenario]:
    poison = args.drift_at + args.poison_after
    return {
        "drift-then-poison": Scenario("drift-then-poison", poison, drift_at=args.drift_at),
        "group-deleted-then-poison": Scenario(
            "group-deleted-then-poison",
            poison,
            inject=[(poison - args.group_lead, _delete_monitor_groups(keys))],
        ),
    }


def _stopper(scenario: Scenario) -> Callable[[Watch], None]:
    """Ends the run once its outcome is known: a while after the rollback, or without one."""

    def check(watch: Watch) -> None:
        deadline = scenario.poison_at + WITHOUT_ROLLBACK
        assert watch.began is not None
        while not watch.stop.wait(0.2):
            now = time.monotonic() - watch.began
            rolled = [t for t, reason in watch.events
                      if reason == "RolledBack" and t >= scenario.poison_at]  # fmt: skip
            if (rolled and now >= rolled[0] + AFTER_ROLLBACK) or now >= deadline:
                watch.stop.set()

    return check


def run(manifest: dict[str, Any], scenario: Scenario, seed: int,
        args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    stop = threading.Event()
    watch = Watch(stop)
    for t, action in scenario.inject:
        watch.at(t, action)
    watch.at(scenario.poison_at, _stopper(scenario))
    lost: list[str] = []
    try:
        summary = run_local(manifest, duration=scenario.poison_at + WITHOUT_ROLLBACK + 1,
                            rate=args.rate, seed=seed, drift_at=scenario.drift_at,
                            poison_at=scenario.poison_at, poison_for=args.poison_for,
                            out=watch, report=None, stop=stop)  # fmt: skip
    except RuntimeError as e:  # a process exited: the demo has no restart policy
        stop.set()
        lost.append(str(e).splitlines()[1].split(":")[0] if "\n" in str(e) else str(e))
        return {"seed": seed, "lost": lost, "delay": None}
    return measure(summary, scenario, seed, lost)


def measure(summary: dict[str, Any], scenario: Scenario, seed: int,
            lost: list[str]) -> dict[str, Any]:  # fmt: skip
    at = scenario.poison_at
    events = [(e["t"], e["reason"]) for e in summary["events"]]
    rolled = [t for t, reason in events if reason == "RolledBack" and t >= at]
    concept = [t for t, reason in events if reason == "ConceptDrift"]
    end = rolled[0] if rolled else None
    acc = np.array([np.nan if a is None else a for a in summary["accuracy_timeline"]])
    before = float(np.nanmean(acc[max(int(at) - 5, 0) : int(at)]))
    during = acc[int(at) : int(end) + 1] if end is not None else acc[int(at) :]
    after = acc[int(end) + 2 :] if end is not None else np.array([])
    return {
        "seed": seed,
        "delay": round(end - at, 1) if end is not None else None,
        "concept_first": any(at <= t <= (end if end is not None else np.inf) for t in concept),
        "concept": concept,
        "before": before,
        "during": float(np.nanmean(during)) if len(during) else None,
        "after": float(np.nanmean(after)) if len(after) else None,
        "lost_accuracy_s": float(np.nansum(np.maximum(before - acc[int(at) :], 0.0))),
        "lost": lost,
    }


def _acc(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def _mean(ms: list[dict[str, Any]], key: str) -> str:
    xs = [m[key] for m in ms if m.get(key) is not None]
    return _acc(float(np.mean(xs)) if xs else None)


def line(m: dict[str, Any]) -> str:
    delay = "-" if m["delay"] is None else f"{m['delay']:.1f} s"
    if "before" not in m:
        return f"seed {m['seed']:>3}  rollback {delay:>6}  lost: {', '.join(m['lost'])}"
    return (f"seed {m['seed']:>3}  rollback {delay:>6}  concept first {'yes' if m['concept_first'] else 'no ':<3}  "
            f"served accuracy {_acc(m['before'])} before, {_acc(m['during'])} during, "
            f"{_acc(m['after'])} after  lost {m['lost_accuracy_s']:.2f} accuracy-s"
            f"{'  lost: ' + ', '.join(m['lost']) if m['lost'] else ''}")  # fmt: skip


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    head = ("scenario", "seeds", "rollback after poisoning s (median, slowest)",
            f"over {GOAL:.0f} s", "missed", "read as concept drift first",
            "served accuracy before / during / after", "accuracy-s lost", "processes lost")  # fmt: skip
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, ms in rows.items():
        delays = [m["delay"] for m in ms if m["delay"] is not None]
        out.append(" | ".join([
            name, str(len(ms)),
            f"{np.median(delays):.1f}, {max(delays):.1f}" if delays else "-",
            str(sum(d > GOAL for d in delays)),
            str(sum(m["delay"] is None for m in ms)),
            str(sum(bool(m.get("concept_first")) for m in ms)),
            " / ".join(_mean(ms, k) for k in ("before", "during", "after")),
            f"{np.mean([m.get('lost_accuracy_s', 0.0) for m in ms]):.2f}",
            str(sum(len(m["lost"]) for m in ms)),
        ]))  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--drift-at", type=float, default=10.0)
    ap.add_argument("--poison-after", type=float, default=20.0,
                    help="seconds from the drift to the poisoning (issue 30: 20)")  # fmt: skip
    ap.add_argument("--poison-for", type=float, default=10.0)
    ap.add_argument("--group-lead", type=float, default=5.0,
                    help="seconds the monitor's groups are gone before the poisoning")  # fmt: skip
    ap.add_argument("--scenarios", default="drift-then-poison")
    args = ap.parse_args()
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    model = parse(manifest)
    known = scenarios(args, Keys(model.namespace, model.name))
    rows: dict[str, list[dict[str, Any]]] = {}
    began = time.monotonic()
    for name in args.scenarios.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            m = run(manifest, known[name], seed, args)
            rows.setdefault(name, []).append(m)
            print(f"[{time.monotonic() - began:5.0f}s] {name:<26} {line(m)}", flush=True)
    print(f"\n{args.seeds} seeds at {args.rate:.0f} predictions/s; poisoning for "
          f"{args.poison_for:.0f} s, {args.poison_after:.0f} s after the drift (drift-then-poison) "
          f"or {args.group_lead:.0f} s after the groups went (group-deleted-then-poison).\n")  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
