"""Reference solutions for the exercises of notebook 02 (the evolution strategy and its operators).

The notebook's last cell runs its checks on these functions, so a change that breaks either the
checks or the solutions fails in CI.
"""
import torch


def mutate_boundary(codes, lq, p, g, threshold=0.4):
    """Exercise 1: move each weight whose |residual| > ``threshold`` to its other neighbouring code
    with probability ``p`` (towards the float weight), clamped to the grid. The parent is not modified."""
    # residual against the *current* codes (lq.residual() would measure it against the RTN codes)
    resid = lq.weight / lq.step() + lq.zero_point.reshape((-1,) + (1,) * (codes.dim() - 1)) - codes.float()
    eligible = resid.abs() > threshold
    pick = eligible & (torch.rand(codes.shape, generator=g) < p)
    step = torch.sign(resid).to(torch.int16)
    return torch.where(pick, (codes + step).clamp(lq.qmin, lq.qmax), codes)


def one_plus_one(evaluator, state, steps, p, seed):
    """Exercise 2: a (1+1) ES: one child per step (residual mutation of a layer chosen by size),
    kept when its fitness is not worse than the parent's. Returns ``(best codes, fitness after each step)``."""
    from qevo_lite.es.operators import layer_weights, mutate
    g = torch.Generator().manual_seed(seed)
    probs = layer_weights(state, "size")
    names, weights = list(probs), torch.tensor(list(probs.values()))
    parent, parent_fit, trace = dict(evaluator.reference), evaluator.reference_eval.fitness, []
    for _ in range(steps):
        layer = names[int(torch.multinomial(weights, 1, generator=g))]
        child = mutate(parent, state, layer, "residual", p, g)
        ev = evaluator.evaluate(child)
        if ev.fitness <= parent_fit:
            parent, parent_fit = child, ev.fitness
            evaluator.set_reference(child, ev)
        trace.append(parent_fit)
    return parent, trace


def one_fifth_p(history, p0, window, lam, p_min=1e-5):
    """Exercise 3: the mutation rate after each generation under Rechenberg's 1/5 success rule, recomputed
    from the ``successes`` (children that beat the parent) of an ES history with ``lam`` children per
    generation."""
    p, out, wins = p0, [], []
    for h in history:
        wins.append(h["successes"])
        if len(wins) % window == 0:
            rate = sum(wins[-window:]) / (window * lam)
            p = min(1.0, max(p_min, p * (1.22 if rate > 0.2 else 0.82 if rate < 0.2 else 1.0)))
        out.append(p)
    return out
