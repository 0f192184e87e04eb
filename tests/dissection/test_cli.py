"""The `python -m dissection` parser: every probe-set flag under both spellings, and help without torch."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from dissection.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("synth", "train-toy", "run", "report", "cam", "localize")

# Each subcommand that reads a probe set, with the other arguments it requires.
PROBE_SET_COMMANDS = {
    "run": ["--model", "toy", "--layer", "conv4", "--out", "out"],
    "train-toy": ["toy.pt"],
    "localize": ["--model", "toy", "--out", "out"],
}


@pytest.mark.parametrize("flag", ["--probe-set", "--dataset"])
@pytest.mark.parametrize("command", list(PROBE_SET_COMMANDS))
def test_probe_set_flag_and_its_dataset_alias(command: str, flag: str) -> None:
    args = build_parser().parse_args([command, *PROBE_SET_COMMANDS[command], flag, "probe"])
    assert args.probe_set == Path("probe")


@pytest.mark.parametrize("command", list(PROBE_SET_COMMANDS))
def test_help_names_the_probe_set_flag_first(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "--probe-set PROBE_SET, --dataset PROBE_SET" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)])
def test_help_does_not_import_torch(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dissection", *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m dissection" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines}
    assert "dissection.cli" in imported
    assert not {name for name in imported if name.split(".")[0] in {"torch", "torchvision"}}


def test_the_cli_as_its_own_process_freezes_its_imports_out_of_the_collector() -> None:
    from dissection.cli import _importing

    frozen = gc.get_freeze_count()
    with _importing(False):
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    try:
        with _importing(True):
            assert not gc.isenabled()
            made = [[] for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
    finally:
        gc.unfreeze()
