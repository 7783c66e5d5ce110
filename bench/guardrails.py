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

With ``--backtest`` it runs the new-revision scenario instead (issue 35): at
``--canary-at`` a bad revision is applied (plain SGD at learningRate 100, as in ``make
demo``), then, once it is stopped (or after 20 s), a good one (batchSize doubled). 30 s
by default: at 14 s, against a stable still near its cold start, the backtest stopped the
bad revision in 1 seed of 4. Two arms, the same seeds: ``backtest``, with
``learning.history: 24h`` (the backtest step before any traffic), and ``live only``,
without history (the bad revision is stopped by the live analysis, after it has served,
or replaced after 20 s). Reported: the bad revision's canary predictions before it was
stopped or replaced (goal 0 with the backtest), its backtest's verdict, what stopped it
and when; how often the good one's backtest fails it (goal: at most the paired test's
alpha); and the catch-up's rows a second (each canary learner's report). About 21 minutes with 10 seeds.
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
from tideline.evidence import ALPHA
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


def _canary(manifest: dict[str, Any], seed: int, args: argparse.Namespace,
            history: bool) -> dict[str, Any]:  # fmt: skip
    """One run of the new-revision scenario: a bad revision at ``--canary-at``, then a good one."""
    m = copy.deepcopy(manifest)
    m["spec"]["learning"]["history"] = "24h" if history else "0s"
    return run_local(m, duration=args.duration, rate=args.rate, seed=seed, out=io.StringIO(),
                     report=None, canary_at=args.canary_at, bad_first=True)  # fmt: skip


def measure_canary(summary: dict[str, Any]) -> dict[str, Any]:
    """The bad revision's canary predictions, what stopped it and how soon; the good one's
    backtest verdict; each catch-up's rows a second."""
    events = summary["events"]
    applied = [e["t"] for e in events if e["reason"] == "Applied"]
    bad_at = applied[0] if applied else None
    good_at = applied[1] if len(applied) > 1 else None
    stops = [e for e in events if e["reason"] in ("BacktestFailed", "RolloutAborted")
             and bad_at is not None and e["t"] >= bad_at
             and (good_at is None or e["t"] <= good_at)]  # fmt: skip
    said = ("BacktestFailed", "BacktestPassed", "BacktestInconclusive")
    verdicts = [e["reason"] for e in events
                if good_at is not None and e["t"] >= good_at and e["reason"] in said]  # fmt: skip
    bad_said = [e["reason"] for e in events if bad_at is not None and e["t"] >= bad_at
                and (good_at is None or e["t"] < good_at) and e["reason"] in said]  # fmt: skip
    return {
        "bad_served": summary["bad_revision_canary_predictions"],
        "stopped_by": stops[0]["reason"] if stops else None,
        "stopped_after": stops[0]["t"] - bad_at if stops and bad_at is not None else None,
        "bad_verdict": bad_said[0] if bad_said else None,
        "good_verdict": verdicts[0] if verdicts else None,
        "good_aborted": any(
            e["reason"] == "RolloutAborted" and good_at is not None and e["t"] >= good_at
            for e in events
        ),
        "catch_up": [b["rate"] for b in summary.get("backtests", []) if b["rows"]],
        "rows": [b["rows"] for b in summary.get("backtests", []) if b["rows"]],
    }


def backtest_bench(manifest: dict[str, Any], args: argparse.Namespace) -> None:
    rows: dict[str, list[dict[str, Any]]] = {}
    began = time.monotonic()
    for seed in range(args.seeds):
        for history in (True, False):
            arm = "backtest" if history else "live only"
            m = measure_canary(_canary(manifest, 100 + seed, args, history))
            rows.setdefault(arm, []).append(m)
            print(f"[{time.monotonic() - began:6.0f}s] seed {seed} {arm:<10} {m}", flush=True)
    print(f"\n{args.seeds} seeds, {args.duration:.0f} s runs at {args.rate:.0f}/s, a bad revision "
          f"(plain sgd, learningRate 100) at {args.canary_at:.0f} s, then a good one (batchSize "
          f"doubled). Means (min-max) over the seeds.\n")  # fmt: skip
    head = ("arm", "bad: canary predictions", "bad: backtest", "bad: stopped by", "bad: stopped after s",
            "good: backtest failed", "good: verdicts", "catch-up rows/s", "rows caught up")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for arm, ms in rows.items():
        stopped: dict[str, int] = {}
        verdicts: dict[str, int] = {}
        bad_verdicts: dict[str, int] = {}
        for m in ms:
            if m["bad_verdict"]:
                bad_verdicts[m["bad_verdict"]] = bad_verdicts.get(m["bad_verdict"], 0) + 1
            why = m["stopped_by"] or "not in 20 s"
            stopped[why] = stopped.get(why, 0) + 1
            if m["good_verdict"]:
                verdicts[m["good_verdict"]] = verdicts.get(m["good_verdict"], 0) + 1
        failed = verdicts.get("BacktestFailed", 0)
        judged = sum(verdicts.values())
        print(" | ".join([
            arm,
            _fmt([m["bad_served"] for m in ms], 0),
            ", ".join(f"{k.removeprefix('Backtest')} {v}" for k, v in sorted(bad_verdicts.items())) or "-",
            ", ".join(f"{k} {v}" for k, v in sorted(stopped.items())),
            _fmt([m["stopped_after"] for m in ms], 1),
            f"{failed} of {judged} (alpha {ALPHA:g})" if judged else "-",
            ", ".join(f"{k.removeprefix('Backtest')} {v}" for k, v in sorted(verdicts.items())) or "-",
            _fmt([r for m in ms for r in m["catch_up"]], 0),
            _fmt([r for m in ms for r in m["rows"]], 0),
        ]))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds a run (40; with --backtest, --canary-at + 24)")  # fmt: skip
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--drift-at", type=float, default=15.0)
    ap.add_argument("--poison-at", type=float, default=12.0)
    ap.add_argument("--poison-for", type=float, default=8.0)
    ap.add_argument("--scenarios", default="stationary,drift,poison")
    ap.add_argument("--clicks-only", action="store_true",
                    help="labels for the positives alone, the rest learned with labelDefault")  # fmt: skip
    ap.add_argument("--after", type=float, default=5.0,
                    help="labelDefault's after (seconds), with --clicks-only")  # fmt: skip
    ap.add_argument("--backtest", action="store_true",
                    help="the new-revision scenario: a bad revision then a good one, with and "
                         "without the backtest on history")  # fmt: skip
    ap.add_argument("--canary-at", type=float, default=30.0,
                    help="when the bad revision is applied, with --backtest")  # fmt: skip
    args = ap.parse_args()
    if args.duration is None:  # (the good revision's backtest comes within 24 s of the bad one)
        args.duration = args.canary_at + 24.0 if args.backtest else 40.0
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    if args.backtest:
        backtest_bench(manifest, args)
        return
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
