"""The guardrails over seeded runs of the whole loop: do they roll back when it helps, and only then?

Three scenarios, each a ``tideline run`` of examples/fraud.yaml (real Redis,
learner, two servers, monitor and the operator's reconcile loop) with a
seed of its own:

* ``stationary``: nothing injected. Every rollback and every concept-drift
  event is a false alarm.
* ``drift``: the concept changes at ``--drift-at``. Expected: a concept-drift
  event, the learner adapts, no rollback (old versions are as wrong).
* ``poison``: from ``--poison-at`` for ``--poison-for`` a label producer sends
  flipped labels through ``:learn``. Expected: a rollback on accuracy, an
  unpin once the learner has recovered.

With ``--clicks-only`` the same scenarios run on examples/fraud.yaml with
``learning.labelDefault: {value: 0, after: --after}``: only the positives' labels
are sent (tideline run's simulator sends a click after a log-normal delay with its
median at an eighth of ``after``), every other prediction is learned and scored
with the default ``after`` its time. The poisoning is then flipped clicks: a click
through ``:learn`` on every row that was not clicked, twice over (a producer of
clicks sends no "not clicked"). The monitor scores a prediction only once it is
``after`` old, so a rollback counts as the poisoning's until ``after`` + 2 s (the
clocks' slack) later than with every label.

``drift`` and ``poison`` also run with the guardrails at ``alert``
(``onConceptDrift: alert``, ``maxAccuracyDrop: 1``: nothing automatic), the
same seed, so what the guardrails buy is measured against doing nothing.
Reported per scenario and arm, over the seeds: false rollbacks (any outside
the poisoning), missed rollbacks (a poisoning with none), concept-drift
events (in brackets those before anything was injected), detection delays
(concept-drift event after the drift, rollback after the poisoning starts),
the served accuracy clients got, and the accuracy-seconds lost after the
injection: the sum over seconds of how far the served accuracy fell below
its level in the 5 s before. Run with ``make bench`` (about 35 minutes with
10 seeds) or ``python bench/guardrails.py --seeds 3``; clicks only, e.g.
``python bench/guardrails.py --clicks-only --scenarios stationary`` (about 8 minutes).
"""

from __future__ import annotations

import argparse
import copy
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tideline.demo.local import run_local
from tideline.pods.defaults import CLOCK_SLACK

ROOT = Path(__file__).resolve().parents[1]
ALERT = {"onConceptDrift": "alert", "maxAccuracyDrop": 1.0}


def _run(manifest: dict[str, Any], scenario: str, seed: int, args: argparse.Namespace,
         alert: bool) -> dict[str, Any]:  # fmt: skip
    m = copy.deepcopy(manifest)
    if alert:
        m["spec"]["guardrails"] = {**m["spec"].get("guardrails", {}), **ALERT}
    kw: dict[str, Any] = {}
    if scenario == "drift":
        kw["drift_at"] = args.drift_at
    if scenario == "poison":
        kw.update(poison_at=args.poison_at, poison_for=args.poison_for)
    return run_local(m, duration=args.duration, rate=args.rate, seed=seed, out=io.StringIO(),
                     report=None, **kw)  # fmt: skip


def _lost(timeline: list[float | None], at: float) -> float:
    """Accuracy-seconds below the level of the 5 s before ``at``, from ``at`` on."""
    acc = np.array([np.nan if a is None else a for a in timeline])
    start = int(at)
    level = np.nanmean(acc[max(start - 5, 0) : start])
    after = acc[start:]
    return float(np.nansum(np.maximum(level - after, 0.0)))


def measure(summary: dict[str, Any], scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    events = summary["events"]
    rollbacks = [e["t"] for e in events if e["reason"] == "RolledBack"]
    concept = [e["t"] for e in events if e["reason"] == "ConceptDrift"]
    out: dict[str, Any] = {
        "served": summary["served_accuracy_mean"],
        "concept_events": len(concept),
    }
    injected = {"drift": args.drift_at, "poison": args.poison_at}.get(scenario, float("inf"))
    out["false_concept"] = sum(t < injected for t in concept)  # before anything changed
    if scenario == "poison":
        start, end = args.poison_at, args.poison_at + args.poison_for
        # clicks only: a poisoned version's answers are scored 'after' (and the slack) late
        seen = args.after + CLOCK_SLACK if args.clicks_only else 0.0
        inside = [t for t in rollbacks if start <= t <= end + seen + 5]
        out["false_rollbacks"] = len(rollbacks) - len(inside)
        out["missed"] = int(not inside)
        out["delay"] = inside[0] - start if inside else None
        out["lost"] = _lost(summary["accuracy_timeline"], start)
    else:
        out["false_rollbacks"] = len(rollbacks)
        if scenario == "drift":
            after = [t - args.drift_at for t in concept if t >= args.drift_at]
            out["delay"] = after[0] if after else None
            out["lost"] = _lost(summary["accuracy_timeline"], args.drift_at)
    return out


def _fmt(xs: list[Any], digits: int = 2) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--drift-at", type=float, default=15.0)
    ap.add_argument("--poison-at", type=float, default=12.0)
    ap.add_argument("--poison-for", type=float, default=8.0)
    ap.add_argument("--scenarios", default="stationary,drift,poison")
    ap.add_argument("--clicks-only", action="store_true",
                    help="labels for the positives alone, the rest learned with labelDefault")  # fmt: skip
    ap.add_argument("--after", type=float, default=5.0,
                    help="labelDefault's after (seconds), with --clicks-only")  # fmt: skip
    args = ap.parse_args()
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    if args.clicks_only:
        manifest["spec"]["learning"]["labelDefault"] = {"value": 0, "after": f"{args.after:g}s"}
    scenarios = args.scenarios.split(",")
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    began = time.monotonic()
    for seed in range(args.seeds):
        for scenario in scenarios:
            for alert in (False, True) if scenario != "stationary" else (False,):
                s = _run(manifest, scenario, 100 + seed, args, alert)
                arm = "alert" if alert else "guardrails"
                m = measure(s, scenario, args)
                rows.setdefault((scenario, arm), []).append(m)
                print(f"[{time.monotonic() - began:6.0f}s] seed {seed} {scenario:<10} {arm:<10} {m}",
                      flush=True)  # fmt: skip
    labels = (
        f"clicks only (labelDefault after {args.after:g} s)" if args.clicks_only else "every label"
    )
    print(f"\n{args.seeds} seeds, {args.duration:.0f} s runs at {args.rate:.0f}/s, {labels}; "
          f"drift at {args.drift_at:.0f} s; poisoning {args.poison_at:.0f}-"
          f"{args.poison_at + args.poison_for:.0f} s. Means (min-max) over the seeds.\n")  # fmt: skip
    head = ("scenario", "arm", "false rollbacks", "missed rollbacks", "concept events (false)",
            "detection delay s", "accuracy-s lost", "served accuracy")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for (scenario, arm), ms in rows.items():
        print(" | ".join([
            scenario, arm,
            str(sum(m["false_rollbacks"] for m in ms)),
            str(sum(m.get("missed", 0) for m in ms)) if scenario == "poison" else "-",
            f"{sum(m['concept_events'] for m in ms)} ({sum(m['false_concept'] for m in ms)})",
            _fmt([m.get("delay") for m in ms]),
            _fmt([m.get("lost") for m in ms]),
            _fmt([m["served"] for m in ms], 3),
        ]))  # fmt: skip


if __name__ == "__main__":
    main()
