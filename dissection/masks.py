"""Exact unit masks: the pixels where a map, upsampled bilinearly to the mask size, exceeds T_k.

Only cells of the map with a corner above T can hold such pixels, so only those are upsampled, in float64
from the definition; a full float32 `F.interpolate` of every map would be both slower and inexact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BilinearAxis:
    """Bilinear resampling (align_corners=False, as F.interpolate) along one axis, by cell: output coordinate
    o reads sources lo(o) and min(lo(o) + 1, n - 1). The outputs with lo = r are split into pieces of at most
    `ceil(size_out / size_in)`; `pieces[r]` lists cell r's pieces (-1 = padding), `cells[q]` piece q's outputs
    (-1 = padding) and `weights[q]` their float64 weights on the two sources (NaN for padding)."""

    size_out: int
    cells: torch.Tensor  # pieces x L int64
    weights: torch.Tensor  # pieces x L x 2 float64
    pieces: torch.Tensor  # size_in x K int64
    single: bool  # every cell is exactly one piece (known on the host: no device sync per batch)


def bilinear_axis(size_in: int, size_out: int, device: torch.device | str) -> BilinearAxis:
    src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    w_hi = src - lo
    width = max(1, -(-size_out // size_in))
    chunks: list[list[np.ndarray]] = []
    for r in range(size_in):
        outs = np.nonzero(lo == r)[0]
        chunks.append([outs[i : i + width] for i in range(0, len(outs), width)])
    count = sum(len(c) for c in chunks)
    cells = np.full((max(1, count), width), -1, np.int64)
    weights = np.full((max(1, count), width, 2), np.nan)  # padding: NaN values, never above T
    pieces = np.full((size_in, max(1, max(len(c) for c in chunks))), -1, np.int64)
    q = 0
    for r, parts in enumerate(chunks):
        for j, outs in enumerate(parts):
            pieces[r, j] = q
            cells[q, : len(outs)] = outs
            weights[q, : len(outs), 0] = 1.0 - w_hi[outs]
            weights[q, : len(outs), 1] = w_hi[outs]
            q += 1
    return BilinearAxis(
        size_out,
        torch.from_numpy(cells).to(device),
        torch.from_numpy(weights).to(device),
        torch.from_numpy(pieces).to(device),
        bool(pieces.shape[1] == 1 and (pieces >= 0).all()),
    )


def mask_pixels(
    maps: torch.Tensor, t64: torch.Tensor, t32: torch.Tensor, ay: BilinearAxis, ax: BilinearAxis
) -> tuple[torch.Tensor, torch.Tensor]:
    """(map index, pixel index) of every mask pixel (upsampled value > T) of maps (n x h x w) with
    thresholds t64 (float64) / t32 (the largest float32 ≤ t64), in map order, each pixel once.

    A bilinear value is a convex combination of the four corners of its cell, so only cells with a corner
    above T can hold mask pixels; those cells are upsampled in float64 from their 2 x 2 corners, piece by
    piece (each output of a cell belongs to exactly one row piece and one column piece).
    """
    h, w = maps.shape[1:]
    hot = F.pad(maps > t32[:, None, None], (0, 1, 0, 1))
    cell_hot = hot[:, :-1, :-1] | hot[:, 1:, :-1] | hot[:, :-1, 1:] | hot[:, 1:, 1:]
    cell_p, cell_r, cell_c = torch.nonzero(cell_hot, as_tuple=True)
    piece_r, piece_c = ay.pieces[cell_r], ax.pieces[cell_c]
    if ay.single and ax.single:
        piece_r, piece_c = piece_r[:, 0], piece_c[:, 0]
    else:
        both = (piece_r >= 0)[:, :, None] & (piece_c >= 0)[:, None, :]
        which, i, j = torch.nonzero(both, as_tuple=True)
        piece_r, piece_c = piece_r[which, i], piece_c[which, j]
        cell_p, cell_r, cell_c = cell_p[which], cell_r[which], cell_c[which]
    rows2 = torch.stack([cell_r, (cell_r + 1).clamp_(max=h - 1)], 1)
    cols2 = torch.stack([cell_c, (cell_c + 1).clamp_(max=w - 1)], 1)
    corners = maps[cell_p[:, None, None], rows2[:, :, None], cols2[:, None, :]].double()
    values = torch.bmm(torch.bmm(ay.weights[piece_r], corners), ax.weights[piece_c].transpose(1, 2))
    above = values > t64[cell_p][:, None, None]  # padded outputs are NaN
    cell, r, c = torch.nonzero(above, as_tuple=True)
    return cell_p[cell], ay.cells[piece_r[cell], r] * ax.size_out + ax.cells[piece_c[cell], c]
