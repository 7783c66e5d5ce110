"""``kubectl tideline deadletters`` on a real Redis: the newest entries the learner wrote,
filtered by reason, oldest first; and an unreachable Redis is one line with the way round
and no password."""

from __future__ import annotations

import pytest
import redis

from tideline.contracts import DeadLetter, Keys
from tideline.ctl import deadletters
from tideline.ctl.deadletters import NoRedis, connect, read
from tideline.demo.embedded import free_port

KEYS = Keys("team", "fraud")


def dead_letter(i: int) -> DeadLetter:
    reason = "invalid label 'x'" if i % 3 == 0 else f"unmatched: no prediction p-{i}"
    return DeadLetter(KEYS.feedback, f"{i}-0", reason, {"id": f"p-{i}"})


@pytest.fixture
def letters(r: redis.Redis) -> list[DeadLetter]:
    """30 dead letters as the learner writes them, every third of them invalid."""
    written = [dead_letter(i) for i in range(30)]
    for d in written:
        r.xadd(KEYS.deadletter, d.encode())  # type: ignore[arg-type]
    return written


def test_the_newest_come_oldest_first(r: redis.Redis, letters: list[DeadLetter]) -> None:
    got = read(r, KEYS, 5)
    assert [d.entry for d in got] == [d.entry for d in letters[-5:]]
    assert got[0].fields == {"id": "p-25"} and got[0].at > 0
    assert len(read(r, KEYS, 100)) == 30


@pytest.mark.parametrize(
    ("reason", "entries"),
    [("invalid", ["21-0", "24-0", "27-0"]), ("unmatched: no prediction p-2", ["26-0", "28-0", "29-0"]),
     ("missing", [])],
    ids=["by kind", "by how the reason begins", "a reason none has"],
)  # fmt: skip
def test_a_reason_filters_before_the_count(
    r: redis.Redis, letters: list[DeadLetter], reason: str, entries: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(deadletters, "PAGE", 4)  # (several pages to find them)
    assert [d.entry for d in read(r, KEYS, 3, reason)] == entries


def test_a_model_without_dead_letters_has_none(r: redis.Redis) -> None:
    assert read(r, KEYS, 10) == []


def test_an_unreachable_redis_names_its_url_without_the_password_and_the_way_round() -> None:
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"  # (nothing listens there)
    with pytest.raises(NoRedis) as e:
        connect(url, "team")
    said = str(e.value)
    assert "s3cret" not in said and len(said.splitlines()) == 1
    assert said.startswith(f"cannot reach the model's Redis at redis://:***@127.0.0.1:{port}/0")
    assert "kubectl port-forward -n team svc/<the Redis Service>" in said
    assert "--redis-url redis://:PASSWORD@127.0.0.1:" in said


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:{port}/0?password=s3cret", "redis://:s3cret@127.0.0.1:notaport/0",
     "redis://:s3cret@127.0.0.1:70000/0"],
    ids=["a password in the query", "a port that is no number", "a port out of range"],
)  # fmt: skip
def test_a_url_that_cannot_be_used_is_one_line_without_its_password(url: str) -> None:
    url = url.format(port=free_port())
    with pytest.raises(NoRedis) as e:
        connect(url, "team")
    said = str(e.value)
    assert "s3cret" not in said and len(said.splitlines()) == 1, said


def test_a_redis_that_cannot_be_read_is_one_line_not_a_traceback(r: redis.Redis) -> None:
    r.set(KEYS.deadletter, "not a stream")
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
    with pytest.raises(
        NoRedis, match="cannot read the dead letters from redis://127.0.0.1:.*WRONGTYPE"
    ):
        deadletters.letters(url, "team", KEYS, 5)
