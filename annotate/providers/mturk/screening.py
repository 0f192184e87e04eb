"""A qualification as the test of an MTurk QualificationType: a QuestionForm with one multiple-choice question
per gold unit (its top images, "which category do these images share", the six ICLR'15 categories of the
task page) and an AnswerKey whose PercentageMapping makes the worker's score the percentage they got right.

MTurk scores only choices, so a question asks for the category alone: the local test also checks the
written label (`agreement.gold.gold_matches`), MTurk's checks the gold category. Every question is required,
so a score covers all the gold units (never fewer than `min_items`). The images travel under opaque URLs
signed for the one qualification (`screening_image_url`): they name neither the unit, its label nor its
storage path, and the test carries no gold answer (that lives only in the AnswerKey, which MTurk never
shows a worker).
"""

from __future__ import annotations

import math
import mimetypes
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from uuid import UUID

from django.conf import settings
from django.core import signing
from django.urls import reverse

from agreement import categories
from annotate.selectors.qualifications import qualification_item_images

if TYPE_CHECKING:
    from annotate.models import Qualification, QualificationItem

QUESTION_FORM_XSD = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2017-11-06/QuestionForm.xsd"
)
ANSWER_KEY_XSD = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/AnswerKey.xsd"
MAX_XML_CHARS = 65535
"""MTurk's limit on the length of a QualificationType's Test and AnswerKey."""
SECONDS_PER_QUESTION = 90
RETRY_DELAY_SECONDS = 7 * 24 * 3600
"""A worker who failed may take the test again after a week: soon enough to forgive a slip, too rarely to
learn the answer key by trial."""
QUESTION = "Which category do these images share?"


def _signer(qualification_public_id: UUID | str) -> signing.Signer:
    return signing.Signer(salt=f"annotate.mturk.screening.{qualification_public_id}")


def screening_image_token(item: QualificationItem, rank: int) -> str:
    """The signed name of image `rank` of test item `item`, valid for the item's qualification only."""
    return _signer(item.qualification.public_id).sign(f"{item.public_id.hex}.{rank}")


def screening_image_unsign(qualification_public_id: UUID | str, token: str) -> tuple[UUID, int] | None:
    """The (item public id, rank) a token names, or None when it was not signed for this qualification."""
    try:
        value = _signer(qualification_public_id).unsign(token)
        item_hex, rank = value.split(".")
        return UUID(hex=item_hex), int(rank)
    except (signing.BadSignature, ValueError):
        return None


def screening_image_url(item: QualificationItem, rank: int) -> str:
    path = reverse(
        "annotate:mturk_screening_image",
        args=[item.qualification.public_id, screening_image_token(item, rank)],
    )
    return settings.SITE_URL.rstrip("/") + path


def required_score(qualification: Qualification) -> int:
    """The least MTurk score (percent correct) that passes: the accuracy threshold in whole percent, rounded
    up (0.7 is 70, not 71 after float noise)."""
    return math.ceil(round(qualification.min_accuracy * 100, 6))


def type_name(qualification: Qualification) -> str:
    """The QualificationType's name, unique among the requester's (MTurk refuses a second of one name)."""
    return f"{qualification.name[:100]} screening ({qualification.public_id.hex[:8]})"


def _items(qualification: Qualification) -> list[QualificationItem]:
    return list(qualification.items.select_related("unit", "qualification").order_by("position"))


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def question_form(qualification: Qualification) -> str:
    """The Test: an overview, then per gold unit its top images and the category choice (ids q1, q2, ...)."""
    items = _items(qualification)
    form = ET.Element("QuestionForm", xmlns=QUESTION_FORM_XSD)
    overview = ET.SubElement(form, "Overview")
    _text(overview, "Title", f"Screening test: {qualification.name}")
    _text(
        overview,
        "Text",
        f"Each of the {len(items)} questions shows a set of images that share one concept "
        "(the highlighted regions). Pick the category of that concept.",
    )
    for number, item in enumerate(items, start=1):
        question = ET.SubElement(form, "Question")
        _text(question, "QuestionIdentifier", f"q{number}")
        _text(question, "DisplayName", f"Image set {number}")
        _text(question, "IsRequired", "true")
        content = ET.SubElement(question, "QuestionContent")
        _text(content, "Text", QUESTION)
        for image in qualification_item_images(item=item):
            binary = ET.SubElement(content, "Binary")
            mime = ET.SubElement(binary, "MimeType")
            guessed, _ = mimetypes.guess_type(image.image.name or "tile.jpg")
            _text(mime, "Type", "image")
            _text(mime, "SubType", (guessed or "image/jpeg").split("/")[1])
            _text(binary, "DataURL", screening_image_url(item, image.rank))
            _text(binary, "AltText", f"Image {image.number} of set {number}")
        selection = ET.SubElement(ET.SubElement(question, "AnswerSpecification"), "SelectionAnswer")
        _text(selection, "StyleSuggestion", "radiobutton")
        selections = ET.SubElement(selection, "Selections")
        for code, label in categories.CATEGORIES:
            choice = ET.SubElement(selections, "Selection")
            _text(choice, "SelectionIdentifier", code)
            _text(choice, "Text", label)
    return ET.tostring(form, encoding="unicode")


def answer_key(qualification: Qualification) -> str:
    """The AnswerKey: one point for the gold category of each question; the score is the percentage."""
    items = _items(qualification)
    key = ET.Element("AnswerKey", xmlns=ANSWER_KEY_XSD)
    for number, item in enumerate(items, start=1):
        question = ET.SubElement(key, "Question")
        _text(question, "QuestionIdentifier", f"q{number}")
        option = ET.SubElement(question, "AnswerOption")
        _text(option, "SelectionIdentifier", item.gold_category)
        _text(option, "AnswerScore", "1")
    mapping = ET.SubElement(ET.SubElement(key, "QualificationValueMapping"), "PercentageMapping")
    _text(mapping, "MaximumSummedScore", str(len(items)))
    return ET.tostring(key, encoding="unicode")


def duration_seconds(qualification: Qualification) -> int:
    return SECONDS_PER_QUESTION * qualification.items.count()


def screening_problem(qualification: Qualification) -> str:
    """Why `qualification` cannot be an MTurk test ("" when it can): every gold unit needs an image, there
    must be at least `min_items` of them, and the test must fit MTurk's length limit."""
    items = _items(qualification)
    needed = max(1, qualification.min_items)
    if len(items) < needed:
        return (
            f"Qualification {qualification.name}: MTurk's test needs at least {needed} gold units "
            f"(its minimum items); it has {len(items)}."
        )
    for item in items:
        if not qualification_item_images(item=item):
            return (
                f"Qualification {qualification.name}: gold unit {item.unit.layer} unit "
                f"{item.unit.channel + 1} has no images to show in MTurk's test."
            )
    length = len(question_form(qualification))
    if length > MAX_XML_CHARS:
        return (
            f"Qualification {qualification.name}: its MTurk test would be {length} characters, over MTurk's "
            f"{MAX_XML_CHARS}; use fewer gold units or fewer images per item."
        )
    return ""
