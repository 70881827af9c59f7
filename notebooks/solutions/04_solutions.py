"""Reference solutions for the exercises of notebook 04 (the ResNet experiment).

The notebook's last cell runs its checks on these functions, so a change that breaks either the
checks or the solutions fails in CI.
"""
import statistics


def moved_share_by_layer(cell):
    """Exercise 1: ``{layer: moved / weights}`` in graph order."""
    return {n: v["moved"] / v["weights"] for n, v in cell["moved"]["per_layer"].items()}


def spearman(xs, ys):
    """Exercise 2: Pearson correlation of the ranks (no ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0] * len(v)
        for rank, i in enumerate(order):
            r[i] = rank
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
