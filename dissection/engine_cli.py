"""Subcommands synth, train-toy, run, report (the dissection engine)."""
from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this module's subcommands; each sets `handler` to a function(args) -> exit code."""
