"""The local stage's ES on the exact quadratic fitness of each layer (see
:mod:`qevo_lite.evaluators.quadratic`).

Every output channel of a layer is its own (1+lambda) ES, and all channels of the layer run at once, in
a few tensor operations per generation:

* **mutation**: an offspring moves one code by +/-1 (the *first move*) and, if that helps, a second code
  of the same channel (its *partner*). First moves are drawn half from the channel's ``topk`` moves of
  best predicted gain (``2 s g_i + s^2 H_ii`` for a move of +1 step ``s``, its sign flipped for -1) and
  half uniformly from all valid moves (exploration); the partner is the best one given the first move,
  found exactly over every column (``2 s_i s_j H_ij`` couples the two);
* **selection**: plus selection per channel: the best offspring replaces the parent when it lowers the
  channel's output error;
* **stop**: after ``generations``, or when no channel improved for ``patience`` generations.

An *evaluation* is one candidate (a set of moves inside one output channel): a first move with each of
its possible partners counts as ``2K`` evaluations, the first move alone as one.
"""
from __future__ import annotations

import time

import torch

from ..evaluators.quadratic import LayerQuadratic


def _first_moves(cost: torch.Tensor, lam: int, topk: int, g: torch.Generator) -> torch.Tensor:
    """(C, lam) indices into ``cost`` (C, 2K): half among each row's ``topk`` cheapest, half uniform."""
    rows, width = cost.shape
    n_top = (lam + 1) // 2
    best = cost.topk(min(topk, width), dim=1, largest=False).indices                  # (C, topk)
    pick = torch.randint(best.shape[1], (rows, n_top), generator=g)
    uniform = torch.randint(width, (rows, lam - n_top), generator=g)
    return torch.cat([best.gather(1, pick), uniform], 1)


def _generation(q: LayerQuadratic, rows: torch.Tensor, lam: int, topk: int, g: torch.Generator):
    """One generation for channels ``rows``: ``(cols (n, 2), moves (n, 2), dE (n,))`` of each channel's best
    offspring (moves 0 where there is no partner) and the number of candidates evaluated."""
    k = q.k
    s = q.step[rows, None]
    grp = q.h_of[rows]                                                                 # each row's H
    hd = torch.diagonal(q.h, dim1=1, dim2=2)[grp]                                      # (n, K)
    gr, cr = q.g[rows], q.codes[rows]
    up = torch.where(cr < q.qmax, 2 * s * gr + s * s * hd, torch.inf)
    down = torch.where(cr > q.qmin, -2 * s * gr + s * s * hd, torch.inf)
    cost = torch.cat([up, down], 1)                                                     # (n, 2K)
    first = _first_moves(cost, lam, topk, g)                                            # (n, lam)
    i, si = first % k, torch.where(first < k, 1.0, -1.0).double()
    d1 = cost.gather(1, first)                                                          # (n, lam)
    cross = 2 * (si * s)[:, :, None] * s[:, :, None] * q.h[grp[:, None], i]            # (n, lam, K)
    pair = torch.cat([up[:, None] + cross, down[:, None] - cross], 2)                   # (n, lam, 2K)
    own = torch.stack([i, i + k], 2)                                                    # a code moves once
    pair.scatter_(2, own, torch.inf)
    best_pair, partner = pair.min(2)
    total = torch.where(best_pair < 0, d1 + best_pair, d1)                             # partner only if it helps
    value, which = total.min(1)
    arange = torch.arange(len(rows))
    j = partner[arange, which]
    use_pair = best_pair[arange, which] < 0
    cols = torch.stack([i[arange, which], torch.where(use_pair, j % k, (i[arange, which] + 1) % k)], 1)
    moves = torch.stack([si[arange, which], torch.where(use_pair, torch.where(j < k, 1.0, -1.0), 0.0).double()], 1)
    return cols, moves, value, len(rows) * lam * (2 * k + 1)


def evolve_layer(q: LayerQuadratic, generations: int = 2000, lam: int = 16, topk: int = 32, patience: int = 100,
                 seed: int = 0, block: int = 1 << 22) -> dict:
    """Run the per-channel (1+lambda) ES on layer ``q`` in place (``q.codes`` end evolved).

    ``block``: bounds the floats of one generation's partner table (channels are processed in blocks).
    Returns ``{before, after (squared output error / outputs), generations, moves (accepted offspring),
    evaluations, seconds}``."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    before = q.error / q.positions
    rows_all = torch.arange(q.codes.shape[0])
    per_block = max(1, block // (lam * 2 * q.k))
    gen, idle, moves, evaluations = 0, 0, 0, 0
    while gen < generations and idle < patience:
        accepted = 0
        for b in range(0, len(rows_all), per_block):
            rows = rows_all[b:b + per_block]
            cols, mv, value, n = _generation(q, rows, lam, topk, g)
            evaluations += n
            ok = value < -1e-12 * max(1.0, q.error)
            if ok.any():
                q.apply(rows[ok], cols[ok], mv[ok], value[ok])
                accepted += int(ok.sum())
        gen += 1
        moves += accepted
        idle = 0 if accepted else idle + 1
    return {"before": before, "after": q.error / q.positions, "generations": gen, "moves": moves,
            "evaluations": evaluations, "seconds": time.perf_counter() - t0}
