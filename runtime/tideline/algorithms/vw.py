"""Vowpal Wabbit under the learner contract (``algorithm: vw``).

``spec.model.vw.args`` are VW's own arguments (``-b 20 -q nc --l2 1e-6``), checked by the
manifest's parser (:class:`tideline.spec.VWParams`); tideline adds :data:`OWN` (``--quiet``:
VW writes nothing to stdout or stderr; ``--save_resume``), the loss when none is given and
its link (:data:`tideline.spec.VW_LOSSES`): a binary model learns VW's logistic loss on
labels -1/+1 and serves the probability of class 1 through ``--link logistic``; a
regression learns the target (squared loss unless told) and serves the value. A multiclass
model is VW's one-against-all with probabilities and the logistic loss, ``--oaa k
--probabilities``, ``k`` the number of ``spec.model.classes`` (tideline adds both: without
``--probabilities`` VW predicts a class, not probabilities; the parser refuses another
``k``, and so does VW). It learns labels ``1..k``, the class's index plus one (``--indexing 1``:
VW would otherwise guess the base from the first labels it sees), and serves the ``k``
probabilities VW predicts (``SCALARS``, each row summing to 1).

Rows arrive as the encoded matrix and reach VW in its text format, one example a row:
numeric features as ``name:value`` in namespace ``n`` (nine significant digits: a
float32's, the precision VW learns in), categorical ones as ``name=bucket`` in namespace
``c``, a missing one left out; so ``-q nc`` crosses the two. A name with a character the
format reserves (space, tab, ``|``, ``:``) has it written as ``%XX``.

VW predicts an example before it learns it: :meth:`VWModel.learn_predict` reads that
prediction, so the prequential score costs no second pass. The state is VW's own model
file (written to, and read from, a temporary directory that is removed at once), saved
with ``--save_resume``: the weights with their adaptive and normalising accumulators and
VW's counters, so a loaded copy predicts as the original and goes on learning exactly as an
unbroken run would, for VW's linear learners (``gd``, ``--ftrl``, ``--coin``, ``--pistol``,
``--freegrad``, interactions, ``--lrq``). Reductions that keep a random generator or
counters outside that file (``--nn``, ``--bootstrap``, ``--boosting``, ``--OjaNewton``,
``--stage_poly``, ``--autolink``) go on close to, not exactly as, an unbroken run; so does
``--normalized`` (one of VW's defaults) under one-against-all (VW 9.11.9: a probability
within 5e-3 of the unbroken run's after 1,500 rows; ``--adaptive``, ``--ftrl``, ``--coin``
or ``--sgd`` alone resume exactly).
Predicting moves VW's counts of examples seen, never what it learned. ``soften`` keeps the
contract's default (nothing): VW has no call that takes back part of what was learned.

VW is an extra (``pip install tideline[vw]``, VW's own Python binding): not in the
runtime image; a team's image built ``FROM`` it adds it.

Examples
--------
>>> from tideline.spec import Feature
>>> m = VWModel(ModelInfo("binary", (Feature("x"),)))
>>> m.learn(np.array([[1.0], [-1.0]] * 50), np.array([1.0, 0.0] * 50))
>>> bool(m.predict(np.array([[2.0]]))[0] > 0.5)
True
>>> VWModel(ModelInfo("binary", (Feature("x"),)), "--oaa 3")
Traceback (most recent call last):
...
ValueError: with --oaa 3, VW predicts MULTICLASS from MULTICLASS labels; a binary model needs SCALAR from SIMPLE (one-against-all is task: multiclass, with spec.model.classes)
>>> m = VWModel(ModelInfo("multiclass", (Feature("x"),), ("lo", "mid", "hi")))
>>> m.learn(np.array([[-1.0], [0.0], [1.0]] * 100), np.array([0.0, 1.0, 2.0] * 100))
>>> m.predict(np.array([[1.0], [-1.0]])).argmax(axis=1).tolist()
[2, 0]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from vowpalwabbit import Workspace
from vowpalwabbit.pyvw import LabelType, PredictionType

from tideline.model import ModelInfo, OnlineLearner
from tideline.spec import VW_LOSSES, VWParams

# What VW must predict, from which labels, for each task tideline runs.
PREDICTS = {
    "binary": (PredictionType.SCALAR, LabelType.SIMPLE),
    "regression": (PredictionType.SCALAR, LabelType.SIMPLE),
    "multiclass": (PredictionType.SCALARS, LabelType.MULTICLASS),  # (VW 9.11: oaa's probabilities)
}
# tideline's own arguments: VW writes nothing (stdout, stderr), and its model file holds the
# whole state - accumulators, and counters too, so that a loaded model's bytes are an
# unbroken run's (VW resets its performance counters on load by default)
OWN = ("--quiet", "--save_resume", "--preserve_performance_counters")
_RESERVED = str.maketrans({c: f"%{ord(c):02X}" for c in " \t\n\r|:%"})


def command(task: str, args: str, n_classes: int = 0) -> list[str]:
    """VW's command line for a ``task`` model with the team's ``args``: theirs, then tideline's
    (a multiclass model's: one-against-all over its ``n_classes``, with probabilities).

    >>> command("binary", "-b 20")
    ['-b', '20', '--loss_function', 'logistic', '--link', 'logistic', '--quiet', '--save_resume', '--preserve_performance_counters']
    >>> command("multiclass", "-b 20", 3)[2:]
    ['--loss_function', 'logistic', '--oaa', '3', '--probabilities', '--indexing', '1', '--link', 'identity', '--quiet', '--save_resume', '--preserve_performance_counters']
    """
    params = VWParams(args)
    loss = params.loss(task)
    own = [] if params.option("loss_function") else ["--loss_function", loss]
    if task == "multiclass":  # (given as well, they are VW's to check: another k is refused)
        own += ["--oaa", str(n_classes), "--probabilities", "--indexing", "1"]
    return [*args.split(), *own, "--link", VW_LOSSES[task][loss], *OWN]


def workspace(argv: list[str]) -> Workspace:
    """A VW workspace; VW's error, when it refuses ``argv``, as its last line."""
    try:
        return Workspace(arg_list=argv)
    except RuntimeError as e:  # (VW's message may run over several lines: the last says why)
        lines = [line for line in str(e).splitlines() if line.strip()] or [repr(e)]
        raise RuntimeError(lines[-1].strip()) from None


class VWModel(OnlineLearner):
    """One VW workspace, learning and predicting a row at a time (see the module docs)."""

    def __init__(self, info: ModelInfo, args: str = "") -> None:
        if info.task not in PREDICTS:
            raise ValueError(f"algorithm vw runs {' and '.join(PREDICTS)} models, not yet "
                             f"{info.task}")  # fmt: skip
        self.info, self.args = info, args
        self._argv = command(info.task, args, info.n_classes)
        self._ws = self._checked(workspace(self._argv))
        self._binary = info.task == "binary"
        self._multiclass = info.task == "multiclass"
        num = [j for j, f in enumerate(info.features) if f.type == "numeric"]
        self._num = np.array(num, dtype=np.intp)
        self._num_format = " |n" + "".join(  # (a name's % escaped for the % operator)
            f" {_name(info.features[j].name).replace('%', '%%')}:%.9g" for j in num
        )
        self._cats = [(j, _name(f.name)) for j, f in enumerate(info.features)
                      if f.type == "categorical"]  # fmt: skip

    def _checked(self, ws: Workspace) -> Workspace:
        """``ws``, if its arguments make VW predict what the task serves."""
        made = (ws.get_prediction_type(), ws.get_label_type())
        if made != PREDICTS[self.info.task]:
            ws.finish()
            (pred, label), (want, wanted) = made, PREDICTS[self.info.task]
            oaa = label == LabelType.MULTICLASS and not self.info.n_classes
            hint = " (one-against-all is task: multiclass, with spec.model.classes)" if oaa else ""
            raise ValueError(f"with {self.args}, VW predicts {pred.name} from {label.name} "
                             f"labels; a {self.info.task} model needs {want.name} from "
                             f"{wanted.name}{hint}")  # fmt: skip
        return ws

    # -- VW's text format ---------------------------------------------------------------
    def _features(self, X: np.ndarray) -> list[str]:
        """Each row's features, as VW's text format writes them after the label."""
        fmt = self._num_format
        lines = [fmt % tuple(row) for row in X[:, self._num].tolist()]
        if not self._cats:
            return lines
        cats = [" |c"] * len(lines)
        for j, name in self._cats:  # (column by column: a comprehension each, no loop per row)
            cats = [f"{c} {name}={int(code)}" if code >= 0 else c
                    for c, code in zip(cats, X[:, j].tolist(), strict=True)]  # fmt: skip
        return [a + b for a, b in zip(lines, cats, strict=True)]

    def _labelled(self, X: np.ndarray, y: np.ndarray) -> list[str]:
        if self._binary:
            labels = ["1" if v == 1.0 else "-1" for v in y.tolist()]
        elif self._multiclass:  # (--indexing 1)
            labels = [str(int(v) + 1) for v in y.tolist()]
        else:
            labels = [f"{v:.9g}" for v in y.tolist()]
        return [label + line for label, line in zip(labels, self._features(X), strict=True)]

    # -- the contract -------------------------------------------------------------------
    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        learn = self._ws.learn
        for line in self._labelled(X, y):
            learn(line)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        ws, out = self._ws, []
        for line in self._labelled(X, y):
            ex = ws.parse(line)
            ws.learn(ex)  # (VW predicts the example, then learns it)
            out.append(ex.get_scalars() if self._multiclass else ex.get_simplelabel_prediction())
            ws.finish_example(ex)
        return self._array(out, len(y))

    def predict(self, X: np.ndarray) -> np.ndarray:
        predict = self._ws.predict
        return self._array([predict(line) for line in self._features(X)], len(X))

    def _array(self, scores: list[Any], n: int) -> np.ndarray:
        """Rows' scores: ``(n,)``, or a multiclass model's ``(n, k)``."""
        p = np.array(scores, dtype=np.float64)
        return p.reshape(n, self.info.n_classes) if self._multiclass else p

    def save(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="tideline-vw-") as tmp:
            path = Path(tmp) / "model"
            self._ws.save(str(path))
            return path.read_bytes()

    def load(self, state: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="tideline-vw-") as tmp:
            path = Path(tmp) / "model"
            path.write_bytes(state)
            ws = self._checked(workspace([*self._argv, "-i", str(path)]))
        old, self._ws = self._ws, ws
        old.finish()


def _name(name: str) -> str:
    """A feature's name as VW's text format can carry it.

    >>> _name("amount"), _name("unit price|eur")
    ('amount', 'unit%20price%7Ceur')
    """
    return name.translate(_RESERVED)
