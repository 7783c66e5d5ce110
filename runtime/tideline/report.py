"""The report of a ``tideline run``: one self-contained HTML page with plots.

Accuracy over time per track (with the drift, rollback and promotion
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
         "RolloutAborted": ("black", "abort")}  # fmt: skip


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


def write_report(path: Path, history: Any, events: list[Any], summary: dict[str, Any],
                 drift_at: float | None) -> Path:  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for track, color in (("stable", "tab:blue"), ("canary", "tab:purple")):
        ax.plot(history.t, history.acc[track], label=f"{track} accuracy", color=color)
    _marks(ax, events)
    ax.set_xlabel("seconds")
    ax.set_ylabel("online accuracy (delayed labels)")
    ax.legend(loc="lower left", fontsize=8)
    accuracy = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 3.0))
    for name, series in (("p50", history.p50), ("p95", history.p95), ("p99", history.p99)):
        ax.plot(history.t, series, label=name)
    _marks(ax, events)
    ax.set_xlabel("seconds")
    ax.set_ylabel("request latency (ms)")
    ax.legend(loc="upper left", fontsize=8)
    latency = _png(fig)

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items() if k != "events")  # fmt: skip
    log = "".join(f"<li>{html.escape(e)}</li>" for e in summary.get("events", []))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>tideline run: {html.escape(summary["model"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 12px}}</style>
</head><body><h1>tideline run: {html.escape(summary["model"])}</h1>
<h2>Online accuracy per track</h2><img alt="accuracy" src="data:image/png;base64,{accuracy}">
<h2>Latency</h2><img alt="latency" src="data:image/png;base64,{latency}">
<h2>Summary</h2><table>{rows}</table><h2>Events</h2><ol>{log}</ol></body></html>
"""
    path.write_text(page)
    return path
