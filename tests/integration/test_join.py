"""The label join against a real redis-server: found by id, bounded, first label wins."""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.helpers import LoggedRequest, on_one_redis_and_a_cluster
from tideline.contracts import Keys
from tideline.pods.join import LogJoin
from tideline.store import node_pipeline

pytestmark = pytest.mark.integration

KEYS = Keys("test", "fraud")


def _join(r, clock=None, **kw) -> LogJoin:
    return LogJoin(r, KEYS, 60.0, "reader", clock=clock or time.time, **kw)


def test_labels_for_the_rows_of_one_request_read_its_entry_once(r) -> None:
    req = LoggedRequest([{"amount": float(i)} for i in range(64)]).write(r, KEYS)
    j = _join(r)
    for i, pid in enumerate(req.ids):
        j.add(f"f{i}", pid, i % 2, time.time())
    [joined] = j.resolve()  # one request: its labels together, in the order they came
    assert [x["amount"] for x in joined.features()] == [float(i) for i in range(64)]
    assert joined.feedback_ids == [f"f{i}" for i in range(64)] and joined.labels[:3] == [0, 1, 0]
    assert joined.ts == pytest.approx(req.ts, abs=1e-3)
    assert j.lookups == 1 and j.take_rejected() == []


def test_a_label_waits_for_its_prediction_with_growing_delays_and_gives_up_after_the_window(
    r,
) -> None:
    now = [time.time()]
    j = _join(r, clock=lambda: now[0])
    unwritten = LoggedRequest([{"amount": 1.0}], ts=now[0])  # its server is listed, not its entry
    r.zadd(KEYS.logs, {unwritten.instance: now[0]})
    j.add("f1", unwritten.ids[0], 1, now[0])
    start, lookups = now[0], []
    while j.waiting or not lookups:
        before = _calls(r, "xrange")
        assert j.resolve() == []
        if _calls(r, "xrange") > before:
            lookups.append(now[0] - start)
        now[0] += 0.1
    [rej] = j.take_rejected()
    assert (rej.feedback_id, rej.reason) == ("f1", "unmatched")
    assert 60.0 <= lookups[-1] <= 60.2  # the whole window, no more
    gaps = [b - a for a, b in zip(lookups, lookups[1:-1], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] == pytest.approx(5.0, abs=0.15)  # growing, capped
    late = LoggedRequest([{"amount": 1.0}]).write(r, KEYS)
    j.add("f2", late.ids[0], 1, time.time())  # logged just now: found at once
    assert [x.feedback_ids for x in j.resolve()] == [["f2"]]


def test_labels_waiting_are_capped_in_count_and_bytes_and_the_overflow_is_unmatched(r) -> None:
    # a flood of labels for predictions a listed server has not logged (yet)
    unwritten = LoggedRequest([{"amount": 1.0}] * 300)
    r.zadd(KEYS.logs, {unwritten.instance: time.time()})
    j = _join(r, max_waiting=100, max_waiting_bytes=1 << 20)
    for i, pid in enumerate(unwritten.ids):
        j.add(f"f{i}", pid, 1.0, time.time())
    assert j.resolve() == []
    assert j.waiting == 100 and j.overflow == 200
    rejected = j.take_rejected()
    assert len(rejected) == 200 and {r.reason.split(":")[0] for r in rejected} == {"unmatched"}
    small = _join(r, max_waiting_bytes=2000)
    for i in range(20):
        small.add("x" * 200, unwritten.ids[i], 1.0, time.time())
    small.resolve()
    assert small.waiting == 4 and small.overflow == 16  # bounded in bytes too


def test_a_prediction_takes_one_label_held_until_committed_then_in_redis(r) -> None:
    req = LoggedRequest([{"amount": 1.0}, {"amount": 2.0}]).write(r, KEYS)
    j = _join(r)
    j.add("f1", req.ids[0], 1, time.time())
    j.add("f2", req.ids[0], 0, time.time())  # in the same batch
    [first] = j.resolve()
    assert first.feedback_ids == ["f1"]
    j.add("f3", req.ids[0], 0, time.time())  # held in memory, not committed yet
    assert j.resolve() == []
    pipe = r.pipeline(transaction=True)
    j.commit(pipe, first.marks)
    pipe.execute()
    j.committed(first.marks)
    other = _join(r)  # another process of the same reader: the mark is in Redis
    other.add("f4", req.ids[0], 0, time.time())
    other.add("f5", req.ids[1], 0, time.time())
    assert [x.feedback_ids for x in other.resolve()] == [["f5"]]
    assert [x.reason for x in j.take_rejected() + other.take_rejected()] == ["duplicate"] * 3
    third = LogJoin(r, KEYS, 60.0, "another reader")  # each reader takes each label once
    third.add("f6", req.ids[0], 0, time.time())
    assert len(third.resolve()) == 1


def test_marks_committed_by_slice_are_the_same_keys_and_expiries_as_marks_committed_one_by_one(r) -> None:  # fmt: skip
    """A catch-up commits its marks grouped by slice (one request's rows share one): the same
    sets, members and expiries as :meth:`LogJoin.commit` writes."""
    now = time.time()
    one, grouped = _join(r), LogJoin(r, KEYS, 60.0, "grouped reader")
    stamps = [(now - 100.0, [f"s a-{i} 0 {i}" for i in range(3)]), (now, ["s b-0 0 0"])]
    pipe = r.pipeline(transaction=False)
    one.commit(pipe, [m for ts, names in stamps for m in one.marks_of(ts, names)])
    by_slice: dict[int, list[str]] = {}
    for ts, names in stamps:
        by_slice.setdefault(grouped.slice_of(ts), []).extend(names)
    grouped.commit_slices(pipe, by_slice)
    pipe.execute()

    def written(reader: str) -> dict[str, tuple[set[bytes], int]]:
        found = r.keys(KEYS.taken(reader, "*"))
        return {k.decode().split(":")[-1]: (r.smembers(k), r.ttl(k)) for k in found}

    got, grouped_got = written("reader"), written("grouped reader")
    assert {k: m for k, (m, _) in got.items()} == {k: m for k, (m, _) in grouped_got.items()}
    assert len(got) == 2 and all(abs(t - grouped_got[k][1]) <= 1 for k, (_, t) in got.items())


@on_one_redis_and_a_cluster
def test_marks_committed_packed_are_the_same_and_what_is_no_mark_is_passed_over(r) -> None:
    """A catch-up commits a record's marks as it was packed (a MessagePack array of keys),
    unpacked in Redis by a script: the same sets, members and expiries as
    :meth:`LogJoin.commit` writes, past a batch of the script's; an item that is not a
    string, or an array Redis cannot unpack (a record written by hand), adds nothing and
    fails nothing."""
    now = time.time()
    one, packed = _join(r), LogJoin(r, KEYS, 60.0, "packed reader")
    many = [f"s c-{i} 0 {i}" for i in range(2500)]
    stamps = [(now - 100.0, [f"s a-{i} 0 {i}" for i in range(3)]), (now, ["s b-0 0 0", *many])]
    pipe = node_pipeline(r, KEYS.history)
    one.commit(pipe, [m for ts, names in stamps for m in one.marks_of(ts, names)])
    by_slice: dict[int, list[bytes]] = {}
    for ts, names in stamps:  # (the junk's strings are the slice's own marks)
        junk = [[1, None, b"bytes", names[0]], [msgspec.msgpack.Ext(1, b"x")], {"s z": 1},
                [7, names[0]]]  # fmt: skip
        by_slice.setdefault(packed.slice_of(ts), []).extend(
            [*map(msgspec.msgpack.encode, [*junk, names[:1], names[1:]]), b"\xc1"]
        )
    packed.commit_packed(pipe, by_slice)
    pipe.execute()

    def written(reader: str) -> dict[str, tuple[set[bytes], int]]:
        found = [k for k in r.scan_iter(KEYS.taken(reader, "*"))]
        return {k.decode().split(":")[-1]: (r.smembers(k), r.ttl(k)) for k in found}

    got, packed_got = written("reader"), written("packed reader")
    assert {k: m for k, (m, _) in got.items()} == {k: m for k, (m, _) in packed_got.items()}
    assert sum(len(m) for m, _ in got.values()) == 2504
    assert len(got) == 2 and all(abs(t - packed_got[k][1]) <= 1 for k, (_, t) in got.items())


def test_a_client_id_given_twice_joins_its_newest_prediction(r) -> None:
    LoggedRequest([{"amount": 1.0}], ids=["order-7"], ts=time.time() - 400).write(r, KEYS)
    LoggedRequest([{"amount": 2.0}], ids=["order-7"]).write(r, KEYS)
    j = LogJoin(r, KEYS, 1800.0, "reader")
    j.add("f1", "order-7", 1, time.time())
    [x] = j.resolve()
    assert x.features() == [{"amount": 2.0}]


def _calls(r, command: str) -> int:
    return r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_in_a_window_of_days_a_client_id_is_looked_for_back_in_time_only_as_far_as_needed(
    r,
) -> None:
    LoggedRequest([{"amount": 1.0}], ids=["day-old"], ts=time.time() - 30 * 3600).write(r, KEYS)
    LoggedRequest([{"amount": 2.0}], ids=["fresh"]).write(r, KEYS)
    j = LogJoin(r, KEYS, 2 * 86400.0, "reader")
    j.add("f1", "fresh", 0, time.time())
    before = _calls(r, "hmget")
    assert [x.features() for x in j.resolve()] == [[{"amount": 2.0}]]
    assert _calls(r, "hmget") - before == 12  # the newest hour of buckets, no more
    j.add("f2", "day-old", 1, time.time())
    before = _calls(r, "hmget")
    assert [x.features() for x in j.resolve()] == [[{"amount": 1.0}]]
    assert 30 * 12 <= _calls(r, "hmget") - before <= 32 * 12  # 30 hours back, of 48


def test_labels_of_interleaved_requests_are_joined_per_request_each_entry_read_once(r) -> None:
    reqs = [LoggedRequest([{"amount": float(10 * k + i)} for i in range(4)]).write(r, KEYS)
            for k in range(3)]  # fmt: skip
    j = _join(r)
    for i in (3, 0, 2):
        for k, req in enumerate(reqs):
            j.add(f"f{k}.{i}", req.ids[i], 1, time.time())
    j.add("g", reqs[1].ids[0][:-1] + "9", 1, time.time())  # no row 9 in that request
    j.add("h", reqs[2].ids[3], 0, time.time())  # the second label of a row in the same read
    j.add("u", reqs[0].ids[0][:-1] + "\u0663", 1, time.time())  # not an ASCII row number
    joined = j.resolve()
    assert [x.features() for x in joined] == [
        [{"amount": 10.0 * k + i} for i in (3, 0, 2)] for k in range(3)
    ]
    assert [x.feedback_ids for x in joined][1] == ["f1.3", "f1.0", "f1.2"]
    assert j.lookups == 3
    reasons = {x.feedback_id: x.reason for x in j.take_rejected()}
    assert reasons == {"g": "unmatched: no such row in the request", "h": "duplicate",
                       "u": "unmatched: no prediction has this id"}  # fmt: skip
    assert j.waiting == 0  # "u" is no generated id, and no client's id in the index either
