"""A team's model that cannot be loaded: the pods' processes say why - in Redis for the
operator, in the termination message for ``kubectl describe``, in the log - and exit 4."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
import yaml

from tests.helpers import manifest
from tideline.algorithms.external import ModelLoadError
from tideline.contracts import Keys, ModelFault
from tideline.pods import faults
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

ROOT = Path(__file__).parents[2]
KEY = "k" * 32  # a signing key: a team's own model is refused without one
CASES = [
    ("teams.model:Scorer", {}, "ImportFailed", "ModuleNotFoundError: No module named 'teams'"),
    ("tests.models.teams:NoSave", {}, "MissingMethod",
     "tests.models.teams:NoSave has no save (see tideline.model)"),
    ("tests.models.teams:Mean", {"depth": 3}, "BadParams",
     "TypeError: Mean.__init__() got an unexpected keyword argument 'depth'"),
]  # fmt: skip
IDS = ["a class whose module does not exist", "a class without save", "params it refuses"]


def _custom(ref: str, params: dict) -> dict:
    doc = manifest()
    doc["spec"]["model"].update(algorithm="custom", custom={"class": ref, "params": params})
    return doc


def _tideline(*args: str, termination_log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT}",
           "TIDELINE_SIGNING_KEY": KEY, faults.TERMINATION_LOG_ENV: str(termination_log)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "tideline.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)  # fmt: skip


@pytest.mark.parametrize(("ref", "params", "reason", "message"), CASES, ids=IDS)
def test_a_learner_that_cannot_load_its_model_says_why_and_exits_4(
    redis_server, r, tmp_path: Path, ref: str, params: dict, reason: str, message: str
) -> None:
    doc = _custom(ref, params)
    model = parse(doc)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    log = tmp_path / "termination-log"
    out = _tideline("learner", "--config", str(path), "--redis", redis_server.url,
                    termination_log=log)  # fmt: skip
    assert out.returncode == faults.EXIT_STATUS == 4, out.stderr
    said = f"learner of revision {model.revision}: {message}"
    assert f"the model cannot be loaded ({reason}): {said}" in out.stderr
    assert "Traceback" not in out.stderr
    assert log.read_text() == f"{reason}: {message}\n"
    keys = Keys(model.namespace, model.name)
    stored = r.hgetall(keys.faults(model.revision))
    assert list(stored) == [b"learner"]
    fault = ModelFault.decode(stored[b"learner"])
    assert fault is not None
    assert (fault.reason, fault.message, fault.component, fault.revision) == (
        reason, message, "learner", model.revision
    )  # fmt: skip
    assert set(orjson.loads(stored[b"learner"])) == {"reason", "message", "component", "revision",
                                                     "at"}  # fmt: skip
    # the crash loop's next start reports the same fault, first seen when it was
    again = _tideline("learner", "--config", str(path), "--redis", redis_server.url,
                      termination_log=log)  # fmt: skip
    assert again.returncode == 4
    assert ModelFault.decode(r.hget(keys.faults(model.revision), "learner")) == fault


@pytest.mark.parametrize("component", ["server", "monitor"])
def test_the_server_and_the_monitor_find_out_at_start_too(
    redis_server, r, tmp_path: Path, component: str
) -> None:
    """They load versions only later: at start they build the model once, to say it now."""
    ref, params, reason, message = CASES[0]
    doc = _custom(ref, params)
    model = parse(doc)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    log = tmp_path / "termination-log"
    out = _tideline(component, "--config", str(path), "--redis", redis_server.url, "--port", "0",
                    termination_log=log)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert log.read_text() == f"{reason}: {message}\n"
    fault = ModelFault.decode(
        r.hget(Keys(model.namespace, model.name).faults(model.revision), component)
    )
    assert fault is not None and (fault.component, fault.reason) == (component, reason)


def test_a_redis_that_cannot_be_told_still_gets_the_termination_message_and_exit_4(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_custom("teams.model:Scorer", {})))
    log = tmp_path / "termination-log"
    out = _tideline("server", "--config", str(path), "--redis", "redis://127.0.0.1:1/0",
                    termination_log=log)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert log.read_text() == "ImportFailed: ModuleNotFoundError: No module named 'teams'\n"


def test_a_learner_that_loads_its_model_clears_its_fault_and_only_its_own(
    r, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDELINE_SIGNING_KEY", KEY)
    model = parse(_custom("tests.models.teams:Mean", {"prior": 0.2}))
    keys = Keys(model.namespace, model.name)
    for component in ("learner", "monitor"):  # as a broken image left them
        r.hset(keys.faults(model.revision), component,
               ModelFault("ImportFailed", "x", component, model.revision, 1.0).encode())  # fmt: skip
    proc = faults.loaded(r, keys, "learner", model.revision, lambda: LearnerProcess(model, r))
    assert isinstance(proc, LearnerProcess)
    assert list(r.hgetall(keys.faults(model.revision))) == [b"monitor"]


def test_an_unwritable_termination_log_is_ignored(tmp_path: Path) -> None:
    assert faults.termination_message("x", str(tmp_path / "no" / "such" / "dir")) is False
    assert faults.termination_message("two\nlines", str(tmp_path / "t")) is True
    assert (tmp_path / "t").read_text() == "two lines\n"


def test_a_server_reports_a_version_it_cannot_load_once_and_clears_it_when_one_loads(
    redis_server, r
) -> None:
    """What a running server does with a version published after its start that it cannot
    load (it keeps serving what it holds): :class:`tideline.pods.faults.VersionFaults`."""
    keys = Keys("test", "m")
    clock = iter([50.0, 60.0, 70.0])
    vf = faults.VersionFaults(keys, clock=lambda: next(clock))
    error = ModelLoadError("BadParams", "TypeError: bad depth")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            assert not vf.failed_before("rev", 7)
            await vf.failed(client, "rev", 7, error)
            await vf.failed(client, "rev", 7, error)  # (not reported, nor timed, twice)
            assert vf.failed_before("rev", 7)
            assert ModelFault.decode(r.hget(keys.faults("rev"), "server")) == ModelFault(
                "BadParams", "TypeError: bad depth", "server", "rev", 50.0
            )
            await vf.failed(client, "rev", 8, error)  # the same fault: first seen at 50
            assert ModelFault.decode(r.hget(keys.faults("rev"), "server")).at == 50.0  # type: ignore[union-attr]
            await vf.loaded(client, "other")  # another revision's load clears nothing
            assert r.hexists(keys.faults("rev"), "server")
            await vf.loaded(client, "rev")
            assert not r.exists(keys.faults("rev"))
        finally:
            await client.aclose()

    asyncio.run(scenario())
