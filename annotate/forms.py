"""Forms: parse and check what people type; the services re-check every rule before anything is stored."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.core.validators import RegexValidator

from agreement import categories
from annotate import selectors
from annotate.errors import InvalidAnswer
from annotate.models import Assignment, Batch, Provider
from annotate.services import WORDS_MAX, GoldAnswer, answer_words_clean
from runs.models import DissectionRun, Unit


class LabelForm(forms.Form):
    """The ICLR'15 answer: words, the images that do not fit, one of six categories."""

    words = forms.CharField(
        label="1. Write one or two words that describe the common concept among most of these images",
        max_length=WORDS_MAX,
        strip=True,
        error_messages={
            "required": "Words: write one or two words that describe the concept.",
            "max_length": f"Words: at most {WORDS_MAX} characters (you wrote %(show_value)d).",
        },
    )
    rejected = forms.TypedMultipleChoiceField(
        label="2. Click the images that do NOT show this concept",
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": "Images: rank %(value)s is not one of the images shown."},
    )
    category = forms.ChoiceField(
        label="3. Which category does the concept belong to?",
        choices=categories.CATEGORIES,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Category: pick one of the six categories.",
            "invalid_choice": "Category: %(value)s is not one of the six categories.",
        },
    )

    def __init__(self, *args: Any, ranks: Sequence[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rejected = cast(forms.TypedMultipleChoiceField, self.fields["rejected"])
        rejected.choices = [(rank, str(rank)) for rank in ranks]

    def clean_words(self) -> str:
        """One or two words as the statistics and gold count them (the service checks the same rule)."""
        try:
            return answer_words_clean(self.cleaned_data["words"])
        except InvalidAnswer as exc:
            raise forms.ValidationError(str(exc)) from None

    def rejected_values(self) -> set[str]:
        """The ranks ticked on the page, kept as typed so a failed submit shows them again."""
        value = self["rejected"].value() or []
        return {str(v) for v in value}

    def answer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for services.annotation_submit."""
        return {
            "words": self.cleaned_data["words"],
            "category": self.cleaned_data["category"],
            "rejected_ranks": self.cleaned_data["rejected"],
        }


class VerifyForm(forms.Form):
    """NetDissect's blind check: does the shown label describe most of the images? (The label's source is
    never part of the form.)"""

    answer = forms.ChoiceField(
        label="Does this label describe most of these images?",
        choices=[("yes", "Yes"), ("no", "No")],
        widget=forms.RadioSelect,
        error_messages={
            "required": "Answer: say whether the label describes most of the images.",
            "invalid_choice": "Answer: choose yes or no.",
        },
    )

    def __init__(self, *args: Any, ranks: Sequence[int] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def answer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for services.annotation_submit."""
        return {"verify_answer": self.cleaned_data["answer"] == "yes"}


def answer_form(kind: str, *args: Any, ranks: Sequence[int], **kwargs: Any) -> LabelForm | VerifyForm:
    """The answer form of a task of this kind (Task.Kind): label or verify."""
    return (VerifyForm if kind == "verify" else LabelForm)(*args, ranks=ranks, **kwargs)


class WorkerStartForm(forms.Form):
    """The local link's start: what the person types is a name shown beside their answers, never a key;
    starting always makes a new worker, whose personal link is the way back."""

    worker_id = forms.CharField(
        label="Your worker id or name",
        required=False,
        max_length=100,
        strip=True,
        help_text="Optional: shown to the requester beside your answers. It does not log you in; the "
        "personal link you get next does.",
        validators=[
            RegexValidator(r"^[A-Za-z0-9_.@-]+$", "Worker id: use letters, digits and . _ @ - only.")
        ],
    )


def _parse_indices(text: str) -> list[int]:
    """'0, 3, 7-9' -> [0, 3, 7, 8, 9]."""
    indices: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise forms.ValidationError(f"Unit indices: {part!r} is not an index or a range like 7-9.")
        start, end = int(match[1]), int(match[2] or match[1])
        if end < start or end - start > 100_000:
            raise forms.ValidationError(f"Unit indices: {part!r} is not a valid range.")
        indices.extend(range(start, end + 1))
    return indices


def _parse_gold(text: str, run: DissectionRun, layer: str) -> dict[int, GoldAnswer]:
    """Lines '<unit index>; <category>; <word>, <word>' -> {unit pk: GoldAnswer}."""
    gold: dict[int, GoldAnswer] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(";")]
        if len(parts) != 3:
            raise forms.ValidationError(
                f"Gold units, line {number}: expected '<unit index>; <category>; <word>, <word>'."
            )
        index, category, words = parts
        if not index.isdigit():
            raise forms.ValidationError(f"Gold units, line {number}: {index!r} is not a unit index.")
        if category not in categories.CODES:
            raise forms.ValidationError(
                f"Gold units, line {number}: category {category!r} is not one of "
                f"{', '.join(categories.CODES)}."
            )
        accepted = tuple(w.strip() for w in words.split(",") if w.strip())
        if not accepted:
            raise forms.ValidationError(f"Gold units, line {number}: list at least one accepted word.")
        unit = Unit.objects.filter(run=run, layer=layer, channel=int(index)).first()
        if unit is None:
            raise forms.ValidationError(f"Gold units, line {number}: layer {layer!r} has no unit {index}.")
        gold[unit.pk] = GoldAnswer(category, accepted)
    return gold


class BatchCreateForm(forms.Form):
    """A batch from the units of one run the user may see; the batch belongs to the run's project."""

    title = forms.CharField(max_length=200)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    run = forms.ModelChoiceField(queryset=DissectionRun.objects.none())
    layer = forms.CharField(max_length=200, help_text="Layer name as in the run, e.g. conv4")
    selection = forms.ChoiceField(
        choices=[
            ("all", "All units"),
            ("interpretable", "Interpretable units only"),
            ("sample", "A random sample"),
            ("list", "These unit indices"),
        ],
        initial="all",
        widget=forms.RadioSelect,
    )
    sample_size = forms.IntegerField(min_value=1, required=False, label="Sample size")
    unit_indices = forms.CharField(required=False, label="Unit indices", help_text="e.g. 0, 3, 7-9")
    provider = forms.ChoiceField(choices=Provider.choices, initial=Provider.LOCAL)
    assignments_per_task = forms.IntegerField(min_value=1, max_value=100, initial=3, label="Workers per unit")
    images_per_task = forms.IntegerField(min_value=1, max_value=100, initial=20, label="Images per task")
    reward = forms.DecimalField(
        min_value=Decimal("0"),
        max_digits=8,
        decimal_places=2,
        initial=Decimal("0.10"),
        label="Reward per assignment (USD)",
    )
    assignment_minutes = forms.IntegerField(
        min_value=1, max_value=24 * 60, initial=30, label="Time allowed per assignment (minutes)"
    )
    lifetime_hours = forms.IntegerField(
        min_value=1, max_value=24 * 365, initial=168, label="Batch lifetime (hours)"
    )
    prolific_completion_code = forms.CharField(
        max_length=100, required=False, label="Prolific completion code"
    )
    gold = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Gold units",
        help_text="One per line: <unit index>; <category>; <accepted word>, <word>. "
        f"Categories: {', '.join(categories.CODES)}.",
    )
    auto_reject_failed_gold = forms.BooleanField(
        required=False, label="Reject assignments that fail a gold unit"
    )
    block_below_percent = forms.IntegerField(
        min_value=0, max_value=100, required=False, label="Block workers whose gold accuracy is below (%)"
    )
    block_min_gold = forms.IntegerField(
        min_value=1, max_value=100, initial=2, label="…after this many gold answers"
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        run = cast("forms.ModelChoiceField[DissectionRun]", self.fields["run"])
        run.queryset = DissectionRun.objects.visible_to(user).order_by("-created_at")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        run, layer = data.get("run"), data.get("layer")
        if run is None or not layer:
            return data
        try:
            indices = _parse_indices(data.get("unit_indices") or "")
        except forms.ValidationError as exc:
            self.add_error("unit_indices", exc)
            return data
        try:
            self.units = selectors.units_select(
                run=run,
                layer=layer,
                mode=data.get("selection", "all"),
                sample_size=data.get("sample_size"),
                indices=indices,
            )
        except InvalidAnswer as exc:
            raise forms.ValidationError(str(exc)) from None
        try:
            self.gold_answers = _parse_gold(data.get("gold") or "", run, layer)
        except forms.ValidationError as exc:
            self.add_error("gold", exc)
        if data.get("provider") == Provider.PROLIFIC and not (data.get("prolific_completion_code") or ""):
            self.add_error("prolific_completion_code", "A Prolific batch needs the study's completion code.")
        return data

    def batch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for services.batch_create."""
        d = self.cleaned_data
        percent = d.get("block_below_percent")
        return {
            "project": d["run"].project,
            "title": d["title"],
            "instructions": d["instructions"],
            "units": self.units,
            "gold": self.gold_answers,
            "provider": d["provider"],
            "assignments_per_task": d["assignments_per_task"],
            "images_per_task": d["images_per_task"],
            "reward": d["reward"],
            "assignment_duration": timedelta(minutes=d["assignment_minutes"]),
            "lifetime": timedelta(hours=d["lifetime_hours"]),
            "auto_reject_failed_gold": d["auto_reject_failed_gold"],
            "block_below_accuracy": None if percent is None else percent / 100,
            "block_min_gold": d["block_min_gold"],
            "prolific_completion_code": d["prolific_completion_code"],
        }


class ReviewForm(forms.Form):
    action = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject"), ("bonus", "Bonus")])
    assignments = forms.ModelMultipleChoiceField(
        queryset=Assignment.objects.none(),
        to_field_name="public_id",
        error_messages={"required": "Select at least one assignment."},
    )
    feedback = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Feedback to the worker (required to reject; the reason of a bonus)",
    )
    bonus_amount = forms.DecimalField(
        min_value=Decimal("0.01"), max_digits=8, decimal_places=2, required=False, label="Bonus (USD)"
    )

    def __init__(self, *args: Any, batch: Batch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assignments = cast("forms.ModelMultipleChoiceField[Assignment]", self.fields["assignments"])
        assignments.queryset = Assignment.objects.filter(task__batch=batch).select_related(
            "worker", "task__unit"
        )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("action") == "reject" and not (data.get("feedback") or "").strip():
            self.add_error("feedback", "Rejecting needs feedback that tells the worker why.")
        if data.get("action") == "bonus":
            if data.get("bonus_amount") is None:
                self.add_error("bonus_amount", "Enter the bonus amount.")
            if not (data.get("feedback") or "").strip():
                self.add_error("feedback", "A bonus needs a reason the worker will see.")
        return data


class BlockForm(forms.Form):
    reason = forms.CharField(
        max_length=1000, label="Reason for blocking", error_messages={"required": "Blocking needs a reason."}
    )
