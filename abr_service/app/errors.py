"""The decision service's domain errors: what the engine, the model store and the runner refuse.

They carry no HTTP: the app maps each class to a status code and a body in one table
(:data:`streambed.abr_service.app.main.ERROR_STATUS`), as httpx maps transport errors at its
boundary. ``detail`` is the message a client reads; :class:`InvalidRequest` also lists each
wrong field, which the app answers in the shape of FastAPI's own validation errors.

::

    ServiceError
    ├── InvalidRequest      a field of the request is wrong (named, with its path in the body)
    ├── InvalidName         a model or algorithm name the store will not take
    ├── ModelRejected       an upload that is not a servable checkpoint
    ├── UnknownAlgorithm    no such algorithm (the detail lists the valid ones)
    ├── UnknownVideo        no such video (the detail lists the valid ones)
    ├── UnknownSession      no such session
    ├── UnknownModel        no such model or version
    ├── NoActiveModel       a learned algorithm that no model serves yet
    ├── LadderMismatch      the model serving an algorithm has another number of levels
    ├── SessionConflict     the session plays another video
    ├── ModelUnservable     a stored model that cannot be loaded now
    ├── NothingToRollBack   a rollback with no earlier model, or an ambiguous one
    ├── StorageFailed       the disk refused a write
    ├── Overloaded          too many decisions running or queued: retry later
    ├── NotAuthenticated    a model change without a bearer token
    └── NotAllowed          a wrong token, or model changes disabled
"""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """A request the service refuses; ``detail`` says why, to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class FieldProblem:
    """One wrong field: ``loc`` is its path in the request body, ``msg`` why."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class InvalidRequest(ServiceError):
    """Fields of a request that are missing, out of range or inconsistent."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = problems

    @classmethod
    def field(cls, loc: tuple[str | int, ...], msg: str) -> InvalidRequest:
        return cls([FieldProblem(loc, msg)])


class InvalidName(ServiceError):
    """A model or algorithm name the store will not take."""


class ModelRejected(ServiceError):
    """An uploaded checkpoint that does not load, does not fit the ladder, or is empty."""


class UnknownAlgorithm(ServiceError):
    """No algorithm of that name (the detail lists the valid ones)."""


class UnknownVideo(ServiceError):
    """No video of that name in the catalogue (the detail lists the valid ones)."""


class UnknownSession(ServiceError):
    """No session of that id (never started, ended, or expired)."""


class UnknownModel(ServiceError):
    """No stored model of that name, or no such version of it."""


class NoActiveModel(ServiceError):
    """A learned algorithm that no model serves yet."""


class LadderMismatch(ServiceError):
    """The model serving an algorithm was trained for another number of levels."""


class SessionConflict(ServiceError):
    """A session asked to do what its state forbids (play another video)."""


class ModelUnservable(ServiceError):
    """A stored model that cannot be loaded to serve now."""


class NothingToRollBack(ServiceError):
    """A rollback of a model that serves nothing, serves several algorithms unnamed, or has no
    earlier model behind it."""


class StorageFailed(ServiceError):
    """The model store could not write a file."""


class Overloaded(ServiceError):
    """Too many decisions running or queued; retry after ``retry_after_s``."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class NotAuthenticated(ServiceError):
    """A model change without a bearer token."""


class NotAllowed(ServiceError):
    """A model change with a wrong token, or while model changes are disabled."""
