"""A model that cannot be loaded, said where people look: the operator, ``kubectl describe``, the log.

A team's own learner (``algorithm: custom`` or ``river``) is imported in the model's pods,
from their image. When it cannot be (:class:`tideline.algorithms.external.ModelLoadError`:
``ImportFailed``, ``MissingMethod``, ``BadParams`` and the error's last line) - or a
learner's warm start cannot be had (``WarmStartFailed``, :mod:`tideline.pods.storage`) - the
component that tried

* reports it in the model's Redis (:class:`tideline.contracts.ModelFault` in
  ``Keys.faults(revision)``, one field per component): the operator shows it as the
  ``ModelLoaded`` condition, aborts a canary that has it, and calls a stable revision that
  has it Degraded;
* writes the same line to the container's termination message file
  (``/dev/termination-log``, or ``$TIDELINE_TERMINATION_LOG``): ``kubectl describe pod``
  shows it as the last state's message;
* logs it, and exits with :data:`EXIT_STATUS` (4): a crash loop, as a broken image is in
  Kubernetes - with a word.

A component that starts and loads the model clears its field (:func:`loaded`). A server
that cannot load a version published after it started keeps serving what it holds and
reports the fault the same way, without exiting (:class:`VersionFaults`); it clears it
when it loads a version of that revision.

Redis is told on a best-effort basis: a fault that cannot be written (Redis unreachable)
is still logged, written to the termination message and exited on.

Examples
--------
>>> import tempfile
>>> from tideline.algorithms.external import ModelLoadError
>>> from tideline.contracts import Keys
>>> def broken():
...     raise ModelLoadError("ImportFailed", "ModuleNotFoundError: No module named 'teams'")
>>> with tempfile.TemporaryDirectory() as d:
...     try:
...         loaded(None, Keys("ns", "m"), "learner", "5f3a", broken,
...                termination_log=f"{d}/termination-log")
...     except StartFailed as e:
...         print(e)
...     print(open(f"{d}/termination-log").read(), end="")
learner of revision 5f3a: ModuleNotFoundError: No module named 'teams'
ImportFailed: ModuleNotFoundError: No module named 'teams'
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from tideline.algorithms.external import ModelLoadError
from tideline.contracts import MAX_FAULT_MESSAGE, Keys, ModelFault

log = logging.getLogger("tideline.faults")

EXIT_STATUS = 4  # the model cannot be loaded (2: a bad manifest or flag, 3: Redis, 1: a run failed)
TERMINATION_LOG_ENV = "TIDELINE_TERMINATION_LOG"
TERMINATION_LOG = "/dev/termination-log"  # the kubelet's default terminationMessagePath
MAX_TERMINATION_BYTES = 4096  # what the kubelet reads of the file

T = TypeVar("T")


class StartFailed(Exception):
    """A component that could not load its model at start: reported (Redis, termination
    message, log), to exit with :data:`EXIT_STATUS`."""

    def __init__(self, fault: ModelFault) -> None:
        super().__init__(fault.summary())
        self.fault = fault


def fault_of(error: ModelLoadError, component: str, revision: str, at: float) -> ModelFault:
    """The fault a component reports for ``error`` (its message cut to
    :data:`tideline.contracts.MAX_FAULT_MESSAGE` characters)."""
    message = error.message
    if len(message) > MAX_FAULT_MESSAGE:
        message = message[: MAX_FAULT_MESSAGE - 3] + "..."
    return ModelFault(error.reason, message, component, revision, at)


def _kept(fault: ModelFault, raw: bytes | None) -> ModelFault:
    """``fault``, with the time of the same fault reported before (a crash loop's)."""
    before = ModelFault.decode(raw)
    if before is not None and before.same(fault):
        return ModelFault(fault.reason, fault.message, fault.component, fault.revision, before.at)
    return fault


def report(r: Any, keys: Keys, fault: ModelFault) -> bool:
    """Write ``fault`` in the revision's faults hash; False when Redis could not be told
    (no client, or an error: logged)."""
    if r is None:
        return False
    key = keys.faults(fault.revision)
    try:
        fault = _kept(fault, r.hget(key, fault.component))
        r.hset(key, fault.component, fault.encode())
    except (redis.RedisError, OSError) as e:
        log.warning("the fault was not written to Redis (%s): %s", e, fault.summary())
        return False
    return True


def clear(r: Any, keys: Keys, revision: str, component: str) -> None:
    """The component loads the revision's model: its fault, if any, goes (best effort)."""
    if r is None:
        return
    try:
        r.hdel(keys.faults(revision), component)
    except (redis.RedisError, OSError) as e:
        log.debug("fault of %s of revision %s not cleared: %s", component, revision, e)


def termination_message(text: str, path: str | None = None) -> bool:
    """Write ``text`` (one line) where the kubelet reads the container's termination message.

    ``path``: else ``$TIDELINE_TERMINATION_LOG``, else ``/dev/termination-log`` - that one
    only where it exists (the kubelet mounts it in every container; elsewhere, a process
    run by hand as root must not make one). False when nothing was written.
    """
    chosen = path or os.environ.get(TERMINATION_LOG_ENV)
    target = Path(chosen or TERMINATION_LOG)
    if chosen is None and not target.exists():
        return False
    data = (text.replace("\n", " ") + "\n").encode(errors="replace")[:MAX_TERMINATION_BYTES]
    try:
        target.write_bytes(data)
    except OSError as e:
        log.debug("no termination message written to %s: %s", target, e)
        return False
    return True


def loaded(
    r: Any,
    keys: Keys,
    component: str,
    revision: str,
    make: Callable[[], T],
    *,
    clock: Callable[[], float] = time.time,
    termination_log: str | None = None,
) -> T:
    """``make()``, which loads the model (a :class:`LearnerProcess`, or a probe with
    :func:`tideline.algorithms.make_learner`); when it cannot, the fault is reported (Redis,
    the termination message, the log) and :class:`StartFailed` raised, to exit with
    :data:`EXIT_STATUS`. When it can, the component's fault of the revision is cleared.
    ``r``: a Redis client, or None when there is none to tell."""
    try:
        out = make()
    except ModelLoadError as e:
        fault = fault_of(e, component, revision, clock())
        log.error("the model cannot be loaded (%s): %s", fault.reason, fault.summary())
        report(r, keys, fault)
        termination_message(str(e), termination_log)
        raise StartFailed(fault) from e
    clear(r, keys, revision, component)
    return out


class VersionFaults:
    """A running server's faults: versions published after it started that it cannot load
    (it keeps serving what it holds). Each (revision, version) is reported once - and not
    tried again - and a revision's fault is cleared when one of its versions loads.

    The server's ``ModelVersions`` holds one, and calls it where it loads a version::

        if self.faults.failed_before(revision, version):
            return current
        try:
            learner, meta = await asyncio.to_thread(open_version, self.sealing, blob, key)
        except ModelLoadError as e:
            await self.faults.failed(r, revision, version, e)
            return current
        await self.faults.loaded(r, revision)
    """

    def __init__(
        self, keys: Keys, component: str = "server", clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.component = component
        self.clock = clock
        self._failed: set[tuple[str, int]] = set()
        self._reported: set[str] = set()  # revisions with a fault this process reported

    def failed_before(self, revision: str, version: int) -> bool:
        """Whether loading this version failed already (it is not tried again)."""
        return (revision, version) in self._failed

    async def failed(self, r: Any, revision: str, version: int, error: ModelLoadError) -> None:
        """Report that ``version`` of ``revision`` cannot be loaded (once)."""
        if (revision, version) in self._failed:
            return
        if len(self._failed) >= 1024:  # bounded: a version stays refused while remembered
            self._failed.clear()
        self._failed.add((revision, version))
        fault = fault_of(error, self.component, revision, self.clock())
        log.error("%s v%d cannot be loaded (%s), still serving what is held: %s",
                  revision, version, fault.reason, fault.summary())  # fmt: skip
        key = self.keys.faults(revision)
        try:
            fault = _kept(fault, await r.hget(key, self.component))
            await r.hset(key, self.component, fault.encode())
            self._reported.add(revision)
        except (redis.RedisError, OSError) as e:
            log.warning("the fault was not written to Redis (%s): %s", e, fault.summary())

    async def loaded(self, r: Any, revision: str) -> None:
        """A version of ``revision`` loaded: the fault this process reported for it goes."""
        if revision not in self._reported:
            return
        try:
            await r.hdel(self.keys.faults(revision), self.component)
            self._reported.discard(revision)
        except (redis.RedisError, OSError) as e:
            log.debug("fault of revision %s not cleared: %s", revision, e)
