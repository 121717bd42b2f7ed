"""Choosing the next token from logits: greedy, or temperature + top-k + top-p with a seeded
numpy Generator (one per request, so batching never changes which random numbers a request gets)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .params import GenerateParams


class Sampler:
    """Per-request token chooser; deterministic for a given seed and sequence of logits."""

    def __init__(self, params: GenerateParams) -> None:
        self.params = params
        self.rng = np.random.Generator(np.random.PCG64(params.seed))

    def choose(self, logits: npt.NDArray[np.float32]) -> int:
        p = self.params
        if p.temperature == 0:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < x.shape[0]:
            idx = np.argpartition(x, -p.top_k)[-p.top_k :]
        else:
            idx = np.arange(x.shape[0])
        vals = x[idx]
        order = np.argsort(-vals, kind="stable")
        idx, vals = idx[order], vals[order]
        probs = np.exp(vals - vals[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            idx, probs = idx[:keep], probs[:keep] / probs[:keep].sum()
        cdf = np.cumsum(probs)
        pick = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return int(idx[min(pick, len(idx) - 1)])
