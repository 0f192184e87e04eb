"""Which answers enter the comparison: counted statuses, one answer per worker and unit, synonyms from the
probe set's label.csv, verification answers from any batch on the units."""

from __future__ import annotations

from pathlib import Path

from django.urls import reverse

from annotate import services
from annotate.models import Batch, Provider
from annotate.selectors.comparison import (
    batch_comparison_input,
    comparison_fingerprint,
    comparison_summarize,
    run_comparison_input,
    run_synonyms,
)
from runs.models import DissectionRun, ProbeSet, Unit


def _answer(batch: Batch, unit: Unit, worker_id: str, words: str, category: str) -> None:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(unit=unit), worker=worker)
    services.annotation_submit(assignment=assignment, words=words, category=category)


def test_rejected_answers_do_not_count(batch: Batch, units: list[Unit]) -> None:
    _answer(batch, units[0], "ann", "red", "color")
    _answer(batch, units[0], "bob", "blue", "color")
    bad = batch.tasks.get(unit=units[0]).assignments.get(worker__external_id="bob")
    services.assignment_reject(assignment=bad, feedback="Not a colour of these images.")
    record = batch_comparison_input(batch=batch).records[0]
    assert [(a.worker, a.words) for a in record.answers] == [("ann", "red")]


def test_run_counts_a_worker_once_per_unit_with_the_latest_answer(
    make_batch, units: list[Unit], run: DissectionRun
) -> None:
    first, second = make_batch(title="first"), make_batch(title="second")
    _answer(first, units[0], "ann", "blue", "color")
    _answer(second, units[0], "ann", "red", "color")
    _answer(second, units[0], "bob", "red", "color")
    records = {r.unit_key: r for r in run_comparison_input(run=run).records}
    assert sorted((a.worker, a.words) for a in records["conv3 unit 1"].answers) == [
        ("ann", "red"),
        ("bob", "red"),
    ]
    assert [a.words for a in batch_comparison_input(batch=first).records[0].answers] == ["blue"]
    assert records["conv3 unit 1"].url == reverse("annotate:unit_detail", args=[units[0].pk])


def test_synonyms_from_the_probe_sets_label_csv(
    tmp_path: Path, batch: Batch, units: list[Unit], run: DissectionRun
) -> None:
    (tmp_path / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "1,dog,object,1,1,puppy;hound\n2,red-c,color,1,1,crimson\n"
    )
    run.probe_set = ProbeSet.objects.create(project=run.project, name="tiny", path=str(tmp_path))
    run.save()
    assert run_synonyms(run=run)["puppy"] == "dog"
    _answer(batch, units[5], "ann", "Puppies", "object")
    _answer(batch, units[5], "bob", "hound", "object")
    _answer(batch, units[0], "ann", "crimson", "color")
    _answer(batch, units[0], "bob", "red", "color")
    before = comparison_fingerprint(batch=batch, aggregation="dawid_skene")
    rows = {
        row["unit_key"]: row
        for row in comparison_summarize(data=batch_comparison_input(batch=batch), n_resamples=10)["tables"][
            "units"
        ]
    }
    assert rows["conv4 unit 6"]["consensus_word"] == "dog" and rows["conv4 unit 6"]["concept_match"] is True
    assert rows["conv4 unit 6"]["word_agreement"] == 1.0
    assert rows["conv3 unit 1"]["consensus_word"] == "red" and rows["conv3 unit 1"]["concept_match"] is True
    assert comparison_fingerprint(batch=batch, aggregation="dawid_skene") == before
    (tmp_path / "label.csv").write_text("number,name,category,frequency,coverage,syns\n1,dog,object,1,1,\n")
    assert comparison_fingerprint(batch=batch, aggregation="dawid_skene") != before, "synonyms are an input"


def test_probe_set_without_label_csv_or_remote_has_no_synonyms(tmp_path: Path, run: DissectionRun) -> None:
    run.probe_set = ProbeSet.objects.create(project=run.project, name="empty", path=str(tmp_path))
    assert run_synonyms(run=run) is None
    run.probe_set = ProbeSet.objects.create(project=run.project, name="remote", path="s3://bucket/broden")
    assert run_synonyms(run=run) is None


def test_unreadable_label_csv_is_a_note(tmp_path: Path, batch: Batch, run: DissectionRun) -> None:
    (tmp_path / "label.csv").write_text("number,title\n1,dog\n")
    run.probe_set = ProbeSet.objects.create(project=run.project, name="broken", path=str(tmp_path))
    run.save()
    data = batch_comparison_input(batch=batch)
    assert data.synonyms is None
    assert data.notes == [
        f"run 'compare run': synonyms are not used: {tmp_path / 'label.csv'}: no 'name' column in the header"
    ]
    assert comparison_summarize(data=data, n_resamples=10)["notes"] == data.notes
