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
from agreement.records import DEFAULT_MIN_ANSWERS
from annotate import selectors
from annotate.errors import InvalidAnswer
from annotate.models import Assignment, Batch, CrowdWorker, Provider, Qualification
from annotate.providers.mturk.screening import screening_problem
from annotate.services import WORDS_MAX, GoldAnswer, answer_words_clean
from annotate.services.twoafc import TwoAfcSettings
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


class TwoAfcAnswerForm(forms.Form):
    """A 2AFC trial's answer: which query image activates the unit more, and how sure the worker is."""

    choice = forms.ChoiceField(
        label="Which image activates the unit more?",
        choices=[("left", "Left image"), ("right", "Right image")],
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choice: pick the left or the right image.",
            "invalid_choice": "Choice: pick the left or the right image.",
        },
    )
    confidence = forms.TypedChoiceField(
        label="How sure are you?",
        choices=[("1", "1 · guessing"), ("2", "2 · fairly sure"), ("3", "3 · sure")],
        coerce=int,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Confidence: pick 1, 2 or 3.",
            "invalid_choice": "Confidence: pick 1, 2 or 3.",
        },
    )


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


def _parse_unit_numbers(text: str) -> list[int]:
    """'1, 4, 8-10' -> [1, 4, 8, 9, 10]: unit numbers as tally.csv and every page give them (channel + 1)."""
    numbers: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise forms.ValidationError(f"Unit numbers: {part!r} is not a unit number or a range like 8-10.")
        start, end = int(match[1]), int(match[2] or match[1])
        if start < 1 or end < start or end - start > 100_000:
            raise forms.ValidationError(
                f"Unit numbers: {part!r} is not a valid range (units are numbered from 1, as in tally.csv)."
            )
        numbers.extend(range(start, end + 1))
    return numbers


def _parse_gold(text: str, run: DissectionRun, layer: str) -> dict[int, GoldAnswer]:
    """Lines '<unit number>; <category>; <word>, <word>' -> {unit pk: GoldAnswer}."""
    gold: dict[int, GoldAnswer] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(";")]
        if len(parts) != 3:
            raise forms.ValidationError(
                f"Gold units, line {number}: expected '<unit number>; <category>; <word>, <word>'."
            )
        unit_number, category, words = parts
        if not unit_number.isdigit() or int(unit_number) < 1:
            raise forms.ValidationError(
                f"Gold units, line {number}: {unit_number!r} is not a unit number (numbered from 1)."
            )
        if category not in categories.CODES:
            raise forms.ValidationError(
                f"Gold units, line {number}: category {category!r} is not one of "
                f"{', '.join(categories.CODES)}."
            )
        accepted = tuple(w.strip() for w in words.split(",") if w.strip())
        if not accepted:
            raise forms.ValidationError(f"Gold units, line {number}: list at least one accepted word.")
        unit = Unit.objects.filter(run=run, layer=layer, channel=int(unit_number) - 1).first()
        if unit is None:
            raise forms.ValidationError(
                f"Gold units, line {number}: layer {layer!r} has no unit {unit_number}."
            )
        gold[unit.pk] = GoldAnswer(category, accepted)
    return gold


class QualificationCreateForm(forms.Form):
    """A qualification from gold units of one run the user may see; it belongs to the run's project."""

    name = forms.CharField(max_length=200)
    run = forms.ModelChoiceField(queryset=DissectionRun.objects.none())
    layer = forms.CharField(max_length=200, help_text="Layer name as in the run, e.g. conv4")
    gold = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Gold units",
        help_text="One per line: <unit number>; <category>; <accepted word>, <word>. "
        f"Categories: {', '.join(categories.CODES)}.",
    )
    min_accuracy_percent = forms.IntegerField(
        min_value=0, max_value=100, initial=80, label="Pass with at least (%)"
    )
    min_items = forms.IntegerField(
        min_value=1, max_value=100, initial=3, label="…over at least this many items"
    )
    images_per_item = forms.IntegerField(min_value=1, max_value=100, initial=20, label="Images per item")
    prolific_group_id = forms.CharField(
        max_length=100,
        required=False,
        label="Prolific participant group id",
        help_text="Optional: Prolific participants who pass join this participant group when a batch that "
        "requires the qualification syncs with Prolific, so your other Prolific studies can allow just them",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        run = cast("forms.ModelChoiceField[DissectionRun]", self.fields["run"])
        run.queryset = DissectionRun.objects.visible_to(user).order_by("-created_at")

    def clean_prolific_group_id(self) -> str:
        group = str(self.cleaned_data.get("prolific_group_id") or "").strip()
        if group and not group.isalnum():
            raise forms.ValidationError(f"{group!r} is not a Prolific id (letters and digits only).")
        return group

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        run, layer = data.get("run"), data.get("layer")
        if run is not None and layer and "gold" in data:
            try:
                self.gold_answers = _parse_gold(data["gold"], run, layer)
            except forms.ValidationError as exc:
                self.add_error("gold", exc)
        return data

    def qualification_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for services.qualifications.qualification_create."""
        d = self.cleaned_data
        return {
            "project": d["run"].project,
            "name": d["name"],
            "gold": self.gold_answers,
            "min_accuracy": d["min_accuracy_percent"] / 100,
            "min_items": d["min_items"],
            "images_per_item": d["images_per_item"],
            "prolific_group_id": d["prolific_group_id"],
        }


TWOAFC_CONDITIONS = [
    ("natural", "Natural: the unit's top images"),
    ("featviz", "Feature visualizations"),
    ("both", "Both"),
    ("none", "None (baseline)"),
]


class BatchCreateForm(forms.Form):
    """A batch from the units of one run the user may see; the batch belongs to the run's project."""

    title = forms.CharField(max_length=200)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    task_type = forms.ChoiceField(
        choices=Batch.TaskType.choices,
        initial=Batch.TaskType.LABEL,
        required=False,
        widget=forms.RadioSelect,
        label="Task",
    )
    run = forms.ModelChoiceField(queryset=DissectionRun.objects.none())
    layer = forms.CharField(max_length=200, help_text="Layer name as in the run, e.g. conv4")
    selection = forms.ChoiceField(
        choices=[
            ("all", "All units"),
            ("interpretable", "Interpretable units only"),
            ("sample", "A random sample"),
            ("list", "These units"),
        ],
        initial="all",
        widget=forms.RadioSelect,
    )
    sample_size = forms.IntegerField(min_value=1, required=False, label="Sample size")
    unit_numbers = forms.CharField(
        required=False,
        label="Unit numbers",
        help_text="As in tally.csv and on the run page (channel + 1), e.g. 1, 4, 8-10",
    )
    provider = forms.ChoiceField(choices=Provider.choices, initial=Provider.LOCAL)
    assignments_per_task = forms.IntegerField(min_value=1, max_value=100, initial=3, label="Workers per unit")
    images_per_task = forms.IntegerField(min_value=1, max_value=100, initial=20, label="Images per task")
    twoafc_conditions = forms.MultipleChoiceField(
        choices=TWOAFC_CONDITIONS,
        initial=["natural", "none"],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="2AFC conditions",
        help_text="What a 2AFC trial shows of the unit; each worker sees every condition, a unit under one",
    )
    twoafc_references = forms.IntegerField(
        min_value=1, max_value=100, initial=9, required=False, label="2AFC reference images"
    )
    twoafc_strong_percent = forms.FloatField(
        min_value=0.1,
        max_value=49,
        initial=5,
        required=False,
        label="2AFC strong query from the top (% of the probe set)",
        help_text="The strong query is drawn from the unit's top activations over the probe set, below the "
        "references; the weak one from its bottom share",
    )
    twoafc_weak_percent = forms.FloatField(
        min_value=0.1,
        max_value=49,
        initial=5,
        required=False,
        label="2AFC weak query from the bottom (% of the probe set)",
    )
    twoafc_catch_trials = forms.IntegerField(
        min_value=0,
        max_value=50,
        initial=2,
        required=False,
        label="2AFC catch trials",
        help_text="Obvious pairs on other units of the layer: the gold units of a 2AFC batch",
    )
    twoafc_seed = forms.IntegerField(min_value=0, initial=0, required=False, label="2AFC design seed")
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
        help_text="One per line: <unit number>; <category>; <accepted word>, <word>. "
        f"Categories: {', '.join(categories.CODES)}.",
    )
    auto_reject_failed_gold = forms.BooleanField(
        required=False, label="Reject assignments that fail a gold unit"
    )
    show_featviz = forms.BooleanField(
        required=False,
        label="Also show each unit's feature visualizations",
        help_text="Images optimized to drive the unit, beside its top images (units whose layer has them)",
    )
    block_below_percent = forms.IntegerField(
        min_value=0, max_value=100, required=False, label="Block workers whose gold accuracy is below (%)"
    )
    block_min_gold = forms.IntegerField(
        min_value=1, max_value=100, initial=2, label="…after this many gold answers"
    )
    qualifications = forms.ModelMultipleChoiceField(
        queryset=Qualification.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Require qualifications",
        help_text="Workers pass these short gold tests before their first task (on MTurk: the test of an "
        "MTurk qualification type that guards the HITs)",
    )
    min_answers = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=DEFAULT_MIN_ANSWERS,
        required=False,
        label="Minimum answers per unit for the comparison",
        help_text="Units with fewer answers are listed apart and enter no statistic; it can be changed "
        "later on the comparison page.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        run = cast("forms.ModelChoiceField[DissectionRun]", self.fields["run"])
        run.queryset = DissectionRun.objects.visible_to(user).order_by("-created_at")
        required = cast("forms.ModelMultipleChoiceField[Qualification]", self.fields["qualifications"])
        required.queryset = Qualification.objects.visible_to(user).order_by("name")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        run, layer = data.get("run"), data.get("layer")
        if run is None or not layer:
            return data
        required = list(data.get("qualifications") or [])
        if any(q.project_id != run.project_id for q in required):
            self.add_error("qualifications", f"Choose qualifications of the run's project {run.project}.")
        if data.get("provider") == Provider.MTURK:
            for problem in filter(None, (screening_problem(q) for q in required)):
                self.add_error("qualifications", problem)
        try:
            numbers = _parse_unit_numbers(data.get("unit_numbers") or "")
        except forms.ValidationError as exc:
            self.add_error("unit_numbers", exc)
            return data
        try:
            self.units = selectors.units_select(
                run=run,
                layer=layer,
                mode=data.get("selection", "all"),
                sample_size=data.get("sample_size"),
                numbers=numbers,
            )
        except InvalidAnswer as exc:
            raise forms.ValidationError(str(exc)) from None
        try:
            self.gold_answers = _parse_gold(data.get("gold") or "", run, layer)
        except forms.ValidationError as exc:
            self.add_error("gold", exc)
        if data.get("task_type") == Batch.TaskType.TWOAFC:
            if not data.get("twoafc_conditions"):
                self.add_error("twoafc_conditions", "Pick at least one condition for a 2AFC batch.")
            if self.gold_answers:
                self.add_error("gold", "A 2AFC batch's gold units are its catch trials; leave this empty.")
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
            "show_featviz": d["show_featviz"],
            "block_below_accuracy": None if percent is None else percent / 100,
            "block_min_gold": d["block_min_gold"],
            "prolific_completion_code": d["prolific_completion_code"],
            "min_answers": d.get("min_answers") or DEFAULT_MIN_ANSWERS,
        }


class ReviewForm(forms.Form):
    """Approve, reject or bonus the ticked answers, or approve every pending answer not ticked ('the
    rest'). A reject takes effect only with `confirm` set, after the page said what it will do."""

    action = forms.ChoiceField(
        choices=[
            ("approve", "Approve"),
            ("reject", "Reject"),
            ("bonus", "Bonus"),
            ("approve_rest", "Approve the rest"),
        ]
    )
    assignments = forms.ModelMultipleChoiceField(
        queryset=Assignment.objects.none(),
        to_field_name="public_id",
        required=False,
    )
    feedback = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Feedback to the worker (required to reject; the reason of a bonus)",
    )
    bonus_amount = forms.DecimalField(
        min_value=Decimal("0.01"), max_digits=8, decimal_places=2, required=False, label="Bonus (USD)"
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, batch: Batch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assignments = cast("forms.ModelMultipleChoiceField[Assignment]", self.fields["assignments"])
        assignments.queryset = Assignment.objects.filter(task__batch=batch).select_related(
            "worker", "task__unit"
        )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        action = data.get("action")
        if action in ("approve", "reject", "bonus") and not data.get("assignments"):
            self.add_error("assignments", "Select at least one assignment.")
        if action == "reject" and not (data.get("feedback") or "").strip():
            self.add_error("feedback", "Rejecting needs feedback that tells the worker why.")
        if action == "bonus":
            if data.get("bonus_amount") is None:
                self.add_error("bonus_amount", "Enter the bonus amount.")
            if not (data.get("feedback") or "").strip():
                self.add_error("feedback", "A bonus needs a reason the worker will see.")
        return data


class ReviewFilterForm(forms.Form):
    """The review page's filters (GET); an invalid value is reported and ignored."""

    status = forms.ChoiceField(
        choices=[
            ("", "Any decision"),
            ("pending", "Pending"),
            ("approved", "Approved"),
            ("rejected", "Rejected"),
        ],
        required=False,
        label="Decision",
    )
    failed_gold = forms.BooleanField(required=False, label="Failed a check item (gold)")
    low_precision = forms.BooleanField(
        required=False, label=f"Low precision (kept under {selectors.LOW_PRECISION:.0%} of the images)"
    )
    worker = forms.ModelChoiceField(
        queryset=CrowdWorker.objects.none(),
        to_field_name="public_id",
        required=False,
        empty_label="Every crowd worker",
        label="Crowd worker",
    )

    def __init__(self, *args: Any, batch: Batch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        worker = cast("forms.ModelChoiceField[CrowdWorker]", self.fields["worker"])
        worker.queryset = selectors.batch_workers(batch=batch)
        worker.label_from_instance = selectors.crowd_worker_name  # type: ignore[method-assign,assignment]

    def filters(self) -> selectors.ReviewFilters:
        """The filters asked for; none when the form is not valid."""
        if not self.is_valid():
            return selectors.ReviewFilters()
        data = self.cleaned_data
        return selectors.ReviewFilters(
            status=data["status"],
            failed_gold=data["failed_gold"],
            low_precision=data["low_precision"],
            worker=data["worker"],
        )


class BlockForm(forms.Form):
    reason = forms.CharField(
        max_length=1000, label="Reason for blocking", error_messages={"required": "Blocking needs a reason."}
    )


class MinAnswersForm(forms.Form):
    """The comparison page's setting: how many answers a unit needs to enter the statistics."""

    min_answers = forms.IntegerField(min_value=1, max_value=100, label="Minimum answers per unit")


def twoafc_batch_kwargs(form: BatchCreateForm) -> dict[str, Any]:
    """Keyword arguments for services.twoafc.twoafc_batch_create from a valid BatchCreateForm."""
    d = form.cleaned_data
    kwargs = form.batch_kwargs()
    for key in ("gold", "images_per_task", "min_answers", "show_featviz"):
        kwargs.pop(key, None)
    default = TwoAfcSettings()

    def given(name: str, fallback: Any) -> Any:
        return fallback if d.get(name) is None else d[name]

    kwargs["settings"] = TwoAfcSettings(
        conditions=tuple(d["twoafc_conditions"]),
        references=given("twoafc_references", default.references),
        strong_quantile=given("twoafc_strong_percent", default.strong_quantile * 100) / 100,
        weak_quantile=given("twoafc_weak_percent", default.weak_quantile * 100) / 100,
        catch_trials=given("twoafc_catch_trials", default.catch_trials),
        seed=given("twoafc_seed", default.seed),
    )
    return kwargs
