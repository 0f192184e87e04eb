"""Thresholds T_k from a unit's largest activations only, exactly as `np.quantile` over all of them.

`paper`: the 0.995 quantile (NumPy's linear method); `netdissect-lite`: 994/999 (hazen), as NetDissect-Lite.
"""

from __future__ import annotations

import math

import numpy as np

from dissection.errors import DissectionError

SEMANTICS = ("paper", "netdissect-lite")
_QUANTILE = {"paper": (0.995, "linear"), "netdissect-lite": (994 / 999, "hazen")}


def check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise DissectionError(f"unknown semantics {semantics!r}; use one of {', '.join(SEMANTICS)}")


def _virtual_index(n: int, q: float, method: str) -> float:
    """NumPy's 0-based virtual index of quantile q among n sorted values."""
    if method == "linear":
        return (n - 1) * q
    return n * q + (0.5 + q * (1 - 0.5 - 0.5)) - 1  # hazen: alpha = beta = 1/2


def candidates_needed(n: int) -> int:
    """How many of a unit's largest values determine its quantile in both semantics (n values in all)."""
    lowest = min(math.floor(max(0.0, _virtual_index(n, q, method))) for q, method in _QUANTILE.values())
    return min(n, n - lowest + 1)


def quantile_from_top(top: np.ndarray, n: int, semantics: str) -> np.ndarray:
    """Each row's quantile as `np.quantile` computes it over n values, given the row's top values
    (descending)."""
    q, method = _QUANTILE[semantics]
    vi = _virtual_index(n, q, method)
    if vi >= n - 1:
        previous = following = n - 1
    elif vi < 0:
        previous = following = 0
    else:
        previous = math.floor(vi)
        following = previous + 1
    gamma = vi - math.floor(vi)
    a = top[:, n - 1 - previous].astype(np.float64)
    b = top[:, n - 1 - following].astype(np.float64)
    diff = b - a
    result: np.ndarray = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
    return result


def float32_below(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each threshold, so that `x > t32` equals `x > t` for every float32 x."""
    t32 = thresholds.astype(np.float32)
    above = t32.astype(np.float64) > thresholds
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32
