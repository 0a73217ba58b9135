"""Top-k retrieval over score blocks: gather CSR rows, mask them with -inf, take ``topk`` on the device."""
from __future__ import annotations

import math

import numpy as np
import torch


def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of CSR rows ``rows`` as ``(position in rows, column)`` pairs, without a Python loop."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = indptr[rows], indptr[rows + 1]
    lengths = stops - starts
    position = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return position, indices[np.repeat(starts, lengths) + offsets]


def mask_(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """Set ``scores[rows, cols] = -inf`` in place and return ``scores``."""
    if len(rows):
        scores[torch.as_tensor(rows, device=scores.device), torch.as_tensor(cols, device=scores.device)] = -math.inf
    return scores


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, values)`` of the ``k`` best columns per row (``k`` capped at the number of columns)."""
    values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return indices, values
