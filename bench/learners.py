"""tideline's learners against River and scikit-learn, side by side in one run.

Two tables:

1. Prequential (test-then-train) accuracy on River's bundled Phishing and
   Bananas data sets and on a seeded synthetic stream with an abrupt concept
   drift: River's LogisticRegression (StandardScaler, learn_one) and ARF,
   scikit-learn's SGDClassifier.partial_fit (StandardScaler.partial_fit,
   batches of 64), and tideline's learners at their default batch size of 64.
2. Throughput on 20 dense features: samples/s learned (tideline and
   scikit-learn in batches of 256, River one by one) and predicted.

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
from river import datasets, forest, linear_model, preprocessing
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    print(f"# tideline learner benchmark ({platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})\n")  # fmt: skip

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

    tp = throughput_table(args.repeat)
    river = tp["River LogisticRegression learn_one"]
    arf = tp["River ARF learn_one"]
    print(f"\n## Throughput, 20 dense features (samples/s, best of {args.repeat})\n")
    print("| learner | samples/s | vs River LR | vs River ARF |")
    print("|---|---|---|---|")
    for k, v in tp.items():
        print(f"| {k} | {v:,.0f} | {v / river:.1f}x | {v / arf:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"accuracy": acc_rows, "throughput": tp}, f, indent=2)


if __name__ == "__main__":
    main()
