"""Batch export as CSV or JSON, shared by the review page and `manage.py export_batch`."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from annotate.selectors import EXPORT_FIELDS

FORMATS = ("csv", "json")
# Spreadsheet programs run cells that start with these as formulas; worker text must stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_rows(rows: Sequence[dict[str, Any]], stream: TextIO, fmt: str) -> None:
    """Write `rows` (from selectors.batch_export_rows) to `stream` as `fmt` (csv or json)."""
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: csv_cell(row[key]) for key in EXPORT_FIELDS})
    elif fmt == "json":
        json.dump(list(rows), stream, indent=2)
        stream.write("\n")
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
