"""Versions no one can forge (tideline.signing): a server, the monitor and the learner
with the model's key, against a real redis-server, given blobs written by hand with a
wrong signature or none. None of them is ever decoded; each is counted; what was
served goes on being served."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from tests.helpers import (
    FRAUD_FEATURES,
    FRAUD_ROWS,
    Served,
    fraud_model,
    learn_until,
    manifest,
    push_samples,
    wait_until,
)
from tideline import codec, signing
from tideline.algorithms import make_learner
from tideline.contracts import AWAIT_START_ENV, Keys, Pointers
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.pods.monitor import Monitor
from tideline.signing import Sealing, Signer
from tideline.spec import parse
from tideline.store import ModelStore, Reference, learner_to_blob

pytestmark = pytest.mark.integration

KEY = "k3y-of-the-model-made-by-the-operator-43chr"
PREDICT = "/v1/models/fraud:predict"


@pytest.fixture(autouse=True)
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of these tests has the model's key, as the operator's pods do."""
    monkeypatch.setenv(signing.KEY_ENV, KEY)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every blob :func:`tideline.codec.decode` is given, in any module."""
    seen: list[bytes] = []
    real = codec.decode

    def spy(blob: bytes):  # type: ignore[no-untyped-def]
        seen.append(bytes(blob))
        return real(blob)

    monkeypatch.setattr(codec, "decode", spy)
    return seen


def _by(sealing: Sealing, r) -> ModelStore:  # type: ignore[no-untyped-def]
    """A store that writes what someone else would: its blobs sealed by ``sealing``."""
    return ModelStore(r, "test", "fraud", sealing)


WRONG_KEY = Sealing(Signer(b"not the model's key, long enough", "test/fraud"))
OTHER_MODEL = Sealing(Signer(KEY.encode(), "test/another-model"))  # the same key, by hand
UNSIGNED = Sealing(None)

FORGERIES = [WRONG_KEY, OTHER_MODEL, UNSIGNED]
FORGERY_IDS = [
    "a version signed with another key",
    "a version of another model copied under this one's keys",
    "a version written unsigned",
]


def _forged_count(registry) -> float:  # type: ignore[no-untyped-def]
    return registry.get_sample_value("tideline_forged_blobs_total", {"component": "server"}) or 0


@pytest.mark.parametrize("forger", FORGERIES, ids=FORGERY_IDS)
def test_a_server_keeps_its_version_when_a_forged_one_is_served_and_takes_the_next_signed_one(
    r, redis_server, decoded: list[bytes], forger: Sealing
) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    store.publish(rev, 1, fraud_model(seed=1))
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        before = c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()
        assert before["model_version"] == 1
        # written by hand: moves the pointers and notifies the servers, as a publish does
        blob, _ = _by(forger, r).publish(rev, 2, fraud_model(seed=2))
        inner = blob[signing.HEADER_BYTES :] if blob.startswith(signing.MAGIC) else blob
        assert store.pointers(rev).served == 2
        wait_until(lambda: _forged_count(s.dp.metrics.registry) == 1)
        time.sleep(0.6)  # three polls more
        after = c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()
        assert after["model_version"] == 1 and after["predictions"] == before["predictions"]
        assert _forged_count(s.dp.metrics.registry) == 1, "counted once, not at every poll"
        assert inner not in decoded, "nothing of the forged blob was decoded"
        # the learner's next version (signed with the key) is served as ever
        store.publish(rev, 3, fraud_model(seed=3))
        wait_until(lambda: s.dp.stable is not None and s.dp.stable.version == 3)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 3


def test_a_byte_changed_in_a_stored_version_makes_it_refused(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    store.publish(rev, 1, fraud_model(seed=1))
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        # (into a pipeline never run: the signed blob the store would write)
        blob, _ = store.publish(rev, 2, fraud_model(seed=2), pipe=r.pipeline(transaction=True))
        tampered = bytearray(blob)
        tampered[-10] ^= 0xFF  # a weight changed on its way into the store
        pipe = r.pipeline(transaction=True)
        store.publish(rev, 2, fraud_model(seed=2), pipe=pipe)
        pipe.set(store.keys.version(rev, 2), bytes(tampered))
        pipe.execute()
        wait_until(lambda: _forged_count(s.dp.metrics.registry) == 1)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 1


def test_a_server_puts_back_the_signed_bytes_it_holds_after_a_store_reset(r, redis_server) -> None:
    s = Served(redis_server.url, manifest(name="fraud"))
    store = ModelStore(r, "test", "fraud")
    rev = s.model.revision
    blob, _ = store.publish(rev, 5, fraud_model())
    assert blob.startswith(signing.MAGIC)
    with s.client:
        wait_until(lambda: s.dp.ready)
        r.flushall()  # Redis restarted empty
        wait_until(lambda: store.pointers(rev).served == 5)
        assert r.get(store.keys.version(rev, 5)) == blob, "put back byte for byte"
        learner, meta = store.load(rev, "served")  # and it verifies, for a learner restarting
        assert meta["version"] == 5 and learner.n_seen == 2000


def _monitor_model():  # type: ignore[no-untyped-def]
    return parse(manifest(name="fraud", rollout={"analysis": {"interval": "100ms"}}))


def test_the_monitor_skips_a_forged_version_and_scores_the_next_signed_one(
    r, decoded: list[bytes]
) -> None:
    model = _monitor_model()
    rev = model.revision
    store = ModelStore(r, "test", "fraud")
    store.publish(rev, 1, fraud_model(seed=1))
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=1).take(200)
    push_samples(r, store.keys.samples, rows, y)
    mon.step(block_ms=50)
    assert mon._served_key == (rev, 1)
    blob, _ = _by(WRONG_KEY, r).publish(rev, 2, fraud_model(seed=2))
    for _ in range(3):
        push_samples(r, store.keys.samples, rows[:10], y[:10])
        mon.step(block_ms=50)
    assert mon._served_key == (rev, 1), "the forged version is not the one scored"
    assert mon._load((rev, 2)) is None, "nor a candidate of the evidence"
    counted = mon.metrics.registry.get_sample_value(
        "tideline_forged_blobs_total", {"component": "monitor"}
    )
    assert counted == 1
    assert blob[signing.HEADER_BYTES :] not in decoded
    store.publish(rev, 3, fraud_model(seed=3))
    push_samples(r, store.keys.samples, rows[:10], y[:10])
    mon.step(block_ms=50)
    assert mon._served_key == (rev, 3)


LEARNING = {"publishEvery": 500, "maxBatchDelay": "20ms"}


def _proc(r, **kw) -> LearnerProcess:  # type: ignore[no-untyped-def]
    model = parse(manifest(name="fraud", learning=LEARNING))
    p = LearnerProcess(model, r, checkpoint_seconds=0.0, **kw)
    p.start()
    return p


def _learned(r, p: LearnerProcess, n: int) -> None:  # type: ignore[no-untyped-def]
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=0).take(n)
    push_samples(r, p.keys.samples, rows, y)
    learn_until(p, lambda: p.counters["samples"] == n)


def _forged_checkpoint(p: LearnerProcess, sealing: Sealing) -> bytes:
    """The learner's own checkpoint, its counters inflated and sealed by ``sealing``."""
    opened = p.store.sealing.open(
        p.r.get(p.keys.checkpoint(p.revision)), signing.CHECKPOINT, "test"
    )
    arrays, meta = codec.decode(opened.blob)
    meta["counters"]["samples"] = 10**9
    arrays = {k: np.zeros_like(v) if k.startswith("learner.") else v for k, v in arrays.items()}
    return sealing.seal(codec.encode(arrays, meta), signing.CHECKPOINT)


@pytest.mark.parametrize(
    "forger", [WRONG_KEY, UNSIGNED], ids=["a checkpoint signed with another key",
                                         "a checkpoint written unsigned"],
)  # fmt: skip
def test_the_learner_does_not_resume_from_a_forged_checkpoint_but_from_its_served_version(
    r, decoded: list[bytes], forger: Sealing
) -> None:
    p = _proc(r)
    _learned(r, p, 1200)
    served = p.store.pointers(p.revision).served
    assert served is not None and served >= 2
    forged = _forged_checkpoint(p, forger)
    r.set(p.keys.checkpoint(p.revision), forged)
    again = _proc(r)
    assert again.counters["samples"] != 10**9, "the forged counters were not taken"
    assert again._notes.get("resumedFrom") == f"v{served}"
    state = again.learner.get_state()
    assert any(np.any(v != 0) for v in state.values()), "the served version's weights"
    assert forged[signing.HEADER_BYTES :] not in decoded and forged not in decoded
    counted = again.metrics.registry.get_sample_value(
        "tideline_forged_blobs_total", {"component": "learner"}
    )
    assert counted == 1
    # its own checkpoint replaced the forged one, and is resumed from at the next start
    assert r.get(p.keys.checkpoint(p.revision)) != forged
    third = _proc(r)
    assert "resumedFrom" not in third._notes
    assert third.counters["samples"] == again.counters["samples"]


def test_a_learner_whose_served_version_is_forged_starts_after_it_and_serves_nothing_cold(
    r, monkeypatch: pytest.MonkeyPatch, decoded: list[bytes]
) -> None:
    p = _proc(r)
    _learned(r, p, 1200)
    before = p.store.pointers(p.revision)
    assert before.served is not None
    # the served version overwritten by hand, and the checkpoint gone (an eviction)
    forged = WRONG_KEY.seal(learner_to_blob(make_learner(p.spec.model.to_dict())), "version")
    r.set(p.keys.version(p.revision, before.served), forged)
    r.delete(p.keys.checkpoint(p.revision))
    monkeypatch.setenv(AWAIT_START_ENV, "1")  # as in its pod: no word comes, none is waited for
    again = _proc(r)
    after = again.store.pointers(again.revision)
    newest = max(again.store.versions(again.revision))
    assert after.latest == newest > before.latest, "numbered after every stored version"
    assert after.served == before.served and after.pinned, "the cold model is not served"
    assert again._notes.get("startedAfter") == str(before.latest)
    assert r.get(p.keys.version(p.revision, before.served)) == forged, "left for a look"
    assert forged[signing.HEADER_BYTES :] not in decoded


def test_a_learner_with_the_key_signs_what_it_writes_and_a_server_takes_its_versions(
    r, redis_server
) -> None:
    p = _proc(r)
    _learned(r, p, 600)
    k = p.keys
    for key in (k.checkpoint(p.revision), k.replay(p.revision), k.version(p.revision, 1)):
        assert r.get(key).startswith(signing.MAGIC), key
    s = Served(redis_server.url, manifest(name="fraud", learning=LEARNING))
    with s.client as c:
        wait_until(lambda: s.dp.ready)
        assert c.post(PREDICT, json={"instances": FRAUD_ROWS}).json()["model_version"] == 1
    assert Pointers.from_hash(r.hgetall(k.pointers(p.revision))).served == 1


# --------------------------------------------------------------------------- a local run
@pytest.mark.timeout(120)
def test_a_local_run_makes_a_key_and_every_process_signs_and_verifies_with_it(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideline.demo.harness import Loop

    monkeypatch.delenv(signing.KEY_ENV)  # (the processes get the run's own, not this one)
    doc = manifest(name="fraud", learning={"publishEvery": 300, "maxBatchDelay": "20ms"})
    with Loop(tmp_path / "cluster", doc, rate=500.0) as loop:
        key = loop.cluster.secrets["fraud-tideline-signing"]["key"]
        assert len(key) == 43 and key != KEY
        signer = Signer(key.encode(), "test/fraud")

        def trained_answer() -> bool:
            answers = [a for a in loop.sim.answers if a.version is not None and a.version >= 1]
            return bool(answers)

        loop.until(trained_answer, "an answer of a version the learner signed", 60)
        k, rev = loop.keys, loop.revision
        served = loop.pointers().served
        assert served is not None
        assert signer.open(loop.client.get(k.version(rev, served)), signing.VERSION)
        assert signer.open(loop.client.get(k.checkpoint(rev)), signing.CHECKPOINT)


# --------------------------------------------------------------------------- the operator's key
def _operator(r):  # type: ignore[no-untyped-def]
    """A reconciler and its in-memory API (tests.helpers.FakeKube)."""
    from tests.helpers import Clock, FakeKube
    from tideline_operator.builders import OperatorConfig
    from tideline_operator.reconcile import Reconciler

    kube, clock = FakeKube(), Clock()
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
    return Reconciler(kube, OperatorConfig(image="img:1", redis_url=url), clock=clock), kube, clock


def _deploy(rec, kube, doc: dict, generation: int = 1, mem=None) -> dict | None:  # type: ignore[no-untyped-def]
    from tideline_operator.reconcile import ModelMemory

    body = {**doc, "metadata": {**doc["metadata"], "uid": "u-1", "generation": generation}}
    return rec.turn(
        body, mem if mem is not None else ModelMemory(), kube.children(), lambda *e: None
    )


ROLLOUT = {"steps": [{"setWeight": 20}, {"pause": "30s"}], "analysis": {"interval": "5s"}}


def test_the_operator_makes_one_key_per_model_and_every_pod_of_every_revision_reads_it(
    r,
) -> None:
    import base64

    from tideline_operator.reconcile import ModelMemory

    rec, kube, clock = _operator(r)
    mem = ModelMemory()
    doc = manifest("fraud", rollout=ROLLOUT)
    _deploy(rec, kube, doc, mem=mem)
    secret = kube.objects[("Secret", "fraud-tideline-signing")]
    assert kube.created == [("Secret", "fraud-tideline-signing")]
    assert secret["immutable"] is True and secret["type"] == "Opaque"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    key = base64.b64decode(secret["data"]["key"])
    assert len(key) == 43 and Signer(key, "test/fraud")  # 32 random bytes, base64url text
    # a canary of another image: its learner and its own servers read the same key
    canary = {**doc, "spec": {**doc["spec"], "image": "img:2"}}
    clock.now += 1
    _deploy(rec, kube, canary, generation=2, mem=mem)
    deployments = [o for (kind, _), o in kube.objects.items() if kind == "Deployment"]
    assert len(deployments) == 5  # stable: learner, server, monitor; canary: learner, server
    revisions = {d["metadata"]["labels"].get("tideline.dev/revision") for d in deployments}
    assert len(revisions - {None}) == 2  # (the monitor's carries none)
    for d in deployments:
        env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": signing.KEY_ENV, "valueFrom": {"secretKeyRef": {
            "name": "fraud-tideline-signing", "key": "key"}}} in env, d["metadata"]["name"]  # fmt: skip
    # an operator that restarts (a new process, nothing remembered) keeps the key it finds
    rec2, _, _ = _operator(r)
    rec2.kube = kube
    clock.now += 1
    _deploy(rec2, kube, canary, generation=2)
    assert kube.created == [("Secret", "fraud-tideline-signing")], "made once, never again"
    assert kube.objects[("Secret", "fraud-tideline-signing")] == secret
    assert ("Secret", "fraud-tideline-signing") not in kube.applied, "never applied over"


def test_a_signing_secret_the_model_does_not_own_is_left_alone_and_said_so(r) -> None:
    rec, kube, _ = _operator(r)
    theirs = {"apiVersion": "v1", "kind": "Secret", "data": {"key": "dGhlaXJz"},
              "metadata": {"name": "fraud-tideline-signing", "namespace": "test"}}  # fmt: skip
    kube.objects[("Secret", "fraud-tideline-signing")] = dict(theirs)
    st = _deploy(rec, kube, manifest("fraud"))
    assert st is not None and st["phase"] == "Degraded"
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ResourceExists"
    assert "Secret 'fraud-tideline-signing'" in degraded["message"]
    assert kube.objects[("Secret", "fraud-tideline-signing")] == theirs
    assert not [k for k in kube.objects if k[0] == "Deployment"], "no pod without its key"


# --------------------------------------------------------------------------- adoption of a store
REFERENCE = Reference(["amount", "hour"], np.array([[1.0, 9.0], [2.0, 14.0]]), None, "test")


def _key_of(kube) -> str:  # type: ignore[no-untyped-def]
    """The key in the signing key Secret the operator made (text, as its pods read it)."""
    import base64

    return base64.b64decode(
        kube.objects[("Secret", "fraud-tideline-signing")]["data"]["key"]
    ).decode()


def _ran_without_a_key(r, monkeypatch: pytest.MonkeyPatch) -> LearnerProcess:  # type: ignore[no-untyped-def]
    """A built-in model that ran before it had a key: its learner published versions and wrote
    its checkpoint and replay buffer unsigned, its monitor a drift reference."""
    monkeypatch.delenv(signing.KEY_ENV)
    p = _proc(r)
    _learned(r, p, 1200)
    assert p.store.save_reference(p.revision, REFERENCE)
    return p


def _blobs(p: LearnerProcess) -> dict[str, tuple[str, bytes]]:
    """Every blob of the learner's revision: Redis key -> (kind, bytes)."""
    k, rev = p.keys, p.revision
    kinds = [(k.version(rev, v), signing.VERSION) for v in p.store.versions(rev)]
    kinds += [(k.checkpoint(rev), signing.CHECKPOINT), (k.replay(rev), signing.REPLAY),
              (k.reference(rev), signing.REFERENCE)]  # fmt: skip
    return {key: (kind, p.r.get(key)) for key, kind in kinds}


def _adopted(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if "adopted under its new signing key" in m]


def test_an_operator_upgraded_to_signing_seals_a_built_in_model_s_unsigned_state_and_its_pods_resume_from_it(
    r, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    p = _ran_without_a_key(r, monkeypatch)
    before = _blobs(p)
    versions = p.store.versions(p.revision)
    assert len(versions) >= 2 and all(b.startswith(codec.MAGIC) for _, b in before.values())
    rec, kube, _ = _operator(r)
    at_apply: list[bytes] = []  # the blobs' magic when each Deployment is applied
    apply = kube.apply

    def watched(obj: dict) -> dict:
        if obj["kind"] == "Deployment":
            at_apply.extend(r.get(key)[:4] for key in before)
        return apply(obj)

    kube.apply = watched  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="tideline.operator")
    _deploy(rec, kube, manifest(name="fraud", learning=LEARNING))
    key = _key_of(kube)
    signer = Signer(key.encode(), "test/fraud")
    for where, (kind, blob) in before.items():
        assert signer.open(r.get(where), kind) == blob, f"{where}: sealed, its bytes as they were"
    assert at_apply and set(at_apply) == {signing.MAGIC}, "sealed before any pod gets the key"
    assert _adopted(caplog) == [
        f"test/fraud: unsigned blobs adopted under its new signing key: revision {p.revision}: "
        f"sealed {len(versions)} versions, checkpoint yes, replay yes, reference yes"
    ]
    # the pods with the key: the learner resumes from its checkpoint (not its served version,
    # not cold), a server loads the served version, the monitor finds its reference
    monkeypatch.setenv(signing.KEY_ENV, key)
    again = _proc(r)
    assert "resumedFrom" not in again._notes and "startedAfter" not in again._notes
    assert again.counters["samples"] == 1200
    assert again.training.replay.filled == p.training.replay.filled > 0
    served = again.store.pointers(p.revision).served
    learner, meta = ModelStore(r, "test", "fraud").load(p.revision, "served")
    assert meta["version"] == served == max(versions) and learner.n_seen == meta["n_seen"] > 0
    assert ModelStore(r, "test", "fraud").reference(p.revision) is not None
    forged = again.metrics.registry.get_sample_value(
        "tideline_forged_blobs_total", {"component": "learner"}
    )
    assert not forged, "nothing refused"


TEAM_MODEL = {"algorithm": "custom", "custom": {"class": "tests.models.teams:Mean"}}


def test_the_unsigned_state_of_a_team_s_own_model_is_never_sealed_and_stays_refused(
    r, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(signing.KEY_ENV)
    doc = manifest(name="fraud")
    doc["spec"]["model"].update(TEAM_MODEL)
    rev = parse(doc).revision
    store = ModelStore(r, "test", "fraud")
    store.publish(rev, 1, make_learner(doc["spec"]["model"]))
    k = store.keys
    # its learner's checkpoint: state of unknown origin (a pickle, say) - no header says so
    pickled = np.frombuffer(b"\x80\x04\x95 a pickle that runs code", np.uint8)
    r.set(k.checkpoint(rev), codec.encode({"learner.state": pickled}, {"counters": {}}))
    before = {key: r.get(key) for key in (k.version(rev, 1), k.checkpoint(rev))}
    rec, kube, _ = _operator(r)
    caplog.set_level(logging.INFO, logger="tideline.operator")
    _deploy(rec, kube, doc)
    assert {key: r.get(key) for key in before} == before, "left unsigned"
    assert _adopted(caplog)[0].endswith(
        "sealed 0 versions, checkpoint no, replay no, reference no; "
        "left unsigned (not a built-in's): 1 version, 1 checkpoint"
    )
    monkeypatch.setenv(signing.KEY_ENV, _key_of(kube))
    with pytest.raises(signing.ForgedBlob, match="unsigned"):
        ModelStore(r, "test", "fraud").load(rev, 1)


def test_a_blob_written_while_the_store_is_adopted_is_left_as_written_and_sealed_by_a_later_sweep(
    r, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tideline_operator.reconcile import ADOPT_SECONDS, ModelMemory

    p = _ran_without_a_key(r, monkeypatch)
    where = p.keys.checkpoint(p.revision)
    first = r.get(where)

    def written_meanwhile(samples: int) -> bytes:
        """The old learner's next checkpoint (unsigned: its pod has no key)."""
        arrays, meta = codec.decode(first)
        meta["counters"]["samples"] = samples
        blob = codec.encode(arrays, meta)
        r.set(where, blob)
        return blob

    seal = Signer.seal
    news: list[bytes] = []

    def racing(self: Signer, blob: bytes, kind: str = signing.VERSION) -> bytes:
        if kind == signing.CHECKPOINT and not news:  # between the read and the replacement
            news.append(written_meanwhile(1300))
        return seal(self, blob, kind)

    monkeypatch.setattr(Signer, "seal", racing)
    rec, kube, clock = _operator(r)
    mem = ModelMemory()
    doc = manifest(name="fraud", learning=LEARNING)
    caplog.set_level(logging.INFO, logger="tideline.operator")
    _deploy(rec, kube, doc, mem=mem)
    assert r.get(where) == news[0], "not overwritten with the seal of what was read before"
    assert "checkpoint no" in _adopted(caplog)[0]
    assert _adopted(caplog)[0].endswith("1 written meanwhile, left as they are")
    signer = Signer(_key_of(kube).encode(), "test/fraud")
    # the next turn, within the window, seals what the old pods wrote meanwhile
    clock.now += 1
    _deploy(rec, kube, doc, mem=mem)
    assert signer.open(r.get(where), signing.CHECKPOINT) == news[0]
    assert "(written since by pods without it)" in _adopted(caplog)[-1]
    # past the window nothing is sealed any more: the pods without the key are long gone
    clock.now += ADOPT_SECONDS
    _deploy(rec, kube, doc, mem=mem)
    late = written_meanwhile(1400)
    clock.now += 1
    _deploy(rec, kube, doc, mem=mem)
    assert r.get(where) == late and mem.adoption is None


def test_an_operator_that_finds_the_key_its_pods_read_adopts_nothing(
    r, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, kube, clock = _operator(r)
    doc = manifest(name="fraud", learning=LEARNING)
    _deploy(rec, kube, doc)  # a new model: its key made, its pods read it
    monkeypatch.delenv(signing.KEY_ENV)
    rev = parse(doc).revision
    ModelStore(r, "test", "fraud").publish(rev, 1, fraud_model())  # written unsigned, by hand
    blob = r.get(Keys("test", "fraud").version(rev, 1))
    restarted, _, _ = _operator(r)  # a new process: nothing remembered
    restarted.kube = kube
    clock.now += 1
    _deploy(restarted, kube, doc)
    assert r.get(Keys("test", "fraud").version(rev, 1)) == blob, "not sealed: it is refused"


class _Payload:
    """Unpickled, it writes a file: what an attacker's state would do instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))  # (unpickling calls open(marker, "w"))


def _evil_version(marker: str) -> bytes:
    """A River version as the learner writes one, its state a pickle that creates ``marker``."""
    import pickle

    from tideline.algorithms.external import STATE

    state = pickle.dumps(_Payload(marker))
    model = {"task": "binary", "algorithm": "river", "features": [{"name": "amount"}],
             "river": {"pipeline": "river.linear_model:LogisticRegression", "params": {}}}  # fmt: skip
    arrays = {"n_seen": np.array(1, dtype=np.int64), STATE: np.frombuffer(state, np.uint8)}
    return codec.encode(arrays, {"model": model, "version": 1, "revision": "r"})


@pytest.mark.parametrize(
    ("how", "sealing"),
    [("unsigned", None), ("signed with another key", WRONG_KEY), ("another model's", OTHER_MODEL)],
)
def test_state_that_would_run_code_when_unpickled_is_refused_and_the_code_never_runs(
    r, tmp_path, monkeypatch, how: str, sealing: Sealing | None
) -> None:
    import pickle

    marker = tmp_path / "ran"
    blob = _evil_version(str(marker))
    # the payload is live: unpickled, it runs (the check below can fail)
    pickle.loads(codec.decode(blob)[0]["external.state"].tobytes())
    assert marker.exists()
    marker.unlink()
    stored = blob if sealing is None else sealing.seal(blob, signing.VERSION)
    k = Keys("test", "fraud")
    r.set(k.version("r", 1), stored)
    r.hset(k.pointers("r"), mapping={"latest": 1, "served": 1})
    store = ModelStore(r, "test", "fraud")  # a server's or the monitor's, with the model's key
    with pytest.raises(signing.ForgedBlob):
        store.load("r", 1)
    monkeypatch.delenv(signing.KEY_ENV)  # and a process without any key
    with pytest.raises(signing.ForgedBlob):
        ModelStore(r, "test", "fraud").load("r", 1)
    assert not marker.exists(), f"{how}: the state was unpickled"
