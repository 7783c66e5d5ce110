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

Timings are the best of ``--repeat`` runs (the machine is shared and noisy);
the ratios against River are what to read. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from river import datasets, forest, linear_model, multiclass, preprocessing
from river.datasets import synth
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from tideline.algorithms import make_learner
from tideline.demo.simulate import SyntheticStream
from tideline.evaluate import prequential

warnings.filterwarnings("ignore", category=ConvergenceWarning)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--part", choices=["all", "binary", "multiclass"], default="all",
                    help="the binary tables (1, 2), the multiclass ones (3, 4), or all")  # fmt: skip
    args = ap.parse_args()
    print(f"# tideline learner benchmark ({platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})\n")  # fmt: skip
    results: dict[str, Any] = {}
    if args.part != "multiclass":
        results |= binary_tables(args.repeat)
    if args.part != "binary":
        results["multiclass"] = print_multiclass(args.repeat)
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


if __name__ == "__main__":
    main()
