"""tideline's learners against River and scikit-learn, side by side in one run.

Two tables:

1. Prequential (test-then-train) accuracy on River's bundled Phishing and
   Bananas data sets and on a seeded synthetic stream with an abrupt concept
   drift: River's LogisticRegression (StandardScaler, learn_one) and ARF,
   scikit-learn's SGDClassifier.partial_fit (StandardScaler.partial_fit,
   batches of 64), and tideline's learners at their default batch size of 64.
2. Throughput on 20 dense features: samples/s learned (tideline and
   scikit-learn in batches of 256, River one by one) and predicted.

And for ``multiclass`` (``--part multiclass``; both parts by default):

3. Prequential accuracy on River's bundled ImageSegments (7 classes), its
   RandomRBF (5 classes) and a seeded Gaussian mixture whose classes move
   halfway: River's one-vs-rest LogisticRegression (StandardScaler) and ARF
   against tideline's softmax ``sgd``, one-vs-rest ``ftrl`` and ``forest``,
   with their samples/s (predict + learn).
4. Learn throughput on the mixture (20 dense features, 5 classes): tideline
   in batches of 256 against River's one-vs-rest LogisticRegression and ARF
   one by one.

And for a team's River pipeline (``--part river``):

5. The River adapter in the learner process against River's own loop, on the same
   Redis stream (one-row entries of examples/river/fraud-river.yaml's features and two
   more numbers: 6 numeric, 2 categorical) and the same pipeline
   (``fraud_river.pipelines:scaled_logistic``: StandardScaler and one-hot into a
   LogisticRegression): River's loop as a team writes it (XREADGROUP, ``orjson.loads``,
   ``predict_proba_one`` then ``learn_one`` each row, XACK), tideline's
   :class:`~tideline.pods.learner.LearnerProcess` (in this process, the manifest's
   learning with replay off: the same rows learned once), and River's bare loop over
   parsed dicts (no Redis) as the ceiling. ``--profile`` prints where the learner's time
   goes.

And for Vowpal Wabbit (``--part vw``):

6. ``algorithm: vw`` (VW's defaults, logistic loss) against VW alone through its own
   Python binding on the same rows: prequential accuracy on the binary streams of table 1,
   beside tideline's ``sgd``; and samples/s learned on the synthetic stream (20 numeric
   features): VW alone building its text lines from the rows and learning them
   (``Workspace.learn``), VW alone on lines built beforehand (VW's ceiling), and the
   adapter: ``learn_many`` in batches of 256, and ``learn_predict_batches`` on blocks of
   1,000 rows in batches of 64 (the learner process's call: each row scored before it is
   learned, the state saved before each block).

Timings are the best of ``--repeat`` runs (the machine is shared and noisy);
the ratios against River are what to read. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from river import datasets, forest, linear_model, multiclass, preprocessing
from river.datasets import synth
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from tideline.algorithms import make_learner
from tideline.algorithms.river import RiverModel
from tideline.contracts import Keys
from tideline.demo.embedded import EmbeddedRedis
from tideline.demo.simulate import SyntheticStream
from tideline.evaluate import prequential
from tideline.features import bucket_of
from tideline.pods.learner import MAX_READ_ENTRIES, LearnerProcess
from tideline.signing import KEY_ENV
from tideline.spec import parse

warnings.filterwarnings("ignore", category=ConvergenceWarning)
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- streams
def river_stream(ds: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = list(ds)
    names = sorted(rows[0][0])
    X = np.array([[float(r[0][k]) for k in names] for r in rows])
    y = np.array([float(r[1]) for r in rows])
    return names, X, y


def drift_stream(
    n: int = 20_000, d: int = 20, seed: int = 1
) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = [f"x{i}" for i in range(d)]
    s = SyntheticStream([{"name": n} for n in names], "binary", seed=seed, drift_at=n // 2)
    X, _, y = s.take_arrays(n)
    return names, X, y


STREAMS: dict[str, Callable[[], tuple[list[str], np.ndarray, np.ndarray]]] = {
    "Phishing (1,250)": lambda: river_stream(datasets.Phishing()),
    "Bananas (5,300)": lambda: river_stream(datasets.Bananas()),
    "Synthetic drift (20,000)": drift_stream,
}


# --------------------------------------------------------------------------- contenders
def acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y >= 0.5)))


def river_preq(model: Any, names: list[str], X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    hits = 0
    t = time.perf_counter()
    for row, label in zip(X.tolist(), y.tolist(), strict=True):
        x = dict(zip(names, row, strict=True))
        p = model.predict_proba_one(x).get(True, model.predict_proba_one(x).get(1, 0.0))
        hits += (p >= 0.5) == bool(label)
        model.learn_one(x, bool(label))
    return hits / len(y), len(y) / (time.perf_counter() - t)


def sklearn_preq(X: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    scaler, clf = StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)
    preds = np.empty(len(y))
    for i in range(0, len(y), batch):
        xb, yb = X[i : i + batch], y[i : i + batch]
        if i == 0:
            preds[i : i + batch] = 0.5
        else:
            preds[i : i + batch] = clf.predict_proba(scaler.transform(xb))[:, 1]
        scaler.partial_fit(xb)
        clf.partial_fit(scaler.transform(xb), yb, classes=[0.0, 1.0])
    return acc(preds, y)


def tideline_preq(
    algorithm: str, names: list[str], X: np.ndarray, y: np.ndarray, ramp: bool = True, **params: Any
) -> tuple[float, float]:
    m = make_learner(
        {
            "task": "binary",
            "algorithm": algorithm,
            "features": [{"name": n} for n in names],
            "params": params,
        }
    )
    t = time.perf_counter()
    p = prequential(m, X, y, batch_size=64, ramp=ramp)
    return acc(p, y), len(y) / (time.perf_counter() - t)


def best_rate(fn: Callable[[], int], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


# --------------------------------------------------------------------------- tables
def accuracy_table() -> list[dict[str, Any]]:
    rows = []
    for name, load in STREAMS.items():
        names, X, y = load()
        river_lr, river_lr_rate = river_preq(
            preprocessing.StandardScaler() | linear_model.LogisticRegression(), names, X, y
        )
        river_arf, arf_rate = river_preq(forest.ARFClassifier(seed=42), names, X, y)
        sgd, _ = tideline_preq("sgd", names, X, y)
        sgd_noramp, _ = tideline_preq("sgd", names, X, y, ramp=False)
        ftrl, _ = tideline_preq("ftrl", names, X, y)
        frst, frst_rate = tideline_preq("forest", names, X, y)
        rows.append(
            {
                "stream": name,
                "river_lr": river_lr,
                "sklearn_sgd": sklearn_preq(X, y),
                "tideline_sgd": sgd,
                "tideline_sgd_no_ramp": sgd_noramp,
                "tideline_ftrl": ftrl,
                "river_arf": river_arf,
                "tideline_forest": frst,
                "river_arf_rate": arf_rate,
                "tideline_forest_rate": frst_rate,
                "river_lr_rate": river_lr_rate,
            }
        )
    return rows


def throughput_table(repeat: int) -> dict[str, float]:
    names, X, y = drift_stream(n=256 * 1000, d=20, seed=3)
    feats = [{"name": n} for n in names]
    out: dict[str, float] = {}

    def tideline_learn(
        algorithm: str, batch: int = 256, n: int = len(y), **params: Any
    ) -> Callable[[], int]:
        def run() -> int:
            m = make_learner(
                {"task": "binary", "algorithm": algorithm, "features": feats, "params": params}
            )
            for i in range(0, n, batch):
                m.learn_many(X[i : i + batch], y[i : i + batch])
            return n

        return run

    out["tideline sgd (newton) learn_many(256)"] = best_rate(tideline_learn("sgd"), repeat)
    out["tideline sgd (adagrad) learn_many(256)"] = best_rate(
        tideline_learn("sgd", optimizer="adagrad"), repeat
    )
    out["tideline ftrl learn_many(256)"] = best_rate(tideline_learn("ftrl"), repeat)
    out["tideline forest learn_many(256)"] = best_rate(tideline_learn("forest", n=50_000), repeat)
    out["tideline forest learn_many(64)"] = best_rate(
        tideline_learn("forest", batch=64, n=50_000), repeat
    )

    m = make_learner({"task": "binary", "algorithm": "sgd", "features": feats})
    m.learn_many(X[:5000], y[:5000])

    def tideline_predict() -> int:
        for i in range(0, len(y), 256):
            m.predict_many(X[i : i + 256])
        return len(y)

    out["tideline sgd predict_many(256)"] = best_rate(tideline_predict, repeat)

    def sklearn_learn() -> int:
        scaler, clf = StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)
        for i in range(0, 100_000, 256):
            xb, yb = X[i : i + 256], y[i : i + 256]
            scaler.partial_fit(xb)
            clf.partial_fit(scaler.transform(xb), yb, classes=[0.0, 1.0])
        return 100_000

    out["scikit-learn SGDClassifier.partial_fit(256)"] = best_rate(sklearn_learn, repeat)
    dict_rows = [dict(zip(names, r, strict=True)) for r in X[:20_000].tolist()]
    labels = [bool(v) for v in y[:20_000]]

    def river_learn() -> int:
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        for x, label in zip(dict_rows, labels, strict=True):
            model.learn_one(x, label)
        return len(dict_rows)

    out["River LogisticRegression learn_one"] = best_rate(river_learn, repeat)

    def river_arf_learn() -> int:
        model = forest.ARFClassifier(seed=42)
        for x, label in zip(dict_rows[:3000], labels[:3000], strict=True):
            model.learn_one(x, label)
        return 3000

    out["River ARF learn_one"] = best_rate(river_arf_learn, 1)
    return out


# --------------------------------------------------------------------------- multiclass
Stream = tuple[list[str], np.ndarray, np.ndarray, list[str]]  # names, X, y (indices), classes


def river_classes(ds: Any, n: int | None = None) -> Stream:
    rows = list(ds.take(n) if n else ds)
    names = sorted(rows[0][0])
    classes = sorted({r[1] for r in rows}, key=str)
    X = np.array([[float(r[0][k]) for k in names] for r in rows])
    y = np.array([classes.index(r[1]) for r in rows], dtype=np.float64)
    return [str(k) for k in names], X, y, [str(c) for c in classes]


def mixture_stream(n: int = 20_000, d: int = 20, k: int = 5, seed: int = 1) -> Stream:
    """``k`` Gaussian classes in ``d`` dimensions, overlapping; halfway every class mean is
    drawn again (abrupt concept drift)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    X = rng.normal(size=(n, d))
    for half in (slice(0, n // 2), slice(n // 2, n)):
        X[half] += 1.2 * rng.normal(size=(k, d))[y[half]]
    return [f"x{i}" for i in range(d)], X, y.astype(np.float64), [f"c{c}" for c in range(k)]


MULTICLASS_STREAMS: dict[str, Callable[[], Stream]] = {
    "ImageSegments (2,310, 7 classes)": lambda: river_classes(datasets.ImageSegments()),
    "RandomRBF (20,000, 5 classes)": lambda: river_classes(
        synth.RandomRBF(seed_model=7, seed_sample=7, n_classes=5, n_features=10), 20_000
    ),
    "Gaussian mixture, drift (20,000, 5 classes)": mixture_stream,
}


def river_ovr() -> Any:
    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression()
    )


def river_class_preq(
    model: Any, names: list[str], X: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    hits = 0
    t = time.perf_counter()
    for row, label in zip(X.tolist(), y.astype(int).tolist(), strict=True):
        x = dict(zip(names, row, strict=True))
        hits += model.predict_one(x) == label
        model.learn_one(x, label)
    return hits / len(y), len(y) / (time.perf_counter() - t)


def tideline_class_preq(algorithm: str, s: Stream, **params: Any) -> tuple[float, float]:
    names, X, y, classes = s
    m = make_learner({"task": "multiclass", "algorithm": algorithm, "classes": classes,
                      "features": [{"name": n} for n in names], "params": params})  # fmt: skip
    t = time.perf_counter()
    p = prequential(m, X, y, batch_size=64)
    return float(np.mean(p.argmax(axis=1) == y)), len(y) / (time.perf_counter() - t)


def multiclass_accuracy_table() -> list[dict[str, Any]]:
    rows = []
    for name, load in MULTICLASS_STREAMS.items():
        s = load()
        names, X, y, _ = s
        ovr, ovr_rate = river_class_preq(river_ovr(), names, X, y)
        arf, arf_rate = river_class_preq(forest.ARFClassifier(seed=42), names, X, y)
        sgd, sgd_rate = tideline_class_preq("sgd", s)
        adagrad, _ = tideline_class_preq("sgd", s, optimizer="adagrad")
        ftrl, _ = tideline_class_preq("ftrl", s)
        frst, frst_rate = tideline_class_preq("forest", s)
        rows.append({"stream": name, "river_ovr_lr": ovr, "tideline_sgd": sgd,
                     "tideline_sgd_adagrad": adagrad, "tideline_ftrl": ftrl, "river_arf": arf,
                     "tideline_forest": frst, "river_ovr_lr_rate": ovr_rate,
                     "tideline_sgd_rate": sgd_rate, "river_arf_rate": arf_rate,
                     "tideline_forest_rate": frst_rate})  # fmt: skip
    return rows


def multiclass_throughput_table(repeat: int) -> dict[str, float]:
    names, X, y, classes = mixture_stream(n=256 * 400, seed=3)
    feats = [{"name": n} for n in names]
    out: dict[str, float] = {}

    def tideline_learn(algorithm: str, n: int = len(y), **params: Any) -> Callable[[], int]:
        def run() -> int:
            m = make_learner({"task": "multiclass", "algorithm": algorithm, "classes": classes,
                              "features": feats, "params": params})  # fmt: skip
            for i in range(0, n, 256):
                m.learn_many(X[i : i + 256], y[i : i + 256])
            return n

        return run

    out["tideline sgd (newton, softmax) learn_many(256)"] = best_rate(tideline_learn("sgd"), repeat)
    out["tideline sgd (adagrad, softmax) learn_many(256)"] = best_rate(
        tideline_learn("sgd", optimizer="adagrad"), repeat
    )
    out["tideline ftrl (one-vs-rest) learn_many(256)"] = best_rate(tideline_learn("ftrl"), repeat)
    out["tideline forest learn_many(256)"] = best_rate(tideline_learn("forest", n=25_600), repeat)
    dict_rows = [dict(zip(names, r, strict=True)) for r in X[:10_000].tolist()]
    labels = y[:10_000].astype(int).tolist()

    def river_learn(make: Callable[[], Any], n: int) -> Callable[[], int]:
        def run() -> int:
            model = make()
            for x, label in zip(dict_rows[:n], labels[:n], strict=True):
                model.learn_one(x, label)
            return n

        return run

    out["River one-vs-rest LogisticRegression learn_one"] = best_rate(
        river_learn(river_ovr, 10_000), repeat
    )
    out["River ARF learn_one"] = best_rate(
        river_learn(lambda: forest.ARFClassifier(seed=42), 2000), 1
    )
    return out


def print_multiclass(repeat: int) -> dict[str, Any]:
    rows = multiclass_accuracy_table()
    print("\n## Multiclass: prequential accuracy (%), test-then-train; tideline at batch size 64\n")
    print("| stream | River OvR LR | tideline sgd | sgd (adagrad) | tideline ftrl (OvR) | River ARF "
          "| tideline forest | sgd - OvR LR | forest - ARF |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r[k] * 100 for k in ("river_ovr_lr", "tideline_sgd", "tideline_sgd_adagrad",
                                      "tideline_ftrl", "river_arf", "tideline_forest")]  # fmt: skip
        d_lr = (r["tideline_sgd"] - r["river_ovr_lr"]) * 100
        d_arf = (r["tideline_forest"] - r["river_arf"]) * 100
        print(f"| {r['stream']} | " + " | ".join(f"{c:.2f}" for c in cells)
              + f" | {d_lr:+.2f} | {d_arf:+.2f} |")  # fmt: skip
    print("\nSpeed in the prequential run (samples/s, predict + learn): "
          + "; ".join(f"{r['stream']}: sgd {r['tideline_sgd_rate']:,.0f} vs OvR LR "
                      f"{r['river_ovr_lr_rate']:,.0f} ({r['tideline_sgd_rate'] / r['river_ovr_lr_rate']:.0f}x), "
                      f"forest {r['tideline_forest_rate']:,.0f} vs ARF {r['river_arf_rate']:,.0f} "
                      f"({r['tideline_forest_rate'] / r['river_arf_rate']:.1f}x)" for r in rows))  # fmt: skip
    tp = multiclass_throughput_table(repeat)
    ovr, arf = tp["River one-vs-rest LogisticRegression learn_one"], tp["River ARF learn_one"]
    print(
        f"\n## Multiclass learn throughput, 20 dense features, 5 classes (samples/s, best of {repeat})\n"
    )
    print("| learner | samples/s | vs River OvR LR | vs River ARF |")
    print("|---|---|---|---|")
    for k, v in tp.items():
        print(f"| {k} | {v:,.0f} | {v / ovr:.1f}x | {v / arf:.1f}x |")
    return {"accuracy": rows, "throughput": tp}


# --------------------------------------------------------------------------- the River adapter
RIVER_EXAMPLE = ROOT / "examples" / "river"  # fraud-river.yaml, and its package fraud_river
EXTRA_NUMBERS = [{"name": "tx_last_hour", "type": "numeric", "default": 1.0},
                 {"name": "avg_amount_30d", "type": "numeric", "default": 50.0}]  # fmt: skip
CONTENDERS = {
    "bare": "River's bare loop over the parsed dicts (the ceiling)",
    "river": "River's own loop on the Redis stream (XREADGROUP, orjson, XACK)",
    "learner": "tideline learner, algorithm: river (fraud-river.yaml's learning, replay off)",
    "learner_no_gate": "tideline learner, the same without the gate's holdout",
}


def river_manifest(gate: bool = True) -> dict[str, Any]:
    """examples/river/fraud-river.yaml with two more numeric features (6 numeric, 2
    categorical) and replay off (replayed rows are learned again: River's loop has none);
    ``gate=False``: no holdout either (the served version scores no rows)."""
    doc = yaml.safe_load((RIVER_EXAMPLE / "fraud-river.yaml").read_text())
    doc["spec"]["model"]["features"] += copy.deepcopy(EXTRA_NUMBERS)
    doc["spec"]["learning"]["replay"] = {"size": 0, "fraction": 0.0}
    if not gate:
        doc["spec"]["learning"]["gate"]["holdout"] = 0
    return doc


def river_pipeline() -> Any:
    """The manifest's pipeline, called as the learner calls it (``river.params``)."""
    from fraud_river.pipelines import scaled_logistic  # (examples/river, on sys.path)

    return scaled_logistic(**river_manifest()["spec"]["model"]["river"]["params"])


def river_rows(n: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Rows of the manifest's features, and labels. Categories that share a bucket of the
    learner's hashing are one (the first seen names them all): both loops then learn the
    same categories. (The synthetic stream has 200 countries and the manifest 64 buckets:
    River's own loop would learn 406 weights to the learner's 270, at 0.7x its speed - River's
    LogisticRegression costs grow with its weights.)"""
    features = river_manifest()["spec"]["model"]["features"]
    rows, y = SyntheticStream(features, "binary", seed=4).take(n)
    buckets = {f["name"]: f["buckets"] for f in features if f.get("type") == "categorical"}
    first: dict[tuple[str, int], str] = {}
    for row in rows:
        for name, b in buckets.items():
            row[name] = first.setdefault((name, bucket_of(row[name], b)), row[name])
    return rows, y.tolist()


@dataclass
class Run:
    """One contender's run: rows/s by the wall clock and by this process's CPU time, and the
    shares of its wall time spent in River's calls learning the rows (``predict_proba_one``
    then ``learn_one``, each row: the same work in every loop) and in more River calls than
    those (the gate's: the served version scoring the rows)."""

    wall: float
    cpu: float
    river: float = 1.0
    gate: float = 0.0


class Clock:
    """Wall-clock and CPU seconds of this process since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def run(self, n: int, river: float | None = None, gate: float = 0.0) -> Run:
        """The run of ``n`` rows until now, ``river`` (``gate``) seconds of it in River's calls."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Run(n / wall, n / cpu, wall if river is None else river / wall, gate / wall)


@contextlib.contextmanager
def river_calls(spent: dict[str, float]) -> Iterator[None]:
    """Seconds in :class:`~tideline.algorithms.river.RiverModel`'s ``learn_predict`` (River's
    calls learning a mini-batch, and the adapter's loop around them) and ``predict`` (the
    gate's), added to ``spent`` while the block runs: the bench's own wrappers, taken off
    after."""
    saved = {name: getattr(RiverModel, name) for name in ("learn_predict", "predict")}

    def timed(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: RiverModel, *args: Any) -> Any:
            t = time.perf_counter()
            try:
                return f(self, *args)
            finally:
                spent[name] += time.perf_counter() - t

        return call

    for name, f in saved.items():
        setattr(RiverModel, name, timed(name, f))
    try:
        yield
    finally:
        for name, f in saved.items():
            setattr(RiverModel, name, f)


def river_redis_loop(r: Any, stream: str, n: int) -> Run:
    """River's own loop around the stream, as a team writes it."""
    model, group = river_pipeline(), "team-loop"
    r.xgroup_create(stream, group, id="0")
    clock, done, inside = Clock(), 0, 0.0
    while done < n:
        for _, entries in r.xreadgroup(
            group, "c", {stream: ">"}, count=MAX_READ_ENTRIES, block=100
        ):
            for _, fields in entries:
                d = orjson.loads(fields[b"data"])
                x, label = d["features"], d["label"] == 1.0
                t = time.perf_counter()
                model.predict_proba_one(x)  # (prequential: scored, then learned)
                model.learn_one(x, label)
                inside += time.perf_counter() - t
            r.xack(stream, group, *[eid for eid, _ in entries])
            done += len(entries)
    return clock.run(n, inside)


def river_bare_loop(dicts: list[dict[str, Any]], labels: list[float]) -> Run:
    model, clock = river_pipeline(), Clock()
    for x, label in zip(dicts, labels, strict=True):
        model.predict_proba_one(x)
        model.learn_one(x, label == 1.0)
    return clock.run(len(dicts))


def learner_process(r: Any, doc: dict[str, Any], n: int, profile: cProfile.Profile | None = None
                    ) -> tuple[Run, LearnerProcess]:  # fmt: skip
    """tideline's learner over the stream, in this process, from its start (v0 published) to
    its last checkpoint, every row learned."""
    p = LearnerProcess(parse(doc), r)
    p.start()
    spent = {"learn_predict": 0.0, "predict": 0.0}
    with river_calls(spent):
        if profile is not None:
            profile.enable()
        clock = Clock()
        while p.counters["samples"] + len(p.training.pending) < n:
            p.step(block_ms=1)
        p.flush()  # (the rows short of a mini-batch, and the last checkpoint)
        run = clock.run(n, spent["learn_predict"], spent["predict"])
        if profile is not None:
            profile.disable()
    assert p.counters["samples"] == n, p.counters
    return run, p


def river_adapter_table(repeat: int, n: int = 20_000, profile: bool = False) -> dict[str, Any]:
    os.environ.setdefault(KEY_ENV, "a-signing-key-for-the-benchmark")  # (a River model is signed)
    sys.path.insert(0, str(RIVER_EXAMPLE))
    doc, doc_no_gate = river_manifest(), river_manifest(gate=False)
    model = parse(doc)
    # (one model, two revisions: the learners read the same stream, each with its group)
    assert parse(doc_no_gate).revision != model.revision
    stream = Keys(model.namespace, model.name).samples
    rows, labels = river_rows(n)
    dicts = [orjson.loads(orjson.dumps(x)) for x in rows]  # (as River's loop parses them)
    runs: dict[str, list[Run]] = {k: [] for k in CONTENDERS}
    prof = cProfile.Profile() if profile else None
    agreement = 0.0
    with EmbeddedRedis() as server:
        r = server.client()

        def fill() -> None:
            """The stream afresh: the rows as one-row entries, as a producer writes them."""
            r.flushall()
            pipe = r.pipeline(transaction=False)
            for x, label in zip(rows, labels, strict=True):
                pipe.xadd(stream, {"data": orjson.dumps({"features": x, "label": label})})
            pipe.execute()

        for i in range(repeat):
            fill()
            # the contenders in turn, in another order each round (the machine is noisy)
            order = list(CONTENDERS)
            for who in order[i % 4 :] + order[: i % 4]:
                if who == "river":
                    runs[who].append(river_redis_loop(r, stream, n))
                elif who == "bare":
                    runs[who].append(river_bare_loop(dicts, labels))
                else:
                    run, p = learner_process(r, doc if who == "learner" else doc_no_gate, n)
                    runs[who].append(run)
                    if who == "learner":  # (it learned what River learns alone)
                        own = river_pipeline()
                        for x, label in zip(dicts, labels, strict=True):
                            own.learn_one(x, label == 1.0)
                        probe = rows[:2000]
                        mine = p.learner.predict_many(p.schema.encode(probe))
                        theirs = np.array([own.predict_proba_one(x)[True] for x in probe])
                        agreement = float(np.mean(np.abs(mine - theirs)))
                    del p
        if prof is not None:  # (a run of its own: cProfile slows what it watches)
            fill()
            learner_process(r, doc, n, prof)
    out: dict[str, Any] = {"rows": n, "mean_abs_score_difference": agreement,
                           "runs": {k: [dataclasses.asdict(x) for x in v] for k, v in runs.items()}}  # fmt: skip
    # A ratio of rates is read as the median of a round's (its runs follow each other, and
    # share more of the machine's noise than the best ones do); and, steadier still, from
    # the shares of time in River's calls, measured within each run: River's calls do the
    # same work in both loops, so the loops' speeds are as those shares.
    river, bare = runs["river"], runs["bare"]
    out["ratios"] = {k: {
        "wall": float(np.median([a.wall / b.wall for a, b in zip(v, river, strict=True)])),
        "cpu": float(np.median([a.cpu / b.cpu for a, b in zip(v, river, strict=True)])),
        "shares": float(np.median([x.river for x in v]) / np.median([x.river for x in river])),
        "bare wall": float(np.median([a.wall / b.wall for a, b in zip(v, bare, strict=True)])),
        "bare shares": float(np.median([x.river for x in v])),  # (bare River: all of it)
    } for k, v in runs.items()}  # fmt: skip
    if prof is not None:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats("tideline/", 30)
        out["profile"] = text.getvalue()
    return out


def print_river_adapter(repeat: int, profile: bool = False) -> dict[str, Any]:
    res = river_adapter_table(repeat, profile=profile)
    print(f"\n## A River pipeline in the learner process, {res['rows']:,} rows "
          f"(predict_proba_one + learn_one each row; best of {repeat}, every run listed)\n")  # fmt: skip
    print("| loop | rows/s (wall) | runs (wall) | rows/s (CPU) | time in River's calls (gate's) "
          "| vs River's loop on Redis: wall, CPU (median a round); from the shares "
          "| vs bare River: wall; from the shares |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for k, name in CONTENDERS.items():
        v, q = res["runs"][k], res["ratios"][k]
        walls = ", ".join(f"{x['wall']:,.0f}" for x in v)
        river = np.median([x["river"] for x in v]) * 100
        gate = np.median([x["gate"] for x in v]) * 100
        share = "(all)" if k == "bare" else f"{river:.0f} %" + (f" ({gate:.0f} %)" if gate else "")
        vs_river = f"{q['wall']:.2f}x, {q['cpu']:.2f}x" + (
            "" if k == "bare" else f"; {q['shares']:.2f}x"
        )
        vs_bare = "" if k == "bare" else f"{q['bare wall']:.2f}x; {q['bare shares']:.2f}x"
        print(f"| {name} | {max(x['wall'] for x in v):,.0f} | {walls} "
              f"| {max(x['cpu'] for x in v):,.0f} | {share} | {vs_river} | {vs_bare} |")  # fmt: skip
    print("\nFrom the shares: the ratio of the shares of time spent in River's calls, each "
          "measured within its run (the machine's noise cancels out): the same calls learn the "
          "same rows in every loop, so the loops' speeds are as these shares. The gate's share "
          "is the served version scoring the rows again, for the holdout.")  # fmt: skip
    print(f"\nThe learner's model against River's own after the same rows: mean |score "
          f"difference| {res['mean_abs_score_difference']:.2g} on 2,000 rows")  # fmt: skip
    if profile:
        print(
            "\n### Where the learner's time goes (cProfile, a run of its own: tideline's "
            "functions by cumulative time)\n"
        )
        print("```\n" + res["profile"].strip() + "\n```")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--part", choices=["all", "binary", "multiclass", "river", "vw"],
                    default="all", help="the binary tables (1, 2), the multiclass ones (3, 4), "
                    "the River adapter's (5), Vowpal Wabbit's (6), or all")  # fmt: skip
    ap.add_argument("--profile", action="store_true",
                    help="with the River adapter's table: where the learner's time goes")  # fmt: skip
    args = ap.parse_args()
    print(f"# tideline learner benchmark ({platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})\n")  # fmt: skip
    results: dict[str, Any] = {}
    if args.part in ("all", "binary"):
        results |= binary_tables(args.repeat)
    if args.part in ("all", "multiclass"):
        results["multiclass"] = print_multiclass(args.repeat)
    if args.part in ("all", "river"):
        results["river_adapter"] = print_river_adapter(args.repeat, args.profile)
    if args.part in ("all", "vw"):
        results["vw"] = print_vw(args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def binary_tables(repeat: int) -> dict[str, Any]:
    acc_rows = accuracy_table()
    print("## Prequential accuracy (%), test-then-train; tideline at batch size 64\n")
    print("| stream | River LR | sklearn SGD (64) | tideline sgd | sgd, no ramp | tideline ftrl "
          "| River ARF | tideline forest | sgd - River LR | forest - ARF |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in acc_rows:
        cells = [r[k] * 100 for k in ("river_lr", "sklearn_sgd", "tideline_sgd", "tideline_sgd_no_ramp",
                                      "tideline_ftrl", "river_arf", "tideline_forest")]  # fmt: skip
        d_lr = (r["tideline_sgd"] - r["river_lr"]) * 100
        d_arf = (r["tideline_forest"] - r["river_arf"]) * 100
        print(
            f"| {r['stream']} | "
            + " | ".join(f"{c:.2f}" for c in cells)
            + f" | {d_lr:+.2f} | {d_arf:+.2f} |"
        )
    print("\nForest speed in the prequential run (samples/s, predict + learn): "
          + ", ".join(f"{r['stream']}: tideline {r['tideline_forest_rate']:,.0f} vs ARF {r['river_arf_rate']:,.0f} "
                      f"({r['tideline_forest_rate'] / r['river_arf_rate']:.1f}x)" for r in acc_rows))  # fmt: skip

    tp = throughput_table(repeat)
    river = tp["River LogisticRegression learn_one"]
    arf = tp["River ARF learn_one"]
    print(f"\n## Throughput, 20 dense features (samples/s, best of {repeat})\n")
    print("| learner | samples/s | vs River LR | vs River ARF |")
    print("|---|---|---|---|")
    for k, v in tp.items():
        print(f"| {k} | {v:,.0f} | {v / river:.1f}x | {v / arf:.1f}x |")
    return {"accuracy": acc_rows, "throughput": tp}


# --------------------------------------------------------------------------- Vowpal Wabbit
VW_ARGS = "--loss_function logistic --link logistic --quiet"  # (what the adapter adds)


def vw_lines(names: list[str], X: np.ndarray, y: np.ndarray | None = None) -> list[str]:
    """Rows as a team writes them for VW by hand: ``label |n name:value ...``."""
    fmt = " |n " + " ".join(f"{n}:%.9g" for n in names)
    lines = [fmt % tuple(row) for row in X.tolist()]
    if y is None:
        return lines
    return [("1" if v == 1.0 else "-1") + line for v, line in zip(y.tolist(), lines, strict=True)]


def vw_alone_preq(names: list[str], X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from vowpalwabbit import Workspace

    ws, out = Workspace(VW_ARGS), []
    for line in vw_lines(names, X, y):
        ex = ws.parse(line)
        ws.learn(ex)
        out.append(ex.get_simplelabel_prediction())
        ws.finish_example(ex)
    return np.array(out)


def vw_adapter(names: list[str]) -> Any:
    return make_learner({"task": "binary", "algorithm": "vw", "vw": {"args": ""},
                         "features": [{"name": n} for n in names]})  # fmt: skip


def vw_table(repeat: int) -> dict[str, Any]:
    from vowpalwabbit import Workspace

    rows = []
    for name, make in STREAMS.items():
        names, X, y = make()
        alone = vw_alone_preq(names, X, y)
        t = time.perf_counter()
        p = vw_adapter(names).learn_predict_batches(X, y, np.r_[np.arange(0, len(y), 64), len(y)])
        rate = len(y) / (time.perf_counter() - t)
        sgd, sgd_rate = tideline_preq("sgd", names, X, y)
        rows.append({"stream": name, "vw_alone": acc(alone, y), "tideline_vw": acc(p, y),
                     "identical": bool(np.array_equal(p, alone)), "tideline_sgd": sgd,
                     "tideline_vw_rate": rate, "tideline_sgd_rate": sgd_rate})  # fmt: skip
    names, X, y = drift_stream()
    n = len(y)

    def alone() -> int:
        ws = Workspace(VW_ARGS)
        for line in vw_lines(names, X, y):
            ws.learn(line)
        return n

    built = vw_lines(names, X, y)

    def alone_built() -> int:
        ws = Workspace(VW_ARGS)
        for line in built:
            ws.learn(line)
        return n

    def adapter() -> int:
        m = vw_adapter(names)
        for i in range(0, n, 256):
            m.learn_many(X[i : i + 256], y[i : i + 256])
        return n

    def adapter_blocks() -> int:
        m = vw_adapter(names)
        for i in range(0, n, 1000):
            m.learn_predict_batches(X[i : i + 1000], y[i : i + 1000], np.r_[0:1000:64, 1000])
        return n

    rates = {"VW alone, lines built from the rows": best_rate(alone, repeat),
             "VW alone, lines built beforehand": best_rate(alone_built, repeat),
             "tideline vw: learn_many (256)": best_rate(adapter, repeat),
             "tideline vw: learn_predict_batches (1,000 in 64s)": best_rate(adapter_blocks, repeat)}  # fmt: skip
    m = vw_adapter(names)
    m.learn_many(X, y)
    t = time.perf_counter()
    for _ in range(20):
        m.set_state(m.get_state())
    state_ms = (time.perf_counter() - t) / 20 * 1e3
    return {"accuracy": rows, "learn": rates, "state_round_trip_ms": state_ms,
            "state_bytes": int(m.get_state()["external.state"].nbytes)}  # fmt: skip


def print_vw(repeat: int) -> dict[str, Any]:
    res = vw_table(repeat)
    print("\n## Vowpal Wabbit: prequential accuracy (%), VW's defaults, logistic loss\n")
    print("| stream | VW alone | tideline vw | the same scores | tideline sgd | vw samples/s "
          "| sgd samples/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in res["accuracy"]:
        print(f"| {r['stream']} | {r['vw_alone'] * 100:.2f} | {r['tideline_vw'] * 100:.2f} | "
              f"{'yes' if r['identical'] else 'no'} | {r['tideline_sgd'] * 100:.2f} | "
              f"{r['tideline_vw_rate']:,.0f} | {r['tideline_sgd_rate']:,.0f} |")  # fmt: skip
    alone = res["learn"]["VW alone, lines built from the rows"]
    print(f"\n## Vowpal Wabbit: learn, 20 numeric features (samples/s, best of {repeat})\n")
    print("| how | samples/s | vs VW alone |")
    print("|---|---|---|")
    for k, v in res["learn"].items():
        print(f"| {k} | {v:,.0f} | {v / alone:.2f}x |")
    print(
        f"\nState: {res['state_bytes']:,} bytes; get_state + set_state "
        f"{res['state_round_trip_ms']:.2f} ms"
    )
    return res


if __name__ == "__main__":
    main()
