"""Reference solutions for the exercises of notebook 05 (detection).

The notebook's last cell runs its checks on these functions, so a change that breaks either the
checks or the solutions fails in CI.
"""
import statistics


def box_iou(a, b):
    """Exercise 1: intersection over union of two (x1, y1, x2, y2) boxes (pixels)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mean_gain(cells, arch, bits, key="map"):
    """Exercise 2: mean over seeds of (ES - RTN) held-out ``key`` in points."""
    gains = [100 * (c[f"es_test_{key}"] - c[f"rtn_test_{key}"]) for c in cells.values()
             if c.get("arch") == arch and c.get("bits") == bits and c.get("es_run")]
    return statistics.fmean(gains)
