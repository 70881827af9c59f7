"""Reference solutions for the exercises of notebook 03 (the VGG experiment).

The notebook's last cell runs its checks on these functions, so a change that breaks either the
checks or the solutions fails in CI.
"""
import statistics


def gap_recovered(fp32, rtn, es):
    """Exercise 1: (ES - RTN) / (FP32 - RTN), or None when rounding lost nothing."""
    gap = fp32 - rtn
    return (es - rtn) / gap if gap > 0 else None


def seed_noise(cells, bits):
    """Exercise 2: sample standard deviation over seeds of the ES test accuracy at ``bits``."""
    accs = [c["es_test_accuracy"] for c in cells.values() if c["bits"] == bits and c["es_run"]]
    return statistics.stdev(accs) if len(accs) > 1 else 0.0
