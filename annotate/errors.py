"""Errors the crowd flow reports to a worker or requester; each carries the HTTP status its page uses."""

from __future__ import annotations

from typing import Any


class AnnotateError(Exception):
    """Base: a clear message for a person, and the 4xx status a view answers with."""

    status: int = 400


class InvalidAnswer(AnnotateError):
    """The submitted answer breaks a rule of the protocol (message names the field)."""

    status = 400


class BatchClosed(AnnotateError):
    status = 409


class TaskFull(AnnotateError):
    status = 409


class AlreadyDone(AnnotateError):
    status = 409


class AssignmentClosed(AnnotateError):
    status = 409


class AssignmentExpired(AnnotateError):
    status = 410


class WorkerBlocked(AnnotateError):
    status = 403


class WrongProvider(AnnotateError):
    """A worker of one provider reaching a task offered through another."""

    status = 403


class ReviewError(AnnotateError):
    """A requester action that does not apply (wrong state, missing feedback)."""

    status = 400


class ImportUnitsError(AnnotateError):
    """A unit folder or file that cannot be imported; the message names it."""

    status = 400


class DuplicateVerification(AnnotateError):
    """A batch already has a verification batch that is not cancelled; `existing` is that batch (typed Any:
    this module imports no model)."""

    status = 409

    def __init__(self, message: str, *, existing: Any) -> None:
        super().__init__(message)
        self.existing = existing


class QualificationRequired(AnnotateError):
    """A worker reaching a batch whose qualification test they have not passed (or have failed)."""

    status = 403
