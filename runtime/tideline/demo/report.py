"""The report of a ``tideline run``: one self-contained HTML page with plots.

Accuracy (regression: RMSE) over time per track (with the drift, rollback and promotion
moments marked) and request latency percentiles, as PNGs inlined in the
page, plus the summary and the event log.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

MARKS = {"DriftInjected": ("tab:red", "drift"), "RolledBack": ("tab:orange", "rollback"),
         "Promoted": ("tab:green", "promotion"), "CanaryStarted": ("tab:purple", "canary"),
         "RolloutAborted": ("black", "abort"), "PoisonInjected": ("tab:brown", "poisoning"),
         "PoisonEnded": ("tab:olive", "poisoning ends"), "Unpinned": ("tab:cyan", "unpin")}  # fmt: skip


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _marks(ax: Any, events: list[Any]) -> None:
    seen = set()
    for e in events:
        if e.reason in MARKS:
            color, label = MARKS[e.reason]
            ax.axvline(e.t, color=color, linestyle="--", linewidth=1,
                       label=label if label not in seen else None)  # fmt: skip
            seen.add(label)


def _plot(t: list[float], lines: list[tuple[str, list[float], str | None]], events: list[Any],
          ylabel: str, legend: str, height: float) -> str:  # fmt: skip
    """One time series plot (label, values, colour per line) with the events marked, as PNG."""
    fig, ax = plt.subplots(figsize=(10, height))
    for label, values, color in lines:
        ax.plot(t, values, label=label, color=color)
    _marks(ax, events)
    ax.set_xlabel("seconds")
    ax.set_ylabel(ylabel)
    ax.legend(loc=legend, fontsize=8)
    return _png(fig)


def write_report(path: Path, history: Any, events: list[Any], summary: dict[str, Any]) -> Path:
    # a classifier's accuracy, a regression's RMSE (lower is better: the legend goes up top)
    name = "RMSE" if history.metric == "rmse" else history.metric
    accuracy = _plot(
        history.t,
        [(f"{track} {name} (monitor, rolling)", history.acc[track], color)
         for track, color in (("stable", "tab:blue"), ("canary", "tab:purple"))]
        + [(f"served {name} (each second, true labels)", history.served, "tab:gray")],
        events, f"online {name} (delayed labels)",
        "upper left" if history.metric == "rmse" else "lower left", 3.6,
    )  # fmt: skip
    latency = _plot(
        history.t,
        [("p50", history.p50, None), ("p95", history.p95, None), ("p99", history.p99, None)],
        events, "request latency (ms)", "upper left", 3.0,
    )  # fmt: skip

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items()
                   if k not in ("events", "accuracy_timeline", "rmse_timeline"))  # fmt: skip
    log = "".join(f"<li>{e['t']:.1f}s {html.escape(e['reason'])}: {html.escape(e['message'])}</li>"
                  for e in summary.get("events", []))  # fmt: skip
    partial = (
        f"<p><b>Interrupted after {summary['seconds']:.1f}s of {summary['duration']:.0f}s</b>: "
        "what ran until then.</p>"
        if summary.get("interrupted")
        else ""
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>tideline run: {html.escape(summary["model"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 12px}}</style>
</head><body><h1>tideline run: {html.escape(summary["model"])}</h1>{partial}
<h2>Online {name} per track</h2><img alt="{name}" src="data:image/png;base64,{accuracy}">
<h2>Latency</h2><img alt="latency" src="data:image/png;base64,{latency}">
<h2>Summary</h2><table>{rows}</table><h2>Events</h2><ol>{log}</ol></body></html>
"""
    path.write_text(page)
    return path
