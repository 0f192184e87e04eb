"""Every write of the crowd platform (HackSoft style: keyword-only `<entity>_<action>`, atomic).

Callers import from here; the modules split the writes by what they act on.
"""

from annotate.services.assignments import (
    AUTO_REJECT_FEEDBACK,
    WORDS_MAX,
    SubmitOutcome,
    annotation_submit,
    answer_words_clean,
    assignment_accept,
    assignment_expire_overdue,
    assignment_return,
    assignment_verify,
)
from annotate.services.batches import (
    GoldAnswer,
    batch_cancel,
    batch_create,
    batch_export_record,
    batch_pause,
    batch_publish,
    batch_sync,
)
from annotate.services.crowd_workers import (
    crowd_worker_block,
    crowd_worker_create,
    crowd_worker_get_or_create,
    crowd_worker_unblock,
    random_worker_id,
)
from annotate.services.review import (
    ReviewOutcome,
    assignment_approve,
    assignment_reject,
    assignment_send_bonus,
    assignments_review,
    batch_approve_rest,
    batch_refresh_state,
)

__all__ = [
    "AUTO_REJECT_FEEDBACK",
    "WORDS_MAX",
    "GoldAnswer",
    "ReviewOutcome",
    "SubmitOutcome",
    "annotation_submit",
    "answer_words_clean",
    "assignment_accept",
    "assignment_approve",
    "assignment_expire_overdue",
    "assignment_reject",
    "assignment_return",
    "assignment_send_bonus",
    "assignment_verify",
    "assignments_review",
    "batch_approve_rest",
    "batch_cancel",
    "batch_create",
    "batch_export_record",
    "batch_pause",
    "batch_publish",
    "batch_refresh_state",
    "batch_sync",
    "crowd_worker_block",
    "crowd_worker_create",
    "crowd_worker_get_or_create",
    "crowd_worker_unblock",
    "random_worker_id",
]
