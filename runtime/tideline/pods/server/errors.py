"""What a request can be refused for, as the HTTP status each protocol answers it with.

The data plane and the protocol decoders raise these; the routes turn one
into an answer in one place (:meth:`tideline.pods.server.protocols.Protocol.status`:
the Open Inference Protocol answers 400 where KServe V1 answers 422).
"""

from __future__ import annotations


class RequestError(Exception):
    """A request refused; ``status`` is the HTTP code KServe V1 answers it with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    status = 400


class UnsupportedMediaType(RequestError):
    status = 415


class Unauthorized(RequestError):
    status = 401


class ModelNotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class TooLarge(RequestError):
    status = 413


class Unprocessable(RequestError):
    status = 422


class Unavailable(RequestError):
    status = 503


class ForwardFailed(Unavailable):
    """A call forwarded to a canary in another image that got no 200: ``answered`` is the
    status the canary answered, None when none came (refused, reset, timed out)."""

    def __init__(self, message: str, answered: int | None) -> None:
        super().__init__(message)
        self.answered = answered

    @property
    def counted_there(self) -> bool:
        """Whether the canary's servers counted it themselves (a 5xx they answered)."""
        return self.answered is not None and self.answered >= 500
