"""`agreement` stands alone: importing every module of it loads neither Django nor the rest of unitscope."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import agreement

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("django", "annotate", "runs", "dissection", "workers", "config")

PROBE = """
import importlib, json, pkgutil, sys
import agreement
names = sorted(f"agreement.{m.name}" for m in pkgutil.iter_modules(agreement.__path__))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_every_agreement_module_imports_without_django_or_the_platform() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    expected = sorted(f"agreement.{module.name}" for module in pkgutil.iter_modules(agreement.__path__))
    assert result["imported"] == expected
    assert {"agreement.summary", "agreement.plots", "agreement.simulation", "agreement.gold"} <= set(expected)
    leaked = [name for name in result["loaded"] if name.split(".")[0] in FORBIDDEN]
    assert leaked == []
