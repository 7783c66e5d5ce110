"""The log's size part of the monitor without Redis (:class:`tideline.monitoring.capacity.LogSize`): when
the log is measured, the logging rate it reads, and what the ``LogCapacity`` condition is told
- fed what ``MEMORY USAGE``, ``XLEN`` and ``INFO memory`` would have said."""

from __future__ import annotations

from typing import Any

import pytest

from tideline.monitoring.capacity import LogSize

INTERVAL, WINDOW = 10.0, 600.0
MB = 1_000_000


def _size(entries: int = 10, rows: int = 640) -> LogSize:
    size = LogSize(INTERVAL, WINDOW)
    size.entries, size.rows = entries, rows  # (64 predictions an entry read)
    return size


@pytest.mark.parametrize(
    ("read", "sizes", "lengths", "info", "expected"),
    [
        ((10, 640), [3_200_000, 20_000], [500], {"used_memory": 10 * MB, "maxmemory": 100 * MB},
         {"held": 3_220_000.0, "used": 10 * MB, "limit": 100 * MB, "limit_source": "maxmemory",
          "bytes_per_prediction": 100.6, "need": 3_018_000, "fits": True}),
        ((10, 640), [3_200_000, 20_000], [500],
         {"used_memory": 10 * MB, "total_system_memory": 64 * MB},
         {"limit": 64 * MB, "limit_source": "system", "fits": True}),
        ((10, 640), [3_200_000, 20_000], [500], {"used_memory": 10 * MB},
         {"limit": None, "limit_source": "system", "need": 3_018_000, "fits": None}),
        ((10, 640), [3_200_000, 20_000], [500], {"used_memory": 10 * MB, "maxmemory": 10 * MB},
         {"need": 3_018_000, "fits": False}),
        ((0, 0), [None, None], [0], {"used_memory": 10 * MB, "maxmemory": 100 * MB},
         {"held": 0.0, "bytes_per_prediction": None, "need": None, "fits": None}),
        ((10, 640), [3_200_000, None, 20_000], [300, 200], {"maxmemory": 100 * MB},
         {"held": 3_220_000.0, "bytes_per_prediction": 100.6}),
    ],
    ids=[
        "a log with a maxmemory: its need at this rate beside the limit, and it fits",
        "no maxmemory: the node's memory is the limit",
        "no limit said at all: the need, and no verdict",
        "a need past 90 % of the limit with what else Redis holds: it does not fit",
        "nothing logged yet: what is held, and no need until a prediction is",
        "a stream gone since it was listed: counted as nothing, the others summed",
    ],
)  # fmt: skip
def test_a_measurement_says_what_the_log_needs_and_whether_it_fits(
    read: tuple[int, int],
    sizes: list[int | None],
    lengths: list[int],
    info: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    size = _size(*read)
    assert size.due(now=100.0, rate=50.0)
    cap = size.measured(100.0, 0.01, sizes, lengths, info)
    assert {k: getattr(cap, k) for k in expected} == expected
    assert (cap.rate, cap.window) == (50.0, WINDOW)
    assert size.capacity is cap, "the summary reads the last measurement"


def test_an_empty_log_keeps_the_bytes_per_prediction_measured_last() -> None:
    size = _size()
    size.due(0.0, 50.0)
    size.measured(0.0, 0.01, [3_200_000], [500], {"maxmemory": 100 * MB})
    size.due(INTERVAL, 0.0)
    cap = size.measured(INTERVAL, 0.01, [500], [0], {"maxmemory": 100 * MB})
    assert cap.bytes_per_prediction == 100.0
    assert cap.held == 500.0


@pytest.mark.parametrize(
    ("took", "due"),
    [(0.01, [(5.0, False), (9.9, False), (10.0, True)]),
     (0.5, [(10.0, False), (49.9, False), (50.0, True)])],
    ids=["a quick measurement: the next an analysis interval later",
         "a slow one (0.5 s): the next when it is 1 % of the time since"],
)  # fmt: skip
def test_the_log_is_measured_an_interval_apart_and_never_more_than_1_percent_of_the_time(
    took: float, due: list[tuple[float, bool]]
) -> None:
    size = _size()
    assert size.due(0.0, 1.0), "the first look measures"
    size.measured(0.0, took, [1000], [10], {})
    assert [(now, size.due(now, 1.0)) for now, _ in due] == due


def test_the_logging_rate_is_smoothed_over_about_a_minute() -> None:
    size = _size()
    size.due(0.0, 60.0)
    assert size.rate == 60.0, "the first rate is taken as it is"
    size.due(1.0, 0.0)
    assert size.rate == pytest.approx(60.0 * (1 - INTERVAL / 60.0)), "a sixth of the way"
    fast = LogSize(interval=120.0, window=WINDOW)
    fast.due(0.0, 60.0)
    fast.due(1.0, 0.0)
    assert fast.rate == 0.0, "an interval past a minute: the rate of the last one"


def test_the_history_counts_in_what_redis_must_hold_at_the_label_rate_for_its_window() -> None:
    size = LogSize(INTERVAL, WINDOW, history=86400.0)
    size.entries, size.rows = 10, 640
    size.history_entries, size.history_rows = 100, 800  # (8 joined rows a record written)
    size.due(now=100.0, rate=50.0, label_rate=5.0)
    info = {"used_memory": 60 * MB, "maxmemory": 100 * MB}
    cap = size.measured(100.0, took=0.01, sizes=[3_200_000, 20_000], lengths=[500], info=info,
                        history=(40 * MB, 50_000))  # fmt: skip
    # 50,000 records of 8 rows in 40 MB: 100 B a sample; 5 labels/s for a day: 43.2 MB
    assert (cap.bytes_per_sample, cap.history_need, cap.history_held) == (100.0, 43_200_000,
                                                                        40 * MB)  # fmt: skip
    assert cap.fits is True  # 60 - 3.22 - 40 + 3.02 + 43.2 = 63 MB of 90
    assert (
        "5 labels/s x 86,400 s x 100 B = 41.2 MiB of history (holds 38.1 MiB now)" in cap.summary()
    )
    cap = size.measured(200.0, took=0.01, sizes=[3_200_000, 20_000], lengths=[500],
                        info={**info, "maxmemory": 60 * MB}, history=(40 * MB, 50_000))  # fmt: skip
    assert cap.fits is False  # the same 63 MB over 54
