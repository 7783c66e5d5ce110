"""One predict request, whatever it came over: the steps HTTP and gRPC share.

A protocol (:mod:`tideline.pods.server.protocols`: KServe V1, the Open Inference
Protocol over HTTP, or over gRPC in :mod:`tideline.pods.server.oip_grpc`) reads
the request and writes the answer; between the two, every request takes the same
steps here: the model and version checked, the track chosen (or the request
forwarded to a canary in another image, or mirrored to a shadow), the data plane's
answer (:class:`~tideline.pods.server.dataplane.DataPlane`: routing, fallback, the
prediction log), the client's ids bound, and the answer counted in metrics and in
the servers' stats. A refusal is an :class:`~tideline.pods.server.errors.RequestError`
answered with its HTTP status (the gRPC service maps it to a status code).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from tideline.pods.server.dataplane import DataPlane, Result
from tideline.pods.server.errors import ForwardFailed, RequestError, UnsupportedMediaType
from tideline.pods.server.protocols import Answer, Protocol

log = logging.getLogger("tideline.server")

# a request's headers that say how to read its body: passed on to a canary with it
FORWARDED = ("content-encoding", "inference-header-content-length", "x-tideline-unknown-features")


def media_type(content_type: str | None) -> None:
    """A body that says it is text or a form upload is not JSON: 415 (a missing type, JSON,
    or curl's default form type with a JSON body are read as JSON)."""
    if content_type:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind.startswith(("text/", "multipart/")):
            raise UnsupportedMediaType(f"content-type {kind} is not JSON: send application/json")


class Predictor:
    """The predict and infer requests of one data plane, over any protocol."""

    def __init__(self, dp: DataPlane) -> None:
        self.dp = dp
        self._warned = 0.0  # when a failed forward was last logged (a storm: a line per 10 s)

    def finish(self, route: str, result: Result | None, started: float, status: int,
               track: str) -> None:  # fmt: skip
        """Count an answer: in metrics, and in the servers' stats by its status (every answer
        counts, refusals and failures too: see :class:`~.dataplane.TrackStats`). An answer
        with no result counts on the track the request was forwarded for, else stable."""
        dp = self.dp
        seconds = time.perf_counter() - started
        if result is None:
            dp.metrics.request(route, "none", status, seconds)
            dp.observe(track, seconds, 0, status)
        else:
            n = len(result.predictions)
            dp.metrics.request(route, result.tracks[0], status, seconds, n)
            dp.observe(result.tracks[0], seconds, n, status, result.fallback, result.failed)

    def forward_failed(self, e: ForwardFailed, track: str) -> None:
        if not e.counted_there:
            self.dp.forward_failed(track)
        now = time.monotonic()
        if now - self._warned >= 10.0:
            self._warned = now
            log.warning("%s (%s): answering from stable", e.message, track)

    async def predict(
        self,
        proto: Protocol,
        name: str,
        raw: Any,
        headers: Mapping[str, str],
        url_path: str,
        version: str | None = None,
    ) -> Answer:
        """A predict request's answer: (status, body, headers). ``raw`` is the request as
        the protocol reads it (a body, or a gRPC message); ``url_path`` the HTTP route it
        takes (a canary in another image is called there)."""
        dp = self.dp
        started = time.perf_counter()
        forced: str | None = None
        try:
            dp.check_model(name)
            if version is not None:
                dp.check_version(version)
            media_type(headers.get("content-type"))
            key = headers.get("x-tideline-key")
            forced = dp.trusted_track(
                headers.get("x-tideline-track"), headers.get("x-tideline-forwarded")
            )
            stable = dp.stable
            # with no version loaded, the spec's features read the rows
            schema = stable.schema if stable is not None else dp.spec_schema
            req = proto.decode(raw, headers, schema, stable is not None)
            target = dp.wants_forward(key) if forced is None else None
            forwarded: tuple[str, bytes, dict[str, str]] | None = None
            if target:  # the body, and the headers that say how to read it, for the canary
                passed = {k: headers[k] for k in FORWARDED if k in headers}
                forwarded = proto.forwarded(req, raw, url_path, passed)
            if target == "canary":
                assert forwarded is not None
                try:
                    content, back = await dp.forward(*forwarded[:2], "canary", forwarded[2])
                    return proto.canary_answer(req, content, back)
                except ForwardFailed as e:
                    self.forward_failed(e, "canary")
                    dp.metrics.fallbacks.labels(reason="canary-unreachable").inc()
            unknown_ok = headers.get("x-tideline-unknown-features", "").lower() == "ignore"
            if dp.guarded:  # a team's model is loaded: its calls run in a thread, waited for
                result = await dp.predict_guarded(
                    req.rows, key=key, ids=req.ids, forced_track=forced, path=proto.path,
                    raw=req.logged, X=req.X, unknown_ok=unknown_ok,
                )  # fmt: skip
            else:  # the built-ins: on the event loop (microseconds; a thread hop costs more)
                result = dp.predict(
                    req.rows, key=key, ids=req.ids, forced_track=forced, path=proto.path,
                    raw=req.logged, X=req.X, unknown_ok=unknown_ok,
                )  # fmt: skip
            if req.ids is not None and forced != "shadow":
                # a client's own ids are bound to this prediction before it is answered (409
                # when another holds one); a forwarded shadow's belong to the stable answer
                await dp.log.bind(dp.r, result.slot)
            if target == "shadow":
                assert forwarded is not None
                asyncio.get_running_loop().create_task(self.shadow(*forwarded))
        except RequestError as e:
            status = proto.status(e)
            self.finish(proto.route, None, started, status, forced or "stable")
            return status, orjson.dumps({"error": e.message}), {}
        except Exception as e:  # a bug: that answer, counted (a team's model that raises is
            # answered by the data plane's fallback, or a 503 naming its error)
            log.exception("predicting failed")
            self.finish(proto.route, None, started, 500, forced or "stable")
            return 500, orjson.dumps({"error": f"internal error: {type(e).__name__}"}), {}
        self.finish(proto.route, result, started, 200, forced or "stable")
        return proto.answer(req, result, dp.name)

    async def shadow(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            await self.dp.forward(path, body, "shadow", headers)
        except ForwardFailed as e:
            self.forward_failed(e, "shadow")
