import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agreement.records import ALL_LAYERS
from annotate.management.commands.export_batch import find_batch
from annotate.models import Batch
from annotate.selectors.comparison import (
    Aggregation,
    batch_comparison_input,
    comparison_summarize,
    table_csv,
)
from annotate.selectors.twoafc import twoafc_results

STATISTICS = (
    "units",
    "fleiss_kappa",
    "krippendorff_alpha",
    "word_agreement",
    "category_agreement",
    "cohen_kappa",
    "concept_match_rate",
    "mean_precision",
)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_text(summary: dict[str, Any]) -> str:
    """The headline statistics per layer and overall, and the verification shares, as aligned text."""
    scopes = [*summary["layers"].items(), (ALL_LAYERS, summary)]
    width = max(len(name) for name, _ in scopes)
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{name:>18}" for name in STATISTICS)]
    for name, scope in scopes:
        lines.append(
            f"{name:<{width}}  " + "  ".join(f"{_number(scope.get(stat)):>18}" for stat in STATISTICS)
        )
    for name, scope in scopes:
        for source, entry in (scope.get("verification") or {}).items():
            share = (
                "n/a"
                if entry["share"] is None
                else (f"{entry['share']:.3f} [{entry['ci'][0]:.3f}, {entry['ci'][1]:.3f}]")
            )
            lines.append(
                f"verification {name}: {source} labels judged correct {entry['correct']}/{entry['units']} "
                f"= {share}"
            )
    lines += [f"note: {note}" for note in summary.get("notes", [])]
    return "\n".join(lines)


def twoafc_text(results: dict[str, Any]) -> str:
    """A 2AFC batch's proportion correct per layer and condition, its differences, its predictable units."""
    lines = [
        f"2AFC: {results['trials']} trials; catch trials passed "
        f"{results['catch']['passed']}/{results['catch']['trials']}"
    ]
    for row in results["tables"]["twoafc_conditions"]:
        interval = "" if row["ci_low"] is None else f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        lines.append(
            f"2AFC {row['layer']} {row['condition']}: {row['correct_trials']}/{row['trials']} correct = "
            f"{_number(row['proportion_correct'])}{interval}, median reaction "
            f"{_number(row['median_reaction_ms'])} ms, mean confidence {_number(row['mean_confidence'])}"
        )
    for row in results["tables"]["twoafc_differences"]:
        interval = "" if row["ci_low"] is None else f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        reason = f" ({row['reason']})" if row["reason"] else ""
        lines.append(f"2AFC {row['first']} - {row['second']}: {_number(row['difference'])}{interval}{reason}")
    predictable = [row["unit_key"] for row in results["tables"]["twoafc_units"] if row["predictable"]]
    lines.append(f"2AFC units people could predict: {', '.join(predictable) or 'none'}")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class Command(BaseCommand):
    help = (
        "Compare human and automatic labels of a batch: print the statistics per layer and write the whole "
        "summary as JSON (--json) and every table as CSV (--tables)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch", help="batch id, public id or title")
        parser.add_argument(
            "--json", type=Path, dest="json_path", help="write the whole summary, tables included"
        )
        parser.add_argument("--tables", type=Path, help="folder to write every table to as <table>.csv")
        parser.add_argument("--aggregation", choices=("dawid_skene", "majority"), default="dawid_skene")
        parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(
        self,
        *args: object,
        batch: str,
        json_path: Path | None,
        tables: Path | None,
        aggregation: Aggregation,
        resamples: int,
        seed: int,
        **options: object,
    ) -> None:
        if resamples < 1:
            raise CommandError(f"--resamples must be at least 1, got {resamples}")
        if tables is not None and tables.exists() and not tables.is_dir():
            raise CommandError(f"--tables {tables}: not a folder")
        if json_path is not None and not json_path.parent.is_dir():
            raise CommandError(f"--json {json_path}: folder {json_path.parent} does not exist")
        found = find_batch(batch)
        try:
            summary = comparison_summarize(
                data=batch_comparison_input(batch=found),
                aggregation=aggregation,
                n_resamples=resamples,
                seed=seed,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(summary_text(summary))
        if found.task_type == Batch.TaskType.TWOAFC:
            results = twoafc_results(batch=found, n_resamples=resamples, seed=seed)
            summary["twoafc"] = results
            summary["tables"].update(results["tables"])
            self.stdout.write(twoafc_text(results))
        if json_path is not None:
            _write(json_path, json.dumps(summary, indent=2) + "\n")
            self.stderr.write(f"Wrote the summary to {json_path}.")
        if tables is not None:
            tables.mkdir(parents=True, exist_ok=True)
            for name, rows in summary["tables"].items():
                _write(tables / f"{name}.csv", table_csv(rows))
            self.stderr.write(f"Wrote {len(summary['tables'])} tables to {tables}/.")
