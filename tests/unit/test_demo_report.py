"""The report's page as text (issue 37): verdict on top, plain rows, markers apart from lines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tideline.demo import local
from tideline.demo.report import LATENCY, QUALITY, REACTED, _cell, write_report
from tideline.demo.verdict import verdict

from .test_demo_verdict import BINARY


def synthetic(summary: dict[str, Any]) -> tuple[local.History, list[local.Event]]:
    """A History and events as a 90 s run would record them: a drift, a rollback with its pin,
    a stopped revision and a promoted one (shared with the browser test)."""
    h = local.History()
    for t, served in enumerate(summary["accuracy_timeline"]):
        h.t.append(float(t))
        h.acc["stable"].append(served - (0.08 if 36 <= t < 48 else 0.0))  # the window lags
        h.acc["canary"].append(0.9 if 71 <= t < 77 else math.nan)
        h.served.append(served)
        for i, p in enumerate((h.p50, h.p95, h.p99)):
            p.append(1.0 + i)
        h.served_version.append(8.0 if 36 <= t < 52 else float(min(t // 2, 12)))
        h.pinned.append(36 <= t < 52)
        h.stable_revision.append("a1b2c3d4" if t < 77 else "e5f6a7b8")
    events = [local.Event(e["t"], e["type"], e["reason"], e["message"]) for e in summary["events"]]
    return h, events


def test_the_page_opens_with_the_verdict_and_explains_the_two_quality_lines(tmp_path: Path) -> None:
    history, events = synthetic(BINARY)
    page = write_report(tmp_path / "report.html", history, events, BINARY).read_text()
    first = verdict(BINARY)[0].replace("'", "&#x27;")
    assert page.index(first) < page.index("<img"), "the verdict comes before the plots"
    assert "After the rollback at 36.2 s they differ by up to 0.080" in page
    assert page.count("<img") == 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"stable": 131150, "canary": 6818}, "stable 131,150 · canary 6,818"),
        ({}, "none"),
        ({"feedback": [{"error": "x"}, {"error": "y"}]}, "feedback 2 answers"),
        (0.912345, "0.9123"),
        (12345.6, "12,346"),
        (None, "-"),
        (True, "yes"),
        ([1, 2, 3], "3 entries"),
    ],
    ids=[
        "a count per track reads as words and grouped numbers",
        "an empty dict says none",
        "error answers are counted, not printed",
        "a mean is rounded",
        "a large float is grouped",
        "nothing is a dash",
        "a flag is yes or no",
        "a list is summarised",
    ],
)  # fmt: skip
def test_a_summary_value_is_a_plain_cell(value: Any, shown: str) -> None:
    assert _cell(value) == shown


def test_the_summary_table_has_no_python_reprs_and_no_timelines(tmp_path: Path) -> None:
    summary = {**BINARY, "predictions_by_track": {"stable": 131150, "canary": 6818}}
    page = write_report(tmp_path / "report.html", *synthetic(summary), summary).read_text()
    assert "stable 131,150 · canary 6,818" in page
    assert "{&#x27;" not in page and "{'" not in page and "[0.9" not in page


def test_no_marker_wears_a_line_s_colour() -> None:
    lines = set(QUALITY.values()) | set(LATENCY.values())
    assert not lines & {color for color, _ in REACTED.values()}


def _reaction_labels(events: list[local.Event]) -> list[Any]:
    """The reaction labels of the quality plot, as drawn: (text, left, right) in pixels."""
    from tideline.demo.report import quality_figure

    history, _ = synthetic(BINARY)
    fig = quality_figure(history, events, "accuracy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text().strip(), t.get_window_extent(renderer))
             for ax in fig.axes for t in ax.texts if t.get_gid() == "reaction"]  # fmt: skip
    import matplotlib.pyplot as plt

    plt.close(fig)
    return [(text, box.x0, box.x1) for text, box in boxes]


def test_reaction_labels_within_a_second_stand_side_by_side_not_on_each_other() -> None:
    """A drift noticed, the rollback it caused and an abort in the same second: three labels,
    none over another; a reaction with room keeps its label by its line."""
    events = [local.Event(20.0, "Normal", "DriftInjected", ""),
              local.Event(21.3, "Warning", "ConceptDrift", ""),
              local.Event(21.5, "Warning", "RolledBack", "v12 -> v8"),
              local.Event(21.9, "Warning", "RolloutAborted", ""),
              local.Event(60.0, "Normal", "Promoted", "")]  # fmt: skip
    labels = _reaction_labels(events)
    assert [text for text, *_ in labels] == ["drift noticed", "rolled back", "aborted", "promoted"]
    for (_, _, right), (text, left, _) in zip(labels, labels[1:], strict=False):
        assert left >= right - 0.5, f"{text!r} overlaps the label before it"
    alone = _reaction_labels([local.Event(60.0, "Normal", "Promoted", "")])
    assert alone[0][1:] == labels[-1][1:], "a label with room stays where it was"
