"""The health summary: what the monitor writes every analysis interval and the operator reads.

One declared, typed shape (msgspec Structs, camelCase on the wire) shared
by both sides, so neither picks a dict apart by hand; the freshness rule
lives here too (:meth:`Health.fresh`). Stored as JSON at
``tideline:{<ns>/<model>}:health``.

Quality comes in two kinds:

* ``tracks`` and ``versions``: what each traffic track (stable, canary,
  shadow) and each served version scored on the labels of its *own*
  predictions. Good for dashboards; not for comparing versions, since two
  versions served at different times saw different traffic.
* ``quality``: the evidence behind automatic decisions. Every candidate
  (``served``, ``lastGood``, ``latest``, ``recent``, ``canary``,
  ``baseline``, and ``constant``, the best constant answer) is scored on the
  *same* window of recent labelled samples, and compared with the served
  version on them by a paired confidence sequence (:mod:`tideline.evidence`),
  valid however often it is read. ``recent`` is the newest version of the
  stable revision served on ``minSamples`` labels of its own answers, served
  or not now: a learner that publishes every few seconds replaces a version
  before its labels come, so the served one alone would never be proven. It
  is compared with ``lastGood`` and ``constant`` too (:attr:`Candidate.versus`).
  While a rollback pins the served version, ``pin`` says how the labels that
  came since agree with it, and ``latest`` is compared with it on those labels
  alone (:attr:`Candidate.since_pin`).

Each version is scored only on labels it has not learned (labels are training
data too: a version that memorises would otherwise be proven on its own
training data); a canary is judged by what it answered when each sample came
(its *track*), so the evidence grows across its versions.

Summaries written before ``recent``, ``versus``, ``since_pin``, ``pin`` and
``vs_served_whole`` existed decode without them.

Examples
--------
>>> h = Health(ts=10.0, model="default/fraud")
>>> decode(encode(h)).fresh(now=12.0, interval=1.0), h.fresh(now=14.0, interval=1.0)
(True, False)
>>> decode(b"not json") is None
True
"""

from __future__ import annotations

import msgspec


class _Struct(msgspec.Struct, rename="camel", kw_only=True):
    pass


class _Sparse(_Struct, omit_defaults=True):
    """Figures that are absent until measured (no label yet: no accuracy) are left out."""


class _Metrics(_Sparse):
    """Quality on labels (see :func:`tideline.evaluate.scores`): accuracy, log loss and
    calibration (binary; multiclass: of the top class), or MAE, RMSE and the squared error
    relative to the best constant's (regression); a
    binary model's AUC (with both classes in the window) and the mean predicted probability
    against the share of positive labels."""

    accuracy: float | None = None
    logloss: float | None = None
    calibration: float | None = None
    auc: float | None = None
    mean_predicted: float | None = None
    mean_observed: float | None = None
    mae: float | None = None
    rmse: float | None = None
    relative_mse: float | None = None  # regression: MSE over the labels' variance (1 - R^2)


class TrackHealth(_Metrics):
    """One traffic track: the quality of its own labelled predictions, and its servers' counters.

    ``labelled`` and ``predictions`` count since the monitor started; ``window`` is
    the labelled predictions the quality figures are computed on.

    The servers' counters (``requests``, ``errors``, ``refused``, ``shed``,
    ``fallbacks``; what each counts: :class:`tideline.pods.server.dataplane.TrackStats`)
    are *recent*, not totals: what the track's servers counted over the last
    ``counted_over`` seconds, the window ``error_rate`` (``errors / requests``)
    is computed on (:class:`tideline.monitoring.counters.ServerCounters`: an analysis
    interval or more, reaching back to 100 requests, ten minutes or six intervals
    at most). So the request count a reader compares with a minimum is the one
    the rate rests on, and a server that starts failing after a million good
    answers shows it within an interval. ``error_rate`` is None when the window holds no request.
    (Summaries written before ``refused``, ``shed`` and ``counted_over`` existed
    decode with 0 and None; their ``requests`` and ``errors`` were totals.)

    ``recall`` (multiclass): each class's recall on the window, by class name - the share
    of its labelled rows the track answered with it; a class with no labelled row in the
    window is left out. At most the model's classes (``spec.model.classes``).
    """

    revision: str | None = None
    version: int | None = None
    labelled: int = 0
    predictions: int = 0
    window: int = 0
    requests: int = 0
    errors: int = 0
    refused: int = 0
    shed: int = 0
    fallbacks: int = 0
    counted_over: float | None = None  # seconds the servers' counters and error_rate cover
    error_rate: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    recall: dict[str, float] = {}


class VersionHealth(_Metrics):
    """One version, on the labels of the predictions it served."""

    labelled: int = 0


class Comparison(_Struct):
    """A candidate against the served version on the same samples.

    ``difference`` is the candidate's quality minus the served version's:
    accuracy points for ``binary`` and ``multiclass``, the relative reduction of the squared
    error for ``regression`` (0.05: 5 % lower MSE). ``lower`` and ``upper``
    bound it at the confidence sequence's level, at every look.
    """

    samples: int
    difference: float
    lower: float
    upper: float

    def better(self, margin: float = 0.0) -> bool:
        """The candidate is significantly better than served, by more than ``margin``."""
        return self.lower > margin

    def worse(self, margin: float = 0.0) -> bool:
        """The candidate is significantly worse than served, by more than ``margin``."""
        return self.upper < -margin


class Candidate(_Sparse):
    """A version scored on the common window (``revision`` and ``version`` None: the constant)."""

    revision: str | None = None
    version: int | None = None
    samples: int = 0
    accuracy: float | None = None
    logloss: float | None = None
    rmse: float | None = None
    served_labelled: int = 0  # labels of the predictions it made while served
    # against the served version on the samples neither has learned (a canary: its track
    # against the served track, each sample as the two answered it when it came)
    vs_served: Comparison | None = None
    # on the samples this one has not learned, the served version scored on all of them (its
    # own training data flatters it): what a rollback reads (``lastGood``, ``baseline``)
    vs_served_whole: Comparison | None = None
    # against other roles on the same samples (this candidate minus that role): the
    # ``recent`` candidate's proof reads ``lastGood`` and ``constant``
    versus: dict[str, Comparison] = {}
    # ``latest`` against the pinned served version on the labels that came after the pin only
    since_pin: Comparison | None = None


class PinEvidence(_Sparse):
    """How the labels agree with the version a rollback pinned, before the pin and since.

    ``error_before`` is the pinned version's error on the common window when the
    monitor saw the pin (binary, multiclass: 1 - accuracy; regression: mean squared error),
    ``error_since`` its error on the ``samples`` labels that came since. The
    pinned version does not learn: a rise is the labels' (they lie, or the
    world changed), not the model's.
    """

    at: float | None = None  # the pin's time, as the pointers say (``pinAt``; None: not said)
    version: int | None = None
    samples: int = 0
    error_before: float | None = None
    error_since: float | None = None


class Quality(_Struct):
    """Every candidate on the same recent labelled samples (see the module docs)."""

    window: int = 0  # labelled samples in the common window now
    source: str = "feedback"  # feedback (labels of served predictions) or samples
    alpha: float = 0.05
    candidates: dict[str, Candidate] = {}
    pin: PinEvidence | None = None  # while a rollback pins the served version

    def get(self, role: str) -> Candidate | None:
        return self.candidates.get(role)


class FeatureDrift(_Struct):
    method: str = "psi"
    scores: dict[str, float] = {}
    detected: list[str] = []


class PredictionDrift(_Struct):
    method: str = "psi"
    score: float = 0.0
    detected: bool = False


class ConceptEvent(_Struct):
    ts: float
    method: str
    revision: str | None = None
    version: int | None = None


class ConceptDrift(_Struct):
    """Concept drift (the error went up): ``detected`` from an event until it clears.

    ``late`` counts labels that came after the detector had gone past their
    prediction time (errors reach it in prediction order): scored, not fed to it.
    """

    method: str = "adwin"
    detected: bool = False
    last: ConceptEvent | None = None
    count: int = 0
    late: int = 0


class Drift(_Struct):
    features: FeatureDrift = msgspec.field(default_factory=FeatureDrift)
    predictions: PredictionDrift = msgspec.field(default_factory=PredictionDrift)
    concept: ConceptDrift = msgspec.field(default_factory=ConceptDrift)

    def summary(self) -> str:
        """What drifts, in a few words: ``concept``, ``features: amount,hour``, ``predictions``."""
        parts = []
        if self.concept.detected:
            parts.append("concept")
        if self.features.detected:
            parts.append("features: " + ",".join(self.features.detected))
        if self.predictions.detected:
            parts.append("predictions")
        return "; ".join(parts)


class LabelLag(_Struct):
    p50: float
    p95: float


class Maturity(_Sparse):
    """With ``spec.learning.labelDefault``: how far the predictions have their outcomes
    (labelled, or the default given ``after`` their time): a label of a later one waits."""

    after: float = 0.0  # seconds a prediction waits for its label before the default
    to: float | None = None  # the predictions made up to this time are mature (None: none yet)
    lag_seconds: float | None = None  # now - to: after, and how far behind the labels' reading is
    held: int = 0  # labelled rows waiting for their predictions to be mature
    early: int = 0  # rows scored before they were mature, for want of room to hold them


class LogCapacity(_Sparse):
    """What the prediction log needs in Redis at this rate, and what Redis has.

    ``need = rate x window x bytes_per_prediction``, ``window`` being
    ``labelWindow`` and a grace (:func:`tideline.predlog.retention`). It fits
    when Redis's memory without the log as it is now, plus what the log needs,
    stays under 90 % of the limit (``maxmemory``, or the host's memory when
    none is set).
    """

    rate: float = 0.0  # predictions logged a second (smoothed over about a minute)
    window: float = 0.0  # seconds of log kept
    bytes_per_prediction: float | None = None  # measured on the log as it is
    need: float | None = None  # bytes the log needs at this rate, window full
    held: float = 0.0  # bytes the log holds now
    used: float = 0.0  # Redis's used memory
    limit: float | None = None
    limit_source: str = "maxmemory"  # or "system" when no maxmemory is set
    fits: bool | None = None  # None until measured
    # spec.learning.history: the labelled history's bytes, at the label rate for its window
    history_window: float = 0.0  # seconds kept (0: none)
    label_rate: float = 0.0  # joins a second (labels and defaults, smoothed)
    bytes_per_sample: float | None = None  # measured on the history as it is
    history_need: float | None = None  # bytes it needs at this rate, window full
    history_held: float = 0.0  # bytes it holds now

    def summary(self) -> str:
        """The condition's message: the formula with its numbers."""
        if self.need is None or self.bytes_per_prediction is None:
            return "not measured yet: no prediction logged"
        limit = _bytes(self.limit) if self.limit else "unknown"
        history = ""
        if self.history_need is not None and self.bytes_per_sample is not None:
            history = (
                f", and {self.label_rate:,.0f} labels/s x {self.history_window:,.0f} s x "
                f"{self.bytes_per_sample:,.0f} B = {_bytes(self.history_need)} of history "
                f"(holds {_bytes(self.history_held)} now)"
            )
        return (
            f"{self.rate:,.0f} predictions/s x {self.window:,.0f} s x "
            f"{self.bytes_per_prediction:,.0f} B = {_bytes(self.need)} of log "
            f"(holds {_bytes(self.held)} now){history}; Redis uses {_bytes(self.used)} of "
            f"{limit} ({self.limit_source})"
        )


def _bytes(n: float) -> str:
    """
    >>> _bytes(1536), _bytes(3.2e9)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Health(_Struct):
    ts: float
    model: str = ""
    tracks: dict[str, TrackHealth] = {}
    versions: dict[str, VersionHealth] = {}  # "revision:version" -> its quality
    drift: Drift = msgspec.field(default_factory=Drift)
    label_lag: LabelLag | None = None
    maturity: Maturity | None = None
    throughput: dict[str, float] = {}
    quality: Quality | None = None
    log: LogCapacity | None = None

    def fresh(self, now: float, interval: float) -> bool:
        """Written within the last three analysis intervals: decisions may rest on it."""
        return now - self.ts <= 3 * interval

    def track(self, name: str) -> TrackHealth:
        return self.tracks.get(name) or TrackHealth()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Health)


def encode(health: Health) -> bytes:
    return _encoder.encode(health)


def decode(raw: bytes | str | None) -> Health | None:
    """The summary, or None when there is none or it is not one (never raises)."""
    if not raw:
        return None
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
