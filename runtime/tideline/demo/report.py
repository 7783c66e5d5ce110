"""The report of a ``tideline run``: one self-contained HTML page a person reads at a glance.

From the top: the verdict (:func:`tideline.demo.verdict.verdict`, the lines the terminal
prints too), the quality over time per track with a lane of the version served and the
rollbacks' pins under it, the request latency, the summary as plain rows and the event
log. On the plots what the run *did to* the model (a drift, a poisoning, a revision
applied) is grey - dashed lines and a shaded span, labelled above the axes - and what
tideline *did about it* (issue 37) is a solid coloured line labelled inside; no marker
reuses a line's colour, and the legends sit outside the data.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import transforms  # noqa: E402

from tideline.demo.verdict import REACTIONS, verdict  # noqa: E402

# the lines: quality in blue, purple and grey; latency in blues (no marker is either)
QUALITY = {"stable": "#1f77b4", "canary": "#9467bd", "served": "#4d4d4d"}
LATENCY = {"p50": "#9ecae1", "p95": "#4292c6", "p99": "#08306b"}
# what tideline did: solid, coloured, labelled inside the axes
REACTED = {"ConceptDrift": ("#d62728", "drift noticed"), "RolledBack": ("#ff7f0e", "rolled back"),
           "Unpinned": ("#8c564b", "unpinned"), "BacktestFailed": ("#000000", "backtest failed"),
           "RolloutAborted": ("#000000", "aborted"), "Promoted": ("#2ca02c", "promoted")}  # fmt: skip
# what the run did to the model: grey, dashed (the poisoning: a shaded span)
INJECTED = {"DriftInjected": "drift injected", "Applied": "revision applied",
            "CanaryStarted": "canary"}  # fmt: skip
GREY = "#9a9a9a"
PIN = "#ff7f0e"  # the pinned intervals on the version lane: a rollback's colour
assert set(REACTED) == set(REACTIONS)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


LABEL_POINTS = 9.0  # the width of a rotated 7 pt label (its line height), in points


def label_offsets(times: list[float], points_per_second: float,
                  width: float = LABEL_POINTS) -> list[float]:  # fmt: skip
    """How far right (in points) each label moves from its line so that none overlaps the
    one before: reactions a second apart (a drift noticed and the rollback it caused) would
    write one over the other. A label keeps its place when it has room.

    >>> label_offsets([10.0, 10.2, 10.3, 30.0], points_per_second=10.0)
    [0.0, 7.0, 15.0, 0.0]
    """
    out, edge = [], -math.inf  # (each label's right edge, in points from 0 s)
    for t in times:
        x = t * points_per_second
        placed = max(x, edge + width)
        out.append(placed - x)
        edge = placed
    return out


def _points_per_second(ax: Any) -> float:
    """The x axis' scale, as laid out: points of the figure per second of the run."""
    lo, hi = ax.get_xlim()
    width = ax.get_position().width * ax.figure.get_figwidth() * 72
    return width / (hi - lo) if hi > lo else 1.0


def _marks(ax: Any, events: list[Any], end: float, labels: bool) -> None:
    """Injections grey and dashed (the poisoning shaded), reactions solid and coloured; a
    reaction's label moved right (:func:`label_offsets`) where the one before is too near."""
    top = ax.get_xaxis_transform()  # x in data, y in axes
    start = next((e.t for e in events if e.reason == "PoisonInjected"), None)
    if start is not None:
        stop = next((e.t for e in events if e.reason == "PoisonEnded"), end)
        ax.axvspan(start, stop, color=GREY, alpha=0.18, linewidth=0)
        if labels:
            ax.text(start, 1.01, "label poisoning", transform=top, color="#555555", fontsize=7,
                    rotation=90, va="bottom", ha="center")  # fmt: skip
    last = -math.inf  # (a label 1.5 s or less after the last one would write over it)
    reactions = [e for e in events if e.reason in REACTED]
    shifts = iter(label_offsets([e.t for e in reactions], _points_per_second(ax)))
    for e in events:
        if e.reason in INJECTED:
            ax.axvline(e.t, color=GREY, linestyle="--", linewidth=1)
            if labels and e.t - last > 1.5:
                last = e.t
                ax.text(e.t, 1.01, INJECTED[e.reason], transform=top, color="#555555",
                        fontsize=7, rotation=90, va="bottom", ha="center")  # fmt: skip
        elif e.reason in REACTED:
            color, text = REACTED[e.reason]
            ax.axvline(e.t, color=color, linestyle="-", linewidth=1.4, alpha=0.85)
            if labels:
                at = transforms.offset_copy(top, fig=ax.figure, x=next(shifts), units="points")
                ax.text(e.t, 0.98, f" {text}", transform=at, color=color, fontsize=7,
                        rotation=90, va="top", ha="right", gid="reaction")  # fmt: skip


def _legend(ax: Any) -> None:
    """The legend right of the axes, never on the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _quality(history: Any, events: list[Any], name: str) -> str:
    """Quality per track over the version lane (served version, pinned intervals), as PNG."""
    return _png(quality_figure(history, events, name))


def quality_figure(history: Any, events: list[Any], name: str) -> Any:
    """The figure of :func:`_quality` (a matplotlib Figure)."""
    fig, (ax, lane) = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True,
                                   gridspec_kw={"height_ratios": [4, 1], "hspace": 0.08})  # fmt: skip
    t = history.t
    for track in ("stable", "canary"):
        ax.plot(t, history.acc[track], color=QUALITY[track],
                label=f"{track}: monitor's rolling {name} (delayed labels)")  # fmt: skip
    ax.plot(t, history.served, color=QUALITY["served"], linewidth=1, alpha=0.8,
            label=f"served: {name} clients got each second")  # fmt: skip
    end = t[-1] if t else 0.0
    _marks(ax, events, end, labels=True)
    ax.set_ylabel(name)
    _legend(ax)
    _lane(lane, history, events, end)
    return fig


def _lane(ax: Any, history: Any, events: list[Any], end: float) -> None:
    """The version served, a step per second, with the pinned intervals shaded."""
    t, versions = history.t, getattr(history, "served_version", [])
    if versions:
        ax.step(t, versions, where="post", color=QUALITY["served"], linewidth=1.2,
                label="served version")  # fmt: skip
        pinned = getattr(history, "pinned", [])
        for i, (when, on) in enumerate(zip(t, pinned, strict=False)):
            if on:
                ax.axvspan(when, t[i + 1] if i + 1 < len(t) else when + 1.0, color=PIN,
                           alpha=0.25, linewidth=0)  # fmt: skip
        if any(pinned):
            ax.plot([], [], color=PIN, alpha=0.4, linewidth=6, label="pinned by a rollback")
        revisions = getattr(history, "stable_revision", [])
        for i, rev in enumerate(revisions):
            if rev and (i == 0 or rev != revisions[i - 1]):
                ax.text(t[i], 0.95, f" {rev[:6]}", transform=ax.get_xaxis_transform(),
                        fontsize=7, va="top", color="#333333")  # fmt: skip
    _marks(ax, events, end, labels=False)
    ax.set_ylabel("served v", fontsize=8)
    ax.set_xlabel("seconds")
    _legend(ax)


def _latency(history: Any, events: list[Any]) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for p, color in LATENCY.items():
        ax.plot(history.t, getattr(history, p), color=color, label=p)
    _marks(ax, events, history.t[-1] if history.t else 0.0, labels=False)
    ax.set_xlabel("seconds")
    ax.set_ylabel("request latency (ms)")
    _legend(ax)
    return _png(fig)


def two_lines_note(history: Any, events: list[Any], name: str) -> str:
    """Why the monitor's stable line and the served line can disagree, and where they did."""
    note = (f"The <b>stable</b> line is the monitor's rolling {name} over a window of delayed "
            f"labels: it judges versions and moves late. The <b>served</b> line is what "
            f"clients got in each second, against their true labels.")  # fmt: skip
    rollback = next((e.t for e in events if e.reason == "RolledBack"), None)
    if rollback is None:
        return note
    gaps = [abs(s - v) for when, s, v in zip(history.t, history.acc["stable"], history.served,
                                             strict=False)
            if rollback <= when < rollback + 15 and not math.isnan(s) and not math.isnan(v)]  # fmt: skip
    if gaps:
        note += (f" After the rollback at {rollback:.1f} s they differ by up to {max(gaps):.3f}: "
                 "the window still holds the labels of the poisoned versions while clients "
                 "already get the version rolled back to.")  # fmt: skip
    return note


def _cell(value: Any) -> str:
    """A summary value as a person reads it: numbers grouped, dicts as 'a 1 · b 2'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, dict):
        if not value:
            return "none"
        return " · ".join(
            f"{k} {len(v)} answers" if isinstance(v, list) else f"{k} {_cell(v)}"
            for k, v in value.items()
        )
    if isinstance(value, list):
        return f"{len(value)} entries"
    return str(value)


HIDDEN = ("events", "accuracy_timeline", "rmse_timeline")  # (plotted, or the event log)


def _rows(summary: dict[str, Any]) -> str:
    return "".join(
        f'<tr><td title="{html.escape(k)}">{html.escape(k.replace("_", " "))}</td>'
        f"<td>{html.escape(_cell(v))}</td></tr>"
        for k, v in summary.items()
        if k not in HIDDEN
    )


def write_report(path: Path, history: Any, events: list[Any], summary: dict[str, Any]) -> Path:
    name = "RMSE" if history.metric == "rmse" else history.metric
    quality = _quality(history, events, name)
    latency = _latency(history, events)
    told = "".join(f"<li>{html.escape(s)}</li>" for s in verdict(summary))
    log = "".join(
        f"<li{' class=r' if e['reason'] in REACTIONS else ''}>{e['t']:.1f}s "
        f"<b>{html.escape(e['reason'])}</b>: {html.escape(e['message'])}</li>"
        for e in summary.get("events", [])
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>tideline run: {html.escape(summary["model"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
td{{padding:2px 12px}}tr:nth-child(odd){{background:#f4f4f4}}
.verdict{{font-size:1.1em;line-height:1.5;border-left:4px solid #1f77b4;padding-left:1em}}
.note{{color:#444;font-size:.95em}}li.r{{color:#b22}}img{{max-width:100%}}</style>
</head><body><h1>tideline run: {html.escape(summary["model"])}</h1>
<ul class="verdict" id="verdict">{told}</ul>
<h2>Online {name} per track</h2>
<img alt="{name} per track, and the version served" src="data:image/png;base64,{quality}">
<p class="note">Grey, dashed: what the run did to the model (the poisoning shaded). Solid and
coloured: what tideline did about it. Under the plot: the version served, its pins shaded.
{two_lines_note(history, events, name)}</p>
<h2>Latency</h2><img alt="latency" src="data:image/png;base64,{latency}">
<h2>Summary</h2><table>{_rows(summary)}</table><h2>Events</h2><ol>{log}</ol></body></html>
"""
    path.write_text(page)
    return path
