"""The interface every crowd provider implements.

The database is the source of truth for answers; a provider only mirrors decisions (publish, approve,
reject, bonus, block) to the outside service and says where a worker goes when they are done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from annotate.models import Assignment, Batch, CrowdWorker


class ProviderError(Exception):
    """An outside crowd service refused or failed a call; the message says which call and why."""


Reply = Any
"""A provider's answer to a decision (decoded JSON; None: nothing was called), kept by the audit trail."""


@dataclass
class BulkApproval:
    """What a provider did with many approvals sent at once: per assignment pk, approved there, sent but not
    confirmed yet (the next sync records it), or refused (with why)."""

    approved: set[int] = field(default_factory=set)
    pending: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    reply: Reply = None


@dataclass
class BulkBonus:
    """What a provider did with many bonuses sent at once: per assignment pk, paid (with the reply to the pay
    call that paid it) or not paid (with why: refused, or a pay call without an answer that a later bonus of
    the assignment confirms)."""

    paid: dict[int, Reply] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


@dataclass
class SyncResult:
    """What a sync with the provider changed, for the requester's message."""

    seen: int = 0
    updated: int = 0
    pushed: int = 0
    verified: int = 0
    unknown: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RemoteAssignment:
    """An assignment as the provider holds it; `batch_sync` decides what to do with it."""

    SUBMITTED: ClassVar[str] = "submitted"
    APPROVED: ClassVar[str] = "approved"
    REJECTED: ClassVar[str] = "rejected"

    external_id: str
    status: str  # SUBMITTED, APPROVED, REJECTED, or the provider's own word for anything else
    feedback: str = ""
    worker_id: str = ""
    hit_id: str = ""


class CrowdProvider:
    """Default behaviour: a provider with no outside API (everything is recorded locally only)."""

    name: ClassVar[str] = ""
    # Whether a worker's arrival carries ids anyone could type (MTurk's query string): such assignments
    # start unverified and count only once `remote_assignment` or `remote_assignments` confirms them.
    confirms_later: ClassVar[bool] = False

    def check_publishable(self, batch: Batch) -> None:
        """Raise ProviderError naming the missing setting when `batch` cannot be published."""

    def publish(self, batch: Batch) -> Reply:
        """Make the batch's tasks available to workers (idempotent: a retry creates nothing twice)."""

    def pause(self, batch: Batch) -> Reply:
        """Stop new workers from taking tasks."""

    def cancel(self, batch: Batch) -> Reply:
        """Stop the batch for good."""

    def approve(self, assignment: Assignment, feedback: str) -> Reply:
        """Mirror an approval (pays the worker where the provider pays)."""

    def approve_many(self, assignments: Sequence[Assignment], feedback: str) -> BulkApproval | None:
        """Approve many in one call where the provider has one; None: approve them one by one."""
        return None

    def reject(self, assignment: Assignment, feedback: str, category: str = "") -> Reply:
        """Mirror a rejection; `feedback` is never empty; `category` is Prolific's rejection category."""

    def bonus(self, assignment: Assignment, amount: Decimal, reason: str) -> Reply:
        """Pay an extra `amount` for `assignment`."""

    def bonus_many(self, assignments: Sequence[Assignment], amount: Decimal, reason: str) -> BulkBonus | None:
        """Pay `amount` to each of `assignments` (one batch; their BonusPayment records are pending) in one
        payment where the provider has one; None: pay them one by one."""
        return None

    def block(self, worker: CrowdWorker, reason: str) -> Reply:
        """Stop `worker` from working for this requester."""

    def unblock(self, worker: CrowdWorker) -> Reply:
        """Let a blocked `worker` work for this requester again."""

    def completion_url(self, batch: Batch) -> str | None:
        """Where a worker goes after their last task; None = our own finished page."""
        return None

    def remote_assignments(self, batch: Batch) -> Iterator[RemoteAssignment]:
        """Every assignment the provider holds for the batch (none for providers without an API)."""
        return iter(())

    def remote_assignment(self, assignment: Assignment) -> RemoteAssignment | None:
        """The provider's record of `assignment`, or None when it has none (yet) or cannot say."""
        return None
