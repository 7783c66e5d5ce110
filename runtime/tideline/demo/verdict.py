"""What a ``tideline run`` showed, in sentences: what was injected, when tideline noticed,
what it did and what it cost (issue 37: the report and the terminal say the same).

A pure function of the run's summary (:func:`tideline.demo.local.run_local`'s): its
events (``t``, ``reason``, ``message``) and the served quality each second
(``accuracy_timeline``, or a regression's ``rmse_timeline``; ``quality`` says which).

Examples
--------
>>> verdict({"events": [{"t": 20.0, "reason": "DriftInjected", "message": ""},
...                     {"t": 21.4, "reason": "ConceptDrift", "message": ""}],
...          "quality": "accuracy", "accuracy_timeline": []})[0]
'Concept drift injected at 20 s: noticed at 21.4 s (ConceptDrift, 1.4 s later).'
"""

from __future__ import annotations

import math
import re
from typing import Any

REACTIONS = ("ConceptDrift", "RolledBack", "Unpinned", "BacktestFailed", "RolloutAborted",
             "Promoted")  # fmt: skip
INJECTIONS = ("DriftInjected", "PoisonInjected", "PoisonEnded", "Applied", "CanaryStarted")
BASELINE = 5  # seconds before an injection its served quality is compared with
ACCURACY_BAND = 0.02  # "back within 2 points"
RMSE_BAND = 0.10  # a regression's: within 10 % of its RMSE before


def verdict(summary: dict[str, Any]) -> list[str]:
    """The run as a few sentences, first what went wrong and what tideline did about it.

    Parameters
    ----------
    summary
        ``run_local``'s summary; keys missing from it (an interrupted run's) are skipped.
    """
    events = list(summary.get("events") or [])
    rmse = summary.get("quality") == "rmse"
    timeline = summary.get("rmse_timeline" if rmse else "accuracy_timeline") or []
    lines = []
    if summary.get("interrupted"):
        # (as the terminal's first line of the summary says it)
        lines.append(f"Interrupted after {summary.get('seconds', 0.0):.1f}s of "
                     f"{summary.get('duration', 0.0):.0f}s: what ran until then.")  # fmt: skip
    for injection, sentence in (("DriftInjected", _drift), ("PoisonInjected", _poisoning)):
        injected = _first(events, (injection,), 0.0)
        if injected is not None:  # (what the run injected, and what tideline did about it)
            lines.append(sentence(events, injected["t"], timeline, rmse))
    lines += _revisions(events, summary)
    lines.append(_cost(summary, rmse))
    return lines


def _s(t: float) -> str:
    """Seconds of the run as a person reads them: 20 s, 21.4 s."""
    return f"{t:.0f} s" if float(t).is_integer() else f"{t:.1f} s"


def _first(events: list[dict[str, Any]], reasons: tuple[str, ...], after: float,
           before: float = math.inf) -> dict[str, Any] | None:  # fmt: skip
    return next((e for e in events if e["reason"] in reasons and after <= e["t"] < before), None)


def _mean(timeline: list[float | None], start: float, end: float) -> float | None:
    xs = [x for t, x in enumerate(timeline) if start <= t < end and x is not None]
    return sum(xs) / len(xs) if xs else None


def _q(x: float, rmse: bool) -> str:
    return f"{x:.3f}" if rmse else f"{x:.2f}"


def _name(rmse: bool) -> str:
    return "RMSE" if rmse else "accuracy"


def _drift(events: list[dict[str, Any]], t0: float, timeline: list[float | None],
           rmse: bool) -> str:  # fmt: skip
    """The concept drift injected at ``t0``: when it was noticed, how far the served quality
    fell and when it came back."""
    noticed = _first(events, ("ConceptDrift",), t0)
    text = f"Concept drift injected at {_s(t0)}: " + (
        f"noticed at {_s(noticed['t'])} (ConceptDrift, {noticed['t'] - t0:.1f} s later)"
        if noticed
        else "not flagged as concept drift"
    )
    before = _mean(timeline, t0 - BASELINE, t0)
    after = [(t, x) for t, x in enumerate(timeline) if t >= t0 and x is not None]
    if before is not None and after:
        name = _name(rmse)
        worst = max(x for _, x in after) if rmse else min(x for _, x in after)
        back = next((t for t, x in after
                     if (x <= before * (1 + RMSE_BAND) if rmse else x >= before - ACCURACY_BAND)
                     and t > t0 + 1), None)  # fmt: skip
        band = "10 %" if rmse else f"{ACCURACY_BAND * 100:.0f} points"
        text += (f"; served {name} went from {_q(before, rmse)} to "
                 f"{'at worst' if rmse else 'as low as'} {_q(worst, rmse)}, "
                 + (f"back within {band} by {_s(back)}" if back is not None
                    else f"not back within {band} by the end"))  # fmt: skip
    return text + "."


def _poisoning(events: list[dict[str, Any]], p0: float, timeline: list[float | None],
               rmse: bool) -> str:  # fmt: skip
    """The label poisoning from ``p0``: the rollback and its pin, the served quality meanwhile."""
    ended = _first(events, ("PoisonEnded",), p0)
    p1 = ended["t"] if ended else None
    span = f"{_s(p0)[:-2]}-{_s(p1)}" if p1 is not None else f"from {_s(p0)}"  # (35-43 s)
    rolled = _first(events, ("RolledBack",), p0)
    if rolled is None:
        text = f"Label poisoning {span}: no rollback"
    else:
        to = re.search(r"-> (v\d+)", rolled["message"])
        text = (f"Label poisoning {span}: rolled back at {_s(rolled['t'])}"
                + (f" to {to.group(1)}" if to else ""))  # fmt: skip
        unpinned = _first(events, ("Unpinned",), rolled["t"])
        text += f", pinned until {_s(unpinned['t'])}" if unpinned else ", pinned to the end"
    held = _mean(timeline, p0, p1 if p1 is not None else math.inf)
    before = _mean(timeline, p0 - BASELINE, p0)
    if held is not None:
        text += f"; served {_name(rmse)} {_q(held, rmse)} while it lasted"
        text += f" ({_q(before, rmse)} before)" if before is not None else ""
    return text + "."


def _revisions(events: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """Each applied revision and what became of it: stopped (backtest, analysis) or promoted."""
    lines = []
    applied = [e for e in events if e["reason"] == "Applied"]
    for i, e in enumerate(applied):
        until = applied[i + 1]["t"] if i + 1 < len(applied) else math.inf
        stopped = _first(events, ("BacktestFailed", "RolloutAborted"), e["t"], until)
        promoted = _first(events, ("Promoted",), e["t"], until)
        if stopped is not None:
            how = "its backtest" if stopped["reason"] == "BacktestFailed" else "the canary analysis"
            served = summary.get("bad_revision_canary_predictions")
            lines.append(f"Bad revision at {_s(e['t'])}: stopped by {how} at {_s(stopped['t'])}"
                         + (f", {served:,} canary predictions" if served is not None else "")
                         + ".")  # fmt: skip
        elif promoted is not None:
            lines.append(f"New revision at {_s(e['t'])}: promoted at {_s(promoted['t'])}.")
        else:
            lines.append(f"New revision at {_s(e['t'])}: not promoted by the end "
                         f"(phase {summary.get('phase') or '-'}).")  # fmt: skip
    return lines


def _cost(summary: dict[str, Any], rmse: bool) -> str:
    quality = summary.get("quality", "accuracy")
    mean = summary.get(f"served_{quality}_mean")
    parts = [f"served {_name(rmse)} {_q(mean, rmse)} on average" if mean is not None
             else f"no served {_name(rmse)} measured"]  # fmt: skip
    if "request_errors" in summary:
        parts.append(f"{summary['request_errors']:,} request errors")
    restarts = sum((summary.get("restarts") or {}).values())
    parts.append(
        f"{restarts} process restart{'s' if restarts > 1 else ''}"
        if restarts
        else "no process restarts"
    )
    return "Overall: " + ", ".join(parts) + "."
