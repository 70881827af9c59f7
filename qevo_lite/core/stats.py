"""Small statistics shared by the summaries: seed means and spreads."""
from __future__ import annotations

import statistics


def mean_std(values) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of a sequence (std 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value.")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
