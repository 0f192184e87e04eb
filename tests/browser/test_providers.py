"""The crowd providers' ends in Chromium: MTurk's frame posts the HIT to `turkSubmitTo` with its assignmentId,
and a Prolific study ends on Prolific's completion URL. Both outside sites are intercepted in the browser."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import boto3
import pytest
from botocore.stub import ANY, Stubber
from playwright.sync_api import Page, Route, expect

from annotate import services
from annotate.models import Assignment, Batch, Provider
from annotate.providers.mturk import client as mturk
from tests.browser.conftest import Tabs
from tests.browser.pages import Check, answer

pytestmark = pytest.mark.browser

SANDBOX = "https://workersandbox.mturk.com"


def outside_site(title: str) -> Callable[[Route], None]:
    """A stand-in for a site the test must not reach: a small page that names it."""

    def fulfil(route: Route) -> None:
        route.fulfill(
            status=200,
            content_type="text/html",
            body=f"<!doctype html><html lang=en><title>{title}</title><h1>{title}</h1></html>",
        )

    return fulfil


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Stubber]:
    """MTurk's API through botocore's Stubber: every call is checked against the real API model."""
    settings.SITE_URL = "https://annotate.example.org"
    client = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=mturk.SANDBOX_ENDPOINT,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    monkeypatch.setattr(mturk, "mturk_client", lambda: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def test_mturk_frame_stores_the_answer_and_posts_the_hit_to_turk_submit_to(
    tabs: Tabs, page: Page, check_page: Check, make_batch: Callable[..., Batch], units: list, stub: Stubber
) -> None:
    batch = make_batch(provider=Provider.MTURK, units=units[:1], publish=False)
    task = batch.tasks.get()
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    stub.add_response(
        "create_hit_with_hit_type",
        {"HIT": {"HITId": "HIT0", "HITTypeId": "TYPE1"}},
        {
            "HITTypeId": "TYPE1",
            "MaxAssignments": 1,
            "LifetimeInSeconds": ANY,
            "Question": ANY,
            "RequesterAnnotation": str(task.public_id),
            "UniqueRequestToken": task.public_id.hex,
        },
    )
    services.batch_publish(batch=batch)
    url = f"/mturk/task/{task.public_id}/?"

    page.goto(url + urlencode({"assignmentId": mturk.PREVIEW_ASSIGNMENT_ID, "hitId": "HIT0"}))
    expect(page.get_by_text("Accept the HIT on Mechanical Turk to start.")).to_be_visible()
    expect(page.get_by_role("button", name="Submit answer")).to_be_disabled()
    check_page(page, "mturk_preview")

    page.goto(
        url
        + urlencode({"assignmentId": "ASG1", "hitId": "HIT0", "workerId": "WKR1", "turkSubmitTo": SANDBOX})
    )
    check_page(page, "mturk_task")
    page.route(f"{SANDBOX}/**", outside_site("MTurk sandbox"))
    # The answer page submits itself to MTurk on load, so it is never shown long enough to audit.
    tabs.log(page).unchecked_ok += [re.compile(r"/mturk/task/[^/]+/submit/$"), re.compile(re.escape(SANDBOX))]
    answer(page, "red circle", [1], "Simple elements or colors")
    # MTurk keeps no record of an assignment before its externalSubmit: stored, but not confirmed yet.
    stub.add_client_error("get_assignment", "RequestError", "Assignment ASG1 does not exist.")
    with page.expect_request(f"{SANDBOX}/mturk/externalSubmit") as posted:
        page.get_by_role("button", name="Submit answer").click()
    request = posted.value
    assert request.method == "POST"
    assert parse_qs(request.post_data or "") == {"assignmentId": ["ASG1"], "stored": ["1"]}
    expect(page).to_have_title("MTurk sandbox")

    assignment = Assignment.objects.get(mturk_assignment_id="ASG1")
    assert (
        assignment.status,
        assignment.mturk_hit_id,
        assignment.worker.external_id,
        assignment.verified,
    ) == (
        Assignment.Status.SUBMITTED,
        "HIT0",
        "WKR1",
        False,
    )
    assert (assignment.annotation.words, assignment.annotation.rejected_ranks) == ("red circle", [0])


def test_prolific_study_ends_on_the_completion_redirect(
    tabs: Tabs, page: Page, check_page: Check, make_batch: Callable[..., Batch], units: list
) -> None:
    batch = make_batch(provider=Provider.PROLIFIC, units=units[:1], prolific_completion_code="C0DE42")
    completion = "https://app.prolific.com/submissions/complete?cc=C0DE42"
    page.route("https://app.prolific.com/**", outside_site("Prolific"))
    # Playwright routes no redirect hop, so Chromium first tries the real (unreachable) Prolific and shows
    # its error page before the intercepted navigation lands.
    tabs.log(page).unchecked_ok += [re.compile(re.escape(completion)), re.compile(r"^chrome-error://")]

    page.goto(
        f"/w/{batch.public_id}/?"
        + urlencode({"PROLIFIC_PID": "pid1", "STUDY_ID": "study1", "SESSION_ID": "session1"})
    )
    page.wait_for_url("**/w/task/*/")
    check_page(page, "prolific_preview")
    page.get_by_role("button", name="Accept this task").click()
    page.wait_for_url("**/w/a/*/")
    answer(page, "stripes", [], "Texture or material")
    check_page(page, "prolific_task")
    with page.expect_response(re.compile(r"/w/[^/]+/next/$")) as finished:
        page.get_by_role("button", name="Submit answer").click()
    assert (finished.value.status, finished.value.headers["location"]) == (302, completion)
    page.wait_for_url(completion)
    expect(page).to_have_title("Prolific")

    assignment = Assignment.objects.get(worker__provider=Provider.PROLIFIC, worker__external_id="pid1")
    assert (assignment.prolific_study_id, assignment.prolific_session_id) == ("study1", "session1")
    assert (assignment.status, assignment.annotation.words, assignment.annotation.category) == (
        Assignment.Status.SUBMITTED,
        "stripes",
        "texture",
    )
