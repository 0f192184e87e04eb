"""MTurk answers queued on the `stub` fixture's botocore Stubber, shared by the MTurk tests."""

from __future__ import annotations

from typing import Any

from botocore.stub import ANY, Stubber

from annotate.models import Batch

XSD = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"


def hit_answer(hit_id: str) -> dict[str, Any]:
    """MTurk's answer to CreateHITWithHITType."""
    return {"HIT": {"HITId": hit_id, "HITTypeId": "TYPE1"}}


def expect_publish(
    stub: Stubber, batch: Batch, requirements: list[dict[str, Any]] | None = None
) -> list[str]:
    """Queue what publishing `batch` asks MTurk, checking each request: one HIT type (with the qualification
    `requirements`, if any), then one external-question HIT per task, HIT<position>. Returns the HIT ids."""
    hit_type: dict[str, Any] = {
        "AutoApprovalDelayInSeconds": ANY,
        "AssignmentDurationInSeconds": 600,
        "Reward": "0.10",
        "Title": batch.title,
        "Keywords": ANY,
        "Description": ANY,
    }
    if requirements is not None:
        hit_type["QualificationRequirements"] = requirements
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"}, hit_type)
    ids = []
    for task in batch.tasks.order_by("position"):
        hit_id = f"HIT{task.position}"
        question = (
            f'<ExternalQuestion xmlns="{XSD}"><ExternalURL>https://annotate.example.org/mturk/task/'
            f"{task.public_id}/</ExternalURL><FrameHeight>0</FrameHeight></ExternalQuestion>"
        )
        stub.add_response(
            "create_hit_with_hit_type",
            hit_answer(hit_id),
            {
                "HITTypeId": "TYPE1",
                "MaxAssignments": 2,
                "LifetimeInSeconds": ANY,
                "Question": question,
                "RequesterAnnotation": str(task.public_id),
                "UniqueRequestToken": task.public_id.hex,
            },
        )
        ids.append(hit_id)
    return ids
