"""A qualification on MTurk: a QualificationType whose test is the gold units (botocore's Stubber checks every
request against MTurk's API model), a requirement on the batch's HIT type, and the scores read back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.stub import ANY, Stubber
from django.http import FileResponse
from django.test import Client

from agreement import categories
from annotate import services
from annotate.errors import ReviewError
from annotate.models import Batch, Provider, Qualification, QualificationResult
from annotate.providers.mturk import screening
from annotate.selectors.qualifications import qualification_results
from annotate.services.qualifications import batch_qualifications_set, qualification_create
from runs.models import AuditEvent, Unit
from tests.annotate.mturk_stubs import expect_publish
from tests.factories import logged_in, shared_project, staff_user

Status = QualificationResult.Status
FORM_NS = {"q": screening.QUESTION_FORM_XSD}
KEY_NS = {"k": screening.ANSWER_KEY_XSD}
GOLD_WORDS = ("scarlet", "crimson")


@pytest.fixture
def qualification(units: list[Unit]) -> Qualification:
    """Three gold units; pass at 66%: two of three right. The accepted words are unusual so a test that
    leaks them is caught."""
    return qualification_create(
        project=shared_project(),
        name="Colour screen",
        gold={
            units[0].pk: services.GoldAnswer("color", GOLD_WORDS),
            units[1].pk: services.GoldAnswer("object", ("teapot",)),
            units[2].pk: services.GoldAnswer("texture", ("wicker",)),
        },
        min_accuracy=0.66,
        min_items=2,
        images_per_item=3,
    )


def _expect_type(stub: Stubber, qualification: Qualification, type_id: str = "QT1") -> None:
    stub.add_response(
        "create_qualification_type",
        {"QualificationType": {"QualificationTypeId": type_id}},
        {
            "Name": f"Colour screen screening ({qualification.public_id.hex[:8]})",
            "Keywords": ANY,
            "Description": ANY,
            "QualificationTypeStatus": "Active",
            "RetryDelayInSeconds": 7 * 24 * 3600,
            "Test": screening.question_form(qualification),
            "AnswerKey": screening.answer_key(qualification),
            "TestDurationInSeconds": 3 * 90,
            "AutoGranted": False,
        },
    )


REQUIREMENT = {
    "QualificationTypeId": "QT1",
    "Comparator": "GreaterThanOrEqualTo",
    "IntegerValues": [66],
    "ActionsGuarded": "Accept",
}


@pytest.fixture
def screened_mturk(make_batch: Callable[..., Batch], qualification: Qualification, stub: Stubber) -> Batch:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    batch_qualifications_set(batch=batch, qualifications=[qualification])
    _expect_type(stub, qualification)
    expect_publish(stub, batch, [REQUIREMENT])
    return services.batch_publish(batch=batch)


def test_publish_makes_the_qualification_type_once_and_requires_it(
    screened_mturk: Batch, qualification: Qualification, make_batch: Callable[..., Batch], stub: Stubber
) -> None:
    qualification.refresh_from_db()
    assert qualification.mturk_qualification_type_id == "QT1"
    publish = AuditEvent.objects.get(action="publish", batch_key=screened_mturk.public_id)
    assert publish.provider_reply == {"qualification_types": {"Colour screen": "QT1"}}
    # A second batch requiring it reuses the type: no second CreateQualificationType.
    second = make_batch(provider=Provider.MTURK, publish=False, title="Second")
    batch_qualifications_set(batch=second, qualifications=[qualification])
    expect_publish(stub, second, [REQUIREMENT])
    services.batch_publish(batch=second)


def test_the_test_asks_for_the_category_and_the_key_holds_the_gold(
    qualification: Qualification, units: list[Unit], settings: Any
) -> None:
    settings.SITE_URL = "https://annotate.example.org"
    test = screening.question_form(qualification)
    form = ET.fromstring(test)
    assert form.tag == f"{{{screening.QUESTION_FORM_XSD}}}QuestionForm"
    questions = form.findall("q:Question", FORM_NS)
    assert [q.findtext("q:QuestionIdentifier", namespaces=FORM_NS) for q in questions] == ["q1", "q2", "q3"]
    for question, unit in zip(questions, units, strict=True):
        assert question.findtext("q:IsRequired", namespaces=FORM_NS) == "true"
        assert question.findtext("q:QuestionContent/q:Text", namespaces=FORM_NS) == screening.QUESTION
        options = [
            (
                s.findtext("q:SelectionIdentifier", namespaces=FORM_NS),
                s.findtext("q:Text", namespaces=FORM_NS),
            )
            for s in question.findall(".//q:Selection", FORM_NS)
        ]
        assert options == list(categories.CATEGORIES)  # the same six choices, in the same order, everywhere
        binaries = question.findall("q:QuestionContent/q:Binary", FORM_NS)
        assert [b.findtext("q:MimeType/q:SubType", namespaces=FORM_NS) for b in binaries] == ["png"] * 3
        for binary in binaries:
            url = urlsplit(binary.findtext("q:DataURL", namespaces=FORM_NS) or "")
            assert (url.scheme, url.netloc, url.query) == ("https", "annotate.example.org", "")
            prefix = f"/mturk/screening/{qualification.public_id}/"
            assert url.path.startswith(prefix) and url.path.endswith("/")
            token = url.path[len(prefix) : -1]
            assert ":" in token and "/" not in token  # a signed value, one path segment
            for secret in (f"u{unit.pk}-", "units", ".png", unit.label, *categories.CODES):
                assert secret not in token
    for leak in (*GOLD_WORDS, "teapot", "wicker", "concept0", "concept1", "units/", ".png"):
        assert leak not in test
    key = ET.fromstring(screening.answer_key(qualification))
    assert [
        (
            q.findtext("k:QuestionIdentifier", namespaces=KEY_NS),
            q.findtext("k:AnswerOption/k:SelectionIdentifier", namespaces=KEY_NS),
            q.findtext("k:AnswerOption/k:AnswerScore", namespaces=KEY_NS),
        )
        for q in key.findall("k:Question", KEY_NS)
    ] == [("q1", "color", "1"), ("q2", "object", "1"), ("q3", "texture", "1")]
    mapping = "k:QualificationValueMapping/k:PercentageMapping/k:MaximumSummedScore"
    assert key.findtext(mapping, namespaces=KEY_NS) == "3"


def _without_names(test: str) -> bytes:
    """The test with its title and image names blanked (they are scoped to one qualification)."""
    form = ET.fromstring(test)
    for element in form.iter():
        if element.tag.endswith("}DataURL") or element.tag.endswith("}Title"):
            element.text = ""
    return ET.tostring(form)


def test_the_test_is_the_same_whatever_the_gold_answers(
    qualification: Qualification, units: list[Unit], settings: Any
) -> None:
    """Nothing in the test depends on the gold answers: the same units with other gold give the same test
    but for the qualification-scoped title and image names."""
    settings.SITE_URL = "https://annotate.example.org"
    twin = qualification_create(
        project=shared_project(),
        name="Scene screen",
        gold={unit.pk: services.GoldAnswer("scene", ("harbour",)) for unit in units},
        min_accuracy=0.66,
        min_items=2,
        images_per_item=3,
    )
    assert screening.answer_key(twin) != screening.answer_key(qualification)
    assert _without_names(screening.question_form(twin)) == _without_names(
        screening.question_form(qualification)
    )
    assert not set(_image_urls(twin)) & set(_image_urls(qualification))


def _image_urls(qualification: Qualification) -> list[str]:
    form = ET.fromstring(screening.question_form(qualification))
    return [element.text or "" for element in form.iter(f"{{{screening.QUESTION_FORM_XSD}}}DataURL")]


def test_signed_image_view_serves_good_names_and_refuses_forged_ones(
    qualification: Qualification, units: list[Unit], settings: Any
) -> None:
    settings.SITE_URL = "https://annotate.example.org"
    client = Client()
    urls = [urlsplit(url).path for url in _image_urls(qualification)]
    assert len(urls) == 9 and len(set(urls)) == 9
    good = client.get(urls[0])
    assert good.status_code == 200 and good["Content-Type"] == "image/png"
    assert "Content-Disposition" not in good
    assert isinstance(good, FileResponse)
    assert b"".join(good.streaming_content).startswith(b"\x89PNG")
    prefix, token = urls[0].rstrip("/").rsplit("/", 1)
    value, signature = token.rsplit(":", 1)
    forged_signature = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    item_hex = value.split(".")[0]
    for forged in (
        f"{prefix}/{value}:{forged_signature}/",
        f"{prefix}/{item_hex}.3:{signature}/",  # a rank the signature does not cover
        f"{prefix}/{value}/",
        f"/mturk/screening/{shared_project().pk:08d}-0000-0000-0000-000000000000/{token}/",
    ):
        assert client.get(forged).status_code == 404, forged
    # A name signed for one qualification opens nothing under another's, even for the same unit's image.
    other = qualification_create(
        project=shared_project(),
        name="Other screen",
        gold={units[0].pk: services.GoldAnswer("color", ("red",))},
        min_accuracy=0.5,
        min_items=1,
        images_per_item=3,
    )
    assert client.get(f"/mturk/screening/{other.public_id}/{token}/").status_code == 404
    # An image past the qualification's images per item is never signed, so never served.
    item = qualification.items.order_by("position").first()
    assert item is not None
    beyond = screening.screening_image_token(item, 3)
    assert client.get(f"{prefix}/{beyond}/").status_code == 404


def _scores_page(*workers: tuple[str, int, str], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "Qualifications": [
            {
                "QualificationTypeId": "QT1",
                "WorkerId": worker,
                "GrantTime": datetime(2026, 1, 2, tzinfo=UTC),
                "IntegerValue": value,
                "Status": status,
            }
            for worker, value, status in workers
        ],
        "NumResults": len(workers),
    }
    if token:
        page["NextToken"] = token
    return page


def _expect_sync(stub: Stubber, pages: list[dict[str, Any]]) -> None:
    for hit in ("HIT0", "HIT1", "HIT2"):
        stub.add_response(
            "list_assignments_for_hit",
            {"Assignments": [], "NumResults": 0},
            {"HITId": hit, "MaxResults": 100},
        )
    for index, page in enumerate(pages):
        params: dict[str, Any] = {"QualificationTypeId": "QT1", "MaxResults": 100}
        if index:
            params["NextToken"] = pages[index - 1]["NextToken"]
        stub.add_response("list_workers_with_qualification_type", page, params)


def test_sync_records_mturk_scores_as_passed_and_failed(
    screened_mturk: Batch, qualification: Qualification, stub: Stubber, django_user_model: Any
) -> None:
    _expect_sync(
        stub,
        [
            _scores_page(("WKRPASS", 67, "Granted"), ("WKRFAIL", 33, "Granted"), token="p2"),
            _scores_page(("WKRGONE", 100, "Revoked")),
        ],
    )
    services.batch_sync(batch=screened_mturk)
    standing = {
        r.worker.external_id: (r.worker.provider, r.status, r.items, r.correct, r.accuracy)
        for r in qualification_results(qualification=qualification)
    }
    assert standing == {
        "WKRPASS": (Provider.MTURK, Status.PASSED, 3, 2, 0.67),
        "WKRFAIL": (Provider.MTURK, Status.FAILED, 3, 1, 0.33),
        "WKRGONE": (Provider.MTURK, Status.FAILED, 3, 0, None),
    }
    grades = AuditEvent.objects.filter(details__change="grade").order_by("subject")
    assert [(g.details["status"], g.details["mturk_score"]) for g in grades] == [
        ("failed", 33),
        ("failed", None),
        ("passed", 67),
    ]
    # The same scores again change nothing; a retake's better score turns a fail into a pass.
    _expect_sync(stub, [_scores_page(("WKRPASS", 67, "Granted"), ("WKRFAIL", 100, "Granted"))])
    services.batch_sync(batch=screened_mturk)
    assert AuditEvent.objects.filter(details__change="grade").count() == 4
    assert qualification.results.get(worker__external_id="WKRFAIL").status == Status.PASSED
    page = logged_in(staff_user(django_user_model)).get(f"/qualifications/{qualification.public_id}/")
    text = page.content.decode()
    assert "mturk:WKRPASS" in text and "mturk:WKRFAIL" in text and "mturk:WKRGONE" in text


def test_mturk_batches_take_a_qualification_the_test_can_carry(
    make_batch: Callable[..., Batch], make_unit: Callable[..., Unit], qualification: Qualification, run: Any
) -> None:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    batch_qualifications_set(batch=batch, qualifications=[qualification])
    assert list(batch.qualifications.all()) == [qualification]
    blank = make_unit(7, images=0)
    imageless = qualification_create(
        project=shared_project(),
        name="No pictures",
        gold={blank.pk: services.GoldAnswer("color", ("red",))},
        min_accuracy=0.5,
        min_items=1,
    )
    with pytest.raises(ReviewError, match="gold unit conv4 unit 8 has no images"):
        batch_qualifications_set(batch=batch, qualifications=[imageless])
    Batch.objects.filter(pk=batch.pk).update(mturk_hit_type_id="TYPE1")
    batch.refresh_from_db()
    with pytest.raises(ReviewError, match="HIT type is on MTurk already"):
        batch_qualifications_set(batch=batch, qualifications=[])
    assert list(batch.qualifications.all()) == [qualification]


def test_the_form_accepts_a_qualification_for_mturk(
    django_user_model: Any, run: Any, make_unit: Callable[..., Unit], qualification: Qualification
) -> None:
    boss = logged_in(staff_user(django_user_model))
    fields = {
        "title": "Screened on MTurk",
        "run": run.pk,
        "layer": "conv4",
        "selection": "all",
        "provider": "mturk",
        "assignments_per_task": 1,
        "images_per_task": 4,
        "reward": "0.10",
        "assignment_minutes": 10,
        "lifetime_hours": 24,
        "block_min_gold": 2,
    }
    made = boss.post("/batches/new/", {**fields, "qualifications": [qualification.pk]})
    assert made.status_code == 302, made.content
    assert list(Batch.objects.get(title="Screened on MTurk").qualifications.all()) == [qualification]
    blank = make_unit(7, images=0)
    imageless = qualification_create(
        project=shared_project(),
        name="No pictures",
        gold={blank.pk: services.GoldAnswer("color", ("red",))},
        min_accuracy=0.5,
        min_items=1,
    )
    refused = boss.post("/batches/new/", {**fields, "title": "Refused", "qualifications": [imageless.pk]})
    assert refused.status_code == 400
    assert "has no images to show in MTurk" in refused.content.decode()
    assert not Batch.objects.filter(title="Refused").exists()


def test_a_retried_publish_finds_the_type_whose_answer_was_lost(
    make_batch: Callable[..., Batch], qualification: Qualification, stub: Stubber
) -> None:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    batch_qualifications_set(batch=batch, qualifications=[qualification])
    name = screening.type_name(qualification)
    stub.add_client_error(
        "create_qualification_type",
        "RequestError",
        f"You have already created a QualificationType with this name: {name}",
    )
    stub.add_response(
        "list_qualification_types",
        {
            "QualificationTypes": [
                {"QualificationTypeId": "QTX", "Name": f"{name} (old)"},
                {"QualificationTypeId": "QT1", "Name": name},
            ],
            "NumResults": 2,
        },
        {"Query": name, "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100},
    )
    expect_publish(stub, batch, [REQUIREMENT])
    services.batch_publish(batch=batch)
    qualification.refresh_from_db()
    assert qualification.mturk_qualification_type_id == "QT1"


def test_mturk_guards_accept_so_our_task_page_lets_the_worker_in(screened_mturk: Batch) -> None:
    """A worker on our task page got past MTurk's requirement (or typed the ids, and then their assignment
    never counts until MTurk confirms it), so no local result is asked for: the next sync records it."""
    task = screened_mturk.tasks.order_by("position").first()
    assert task is not None
    page = Client().get(
        f"/mturk/task/{task.public_id}/",
        {
            "assignmentId": "ASG1",
            "hitId": task.mturk_hit_id,
            "workerId": "WKRPASS",
            "turkSubmitTo": "https://workersandbox.mturk.com",
        },
    )
    assert page.status_code == 200 and 'name="token"' in page.content.decode()
    assert not QualificationResult.objects.exists()
