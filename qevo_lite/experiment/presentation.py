"""What the task notebooks (03-07) print, for any task: RTN's table, where the ES runs, the moved weights, the
held-out summary.

Every function reads the task's own metrics (:attr:`Task.metrics`), so notebook 05 (mAP), 06 (MSE, PSNR,
AUROC) and the classification walk (:mod:`qevo_lite.tasks.classification.walk`, accuracy) show the same steps
with one piece of code. Tables are printed with fixed formats, so the notebooks' checked outputs stay stable.
Values are printed as the evaluations return them (accuracy and mAP as fractions, MSE normalised, PSNR in dB).
"""
from __future__ import annotations

import statistics

# the moved-weight statistics of a cell (``cell["moved"]``, :func:`qevo_lite.experiment.moved.moved_analysis`)
MOVED_KEYS = ("share", "near_boundary_all", "near_boundary_moved", "toward_other_neighbour", "more_than_one_step",
              "weight_error_ratio")


def rtn_rows(ctx, arch: str, bits=None, granularities=("per_channel", "per_tensor")) -> list[dict]:
    """``[{"arch", "bits", "granularity", "rule", "search": {metric: value}, "test": {metric: value}}]``: nearest
    rounding of ``arch`` at each of ``bits`` (default: the profile's) on each grid, with the scale rule of lowest
    search loss (:meth:`Context.rtn`)."""
    rows = []
    for b in bits if bits is not None else ctx.profile.grid.bits:
        for g in granularities:
            r = ctx.rtn(arch, b, g)
            rows.append({"arch": arch, "bits": b, "granularity": g, "rule": r["rule"], "search": dict(r["search"]),
                         "test": dict(r["test"])})
    return rows


def rtn_value(rows: list[dict], bits: int, key: str, granularity: str = "per_channel", split: str = "test",
              arch: str | None = None) -> float:
    """One number of :func:`rtn_rows`: metric ``key`` on ``split`` at ``bits`` (of ``arch``, if the rows hold
    several models)."""
    return next(r[split][key] for r in rows if r["bits"] == bits and r["granularity"] == granularity
                and (arch is None or r["arch"] == arch))


def print_rtn_table(ctx, rows: list[dict], split: str = "test") -> None:
    """Per model: FP32's numbers, then per bit width and grid the chosen scale rule and every metric of the task
    on ``split`` (the held-out split by default; the search split chose the rule)."""
    keys = [m.key for m in ctx.task.metrics if m.key in rows[0][split]]
    grids = list(dict.fromkeys(r["granularity"] for r in rows))
    head = "".join(f" {k:>8s}" for k in keys)
    for arch in dict.fromkeys(r["arch"] for r in rows):
        fp32 = ctx.fp32(arch)[split]
        print(f"{arch}, {split} split: FP32" + "".join(f" {k} {fp32[k]:.3f}" for k in keys))
        print(f"{'bits':>4}" + "".join(f"  {g.replace('_', '-') + ' rule':18s}{head}" for g in grids))
        for b in dict.fromkeys(r["bits"] for r in rows if r["arch"] == arch):
            line = f"{b:4d}"
            for g in grids:
                r = next(r for r in rows if r["arch"] == arch and r["bits"] == b and r["granularity"] == g)
                line += f"  {r['rule']:18s}" + "".join(f" {r[split][k]:8.3f}" for k in keys)
            print(line)


def print_where_es_runs(ctx, arch: str, bits=None) -> dict:
    """Per bit width (default: the profile's): what RTN costs on the **search** split's headline metric and
    whether the profile runs the ES there, else why (:meth:`Context.es_skip_reason`). Returns ``{bits: reason
    or None}``."""
    m = ctx.task.metrics[0]
    out = {}
    for b in bits if bits is not None else ctx.profile.grid.bits:
        key, cost = ctx.rtn_search_cost(arch, b)
        out[b] = ctx.es_skip_reason(arch, b)
        word = "below" if m.higher_is_better else "above"
        print(f"W{b}: RTN's search {key} {cost:7.1f} {m.cost_unit} {word} FP32 -> ES "
              + ("runs" if out[b] is None else f"does not run ({out[b]})"))
    return out


def es_cells(cells: dict, task, arch: str, bits: int) -> list[dict]:
    """The cells of ``arch`` at ``bits`` where the ES ran, in seed order."""
    cs = [c for c in cells.values() if c.get("task") == task.name and c["arch"] == arch and c["bits"] == bits
          and c.get("es_run")]
    return sorted(cs, key=lambda c: c["seed"])


def moved_means(cells: dict, task, arch: str, bits: int) -> dict:
    """Seed means of the moved-weight statistics (:data:`MOVED_KEYS`) of ``arch`` at ``bits``, plus
    ``"per_layer"``: ``{layer: {"moved": mean count, "share": mean share of its weights, "weights": its weights,
    "sensitivity": its sensitivity}}``."""
    ms = [c["moved"] for c in es_cells(cells, task, arch, bits)]
    if not ms:
        raise ValueError(f"The ES did not run on {arch} at W{bits} in these cells.")
    out = {k: statistics.fmean(m[k] for m in ms) for k in MOVED_KEYS}
    out["per_layer"] = {n: {"moved": statistics.fmean(m["per_layer"][n]["moved"] for m in ms),
                            "share": statistics.fmean(m["per_layer"][n]["share"] for m in ms),
                            "weights": v["weights"], "sensitivity": v.get("sensitivity")}
                        for n, v in ms[0]["per_layer"].items()}
    out["seeds"] = len(ms)
    return out


def print_moved(means: dict, arch: str, bits: int, width: int = 22) -> None:
    """:func:`moved_means` as text: the whole model's statistics, then one line per layer."""
    print(f"{arch} W{bits}, seed means over {means['seeds']} seeds: moved {means['share']:.4f} of the weights, "
          f"{means['more_than_one_step']:.3f} of them by more than one step; |residual| > 0.4 among all "
          f"{means['near_boundary_all']:.3f}, among the moved {means['near_boundary_moved']:.3f}; to the other "
          f"neighbour {means['toward_other_neighbour']:.3f}; weight error / RTN's {means['weight_error_ratio']:.3f}")
    for n, v in means["per_layer"].items():
        sens = f"   sensitivity {v['sensitivity']:.3f}" if v["sensitivity"] is not None else ""
        print(f"  {n:{width}s} {v['moved']:7.1f} of {v['weights']:6d} moved ({100 * v['share']:5.2f}%){sens}")


def print_held_out(rows: list[dict], task, seeds: int) -> None:
    """Per summary row (model, bits): FP32, RTN and the ES (mean of ``seeds`` seeds) on every held-out metric."""
    keys = [m.key for m in task.metrics]
    print(f"held-out test (ES: mean of {seeds} seeds): " + ", ".join(keys))
    for r in rows:
        line = f"{r['arch']} W{r['bits']}:"
        for label, prefix in (("FP32", "fp32"), ("RTN", "rtn"), ("ES", "es")):
            if prefix == "es" and not r["es_run"]:
                line += "  ES -"
                continue
            line += f"  {label} " + " ".join(f"{r[f'{prefix}_test_{k}']:.4f}" for k in keys)
        print(line)

