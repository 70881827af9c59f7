"""Reference solutions for the exercises of notebook 07 (rounding methods side by side).

The notebook's last cell runs its checks on these functions, so a change that breaks either the
checks or the solutions fails in CI.
"""


def output_error(d, h):
    """Exercise 1: ``d^T H d``, the squared output error a weight change ``d`` adds to a row at zero residual."""
    return d @ h @ d


def move_change(g, h, step, i, j, si, sj):
    """Exercise 2: the exact error change of moving code ``i`` by ``si`` and ``j`` by ``sj`` steps:
    ``2 (di g_i + dj g_j) + di^2 H_ii + dj^2 H_jj + 2 di dj H_ij`` with ``d = step * s``."""
    di, dj = step * si, step * sj
    return 2 * (di * g[i] + dj * g[j]) + di * di * h[i, i] + dj * dj * h[j, j] + 2 * di * dj * h[i, j]


def rounding_regulariser(h, beta):
    """Exercise 3: AdaRound's ``sum(1 - |2 h - 1|^beta)``."""
    return (1 - (2 * h - 1).abs() ** beta).sum()
