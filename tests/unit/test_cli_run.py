"""``tideline run``'s flags, read before anything starts, and how it ends (issue 37): a flag
that makes no sense is refused as argparse refuses one, naming it (exit 2); Ctrl-C or SIGTERM
ends the run with its summary and 128 + the signal's number; the run's folder goes."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tideline import cli
from tideline.demo import local

FRAUD = str(Path(__file__).resolve().parents[2] / "examples" / "fraud.yaml")


@pytest.fixture(autouse=True)
def signals_restored() -> Iterator[None]:
    """``tideline run`` takes SIGINT and SIGTERM: the test process gets its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The calls of ``run_local`` (none starts anything): their keyword arguments."""
    calls: list[dict[str, Any]] = []

    def run_local(manifest: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"samples_learned": 1}

    monkeypatch.setattr(local, "run_local", run_local)
    return calls


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--rate", "nan"], "argument --rate: must be a number of events per second > 0"),
        (["--rate", "inf/s"], "argument --rate: must be a number of events per second > 0"),
        (["--rate", "0"], "argument --rate: must be a number of events per second > 0"),
        (["--rate=-5/s"], "argument --rate: must be a number of events per second > 0"),
        (["--rate", "fast"], "argument --rate: must be a number of events per second"),
        (["--rate", "1e9/s"], "and at most 100000"),
        (["--duration", "0"], "argument --duration: must be a duration > 0 like 10s (got '0')"),
        (["--duration", "0s"], "argument --duration: must be a duration > 0"),
        (["--duration=-3s"], "argument --duration: must be a duration like 500ms"),
        (["--duration", "inf"], "argument --duration: must be a duration like 500ms"),
        (["--duration", "1" + "0" * 400], "argument --duration: must be a duration > 0"),
        (
            ["--poison-for", "0s", "--poison-at", "1s"],
            "argument --poison-for: must be a duration > 0",
        ),
        (["--history", "0s"], "argument --history: must be a duration > 0"),
        (["--drift-at", "nan"], "argument --drift-at: must be a duration like 500ms"),
        (
            ["--drift-at", "50s", "--duration", "3s"],
            "argument --drift-at: 50s is not before the end of the run (--duration 3s)",
        ),
        (
            ["--canary-at", "30s"],
            "argument --canary-at: 30s is not before the end of the run (--duration 30s)",
        ),
        (
            ["--poison-at", "1m", "--duration", "45s"],
            "argument --poison-at: 60s is not before the end of the run (--duration 45s)",
        ),
        (
            ["--poison-at", "25s"],
            "argument --poison-for: the poisoning from 25s for 10s lasts past the end of the run "
            "(--duration 30s)",
        ),
        (
            ["--poison-at", "5s", "--poison-for", "6s", "--duration", "10s"],
            "argument --poison-for: the poisoning from 5s for 6s lasts past the end of the run",
        ),
        (["--poison-for", "5s"], "argument --poison-for: needs --poison-at"),
        (
            ["--report", "/nonexistent/report.html"],
            "argument --report: the folder /nonexistent does not exist",
        ),
        (["--report", "/"], "argument --report: / is a folder, not a file"),
        (["--path", "/nonexistent"], "argument --path: /nonexistent is not a folder"),
        (["--source", "file"], "argument --source: invalid choice: 'file'"),
    ],
    ids=[
        "a rate that is not a number is refused (nan)",
        "an infinite rate is refused",
        "a rate of zero is refused",
        "a negative rate is refused",
        "a rate that is no number at all is refused",
        "a rate past what the simulator can send is refused",
        "a run of no time is refused",
        "a run of zero seconds is refused",
        "a negative duration is refused",
        "an infinite duration is refused",
        "a duration too long to be a number is refused",
        "a poisoning of no time is refused",
        "no history at all is refused",
        "a drift at no time is refused",
        "a drift after the end of the run is refused",
        "a canary at the very end of the run is refused",
        "a poisoning that starts after the end of the run is refused",
        "a poisoning of the default 10s that outlasts the run is refused",
        "a poisoning that outlasts the run is refused",
        "how long a poisoning lasts is refused without when it starts",
        "a report in a folder that does not exist is refused before the run",
        "a report that is a folder is refused",
        "an import folder that does not exist is refused",
        "a source other than redis or kafka is refused",
    ],
)
def test_a_flag_that_makes_no_sense_is_refused_naming_it_before_anything_starts(
    runs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["run", FRAUD, *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and said in err, err
    assert err.splitlines()[0].startswith("usage: tideline run"), err
    assert "tideline run: error: argument --" in err and "Traceback" not in err
    assert runs == [], "nothing started"


@pytest.mark.parametrize(
    ("flags", "given"),
    [
        (
            [
                "--duration",
                "90s",
                "--rate",
                "2000/s",
                "--drift-at",
                "20s",
                "--poison-at",
                "35s",
                "--canary-at",
                "60s",
                "--history",
                "24h",
            ],
            {
                "duration": 90.0,
                "rate": 2000.0,
                "drift_at": 20.0,
                "poison_at": 35.0,
                "poison_for": 10.0,
                "canary_at": 60.0,
                "keep": False,
                "report": Path("tideline-report.html"),
            },
        ),
        (
            [
                "--duration",
                "5s",
                "--rate",
                "500",
                "--poison-at",
                "0s",
                "--poison-for",
                "5s",
                "--report",
                "",
                "--keep",
            ],
            {
                "duration": 5.0,
                "rate": 500.0,
                "drift_at": None,
                "poison_at": 0.0,
                "poison_for": 5.0,
                "canary_at": None,
                "keep": True,
                "report": None,
            },
        ),
        ([], {"duration": 30.0, "rate": 2000.0, "poison_for": 10.0, "keep": False}),
    ],
    ids=[
        "make demo's flags are read as seconds and events per second",
        "a poisoning from the start to the very end, no report, the folder kept",
        "the defaults: 30 s at 2000 events per second",
    ],
)
def test_flags_that_make_sense_reach_the_run_as_numbers(
    runs: list[dict[str, Any]], flags: list[str], given: dict[str, Any]
) -> None:
    assert cli.main(["run", FRAUD, *flags]) == 0
    assert len(runs) == 1
    assert {k: runs[0][k] for k in given} == given


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["Ctrl-C ends the run with status 130", "SIGTERM ends the run with status 143"],
)
def test_a_signal_stops_the_run_which_still_ends_with_its_summary_and_status_128_plus_it(
    monkeypatch: pytest.MonkeyPatch, signum: int, status: int
) -> None:
    stopped: list[bool] = []

    def run_local(manifest: dict[str, Any], *, stop: threading.Event, **_: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signum)  # (handled in this, the main, thread)
        stopped.append(stop.wait(10))
        return {"samples_learned": 100}  # (what ran: its summary is printed by run_local)

    monkeypatch.setattr(local, "run_local", run_local)
    assert cli.main(["run", FRAUD, "--report", ""]) == status
    assert stopped == [True], "the signal stopped the run, not the process"


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept with --keep"])
def test_the_runs_folder_is_removed_after_an_error_unless_kept(keep: bool) -> None:
    with pytest.raises(RuntimeError), local._folder(keep) as workdir:
        (workdir / "logs").mkdir()
        raise RuntimeError("a process exited")
    assert workdir.exists() == keep
    shutil.rmtree(workdir, ignore_errors=True)


def test_a_run_stopped_before_anything_was_served_still_gets_a_report_saying_so(
    tmp_path: Path,
) -> None:
    from tideline.demo.report import write_report

    summary = {"model": "default/fraud", "seconds": 0.4, "duration": 30.0, "interrupted": True,
               "events": []}  # fmt: skip
    page = write_report(tmp_path / "report.html", local.History(), [], summary).read_text()
    assert "Interrupted after 0.4s of 30s" in page and page.count("<img") == 2


def test_a_regression_run_s_report_plots_its_rmse_not_an_empty_accuracy(tmp_path: Path) -> None:
    from tideline.demo.report import write_report

    history = local.History(metric="rmse")
    for t, (stable, served) in enumerate([(2.0, 1.9), (0.7, 0.6), (0.6, 0.58)]):
        history.t.append(float(t))
        history.acc["stable"].append(stable)
        history.acc["canary"].append(float("nan"))
        history.served.append(served)
        for p in (history.p50, history.p95, history.p99):
            p.append(1.0)
    summary = {"model": "default/demand", "seconds": 3.0, "duration": 3.0, "events": [],
               "quality": "rmse", "rmse_timeline": [1.9, 0.6, 0.58], "served_rmse_mean": 1.03}  # fmt: skip
    page = write_report(tmp_path / "report.html", history, [], summary).read_text()
    assert "Online RMSE per track" in page and "accuracy" not in page.lower()
    assert "served_rmse_mean" in page and "rmse_timeline" not in page


def test_the_summary_line_says_its_counts_in_words_not_as_python_dicts() -> None:
    import io

    out = io.StringIO()
    summary = {"interrupted": False, "predictions_served": 4590, "labels_sent": 4000,
               "predictions_by_track": {"stable": 4210, "canary": 380},
               "labels_left_for_the_default": 0, "samples_learned": 3900, "versions_published": 3,
               "concept_drift_events": 1, "rollbacks": 2, "rollbacks_by_reason": {"accuracy": 2},
               "promotions": 0, "aborts": 0, "restarts": {}, "quality": "accuracy",
               "served_accuracy_mean": 0.81, "phase": "Healthy", "events": [],
               "workdir_kept": False}  # fmt: skip
    local._LiveView(out, 30.0).summary(summary)
    line = out.getvalue().splitlines()[1]
    assert "(canary 380, stable 4,210)" in line and "2 rollbacks (accuracy 2)," in line
    assert "{" not in line and " ," not in line


def test_a_team_s_model_that_does_not_import_names_the_flag_that_finds_it() -> None:
    said = "next-action-monitor exited with 4:\n... (ImportFailed): ModuleNotFoundError: No module named 'shop_river'"  # fmt: skip
    assert "--path" in local._import_hint(said)
    assert local._import_hint("next-action-monitor exited with 3: cannot reach redis") == ""
