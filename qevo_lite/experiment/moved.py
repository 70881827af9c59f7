"""Where the ES moved weights, compared with the RTN codes: per layer, and by rounding residual."""
from __future__ import annotations

import torch


def moved_analysis(rtn_state, es_state, sensitivity: dict | None = None, bins: int = 20) -> dict:
    """Where the ES moved weights, compared with the RTN codes.

    Returns ``{"per_layer": {layer: {moved, weights, share, sensitivity}}, "moved", "weights",
    "share", "residual_edges", "residual_all", "residual_moved"`` (histograms of the RTN rounding
    residual in steps), ``"toward_other_neighbour"`` (share of moved weights whose code moved to the
    side the float weight lies on, i.e. to the other neighbouring grid point), ``"more_than_one_step"``,
    ``"mean_abs_residual_all"``/``"mean_abs_residual_moved"`` and ``"near_boundary_all"``/
    ``"near_boundary_moved"`` (share with ``|residual| > 0.4``), and ``"weight_error_ratio"``: the squared
    weight error of the ES codes over that of the RTN codes (RTN minimises it for every unclipped weight).
    """
    per_layer, res_all, res_moved, toward, far = {}, [], [], 0, 0
    err_rtn = err_es = 0.0
    for name, lq in rtn_state.layers.items():
        new = es_state.layers[name].codes
        mask = new != lq.codes
        r = lq.residual()
        err_rtn += float(((lq.weight - lq.dequantize()) ** 2).sum())
        err_es += float(((lq.weight - es_state.layers[name].dequantize()) ** 2).sum())
        res_all.append(r.reshape(-1))
        res_moved.append(r[mask])
        delta = (new.int() - lq.codes.int())[mask]
        toward += int((torch.sign(delta.float()) == torch.sign(r[mask])).sum())
        far += int((delta.abs() > 1).sum())
        k, n = int(mask.sum()), lq.codes.numel()
        per_layer[name] = {"moved": k, "weights": n, "share": k / n,
                           "sensitivity": None if sensitivity is None else float(sensitivity[name])}
    res_all, res_moved = torch.cat(res_all), torch.cat(res_moved)
    lim = max(0.5, float(res_all.abs().max()))
    edges = torch.linspace(-lim, lim, bins + 1)
    moved = len(res_moved)
    hist = lambda t: torch.histc(t, bins, -lim, lim).int().tolist() if len(t) else [0] * bins  # noqa: E731
    return {"per_layer": per_layer, "moved": moved, "weights": len(res_all), "share": moved / len(res_all),
            "residual_edges": [round(e, 6) for e in edges.tolist()], "residual_all": hist(res_all),
            "residual_moved": hist(res_moved),
            "toward_other_neighbour": toward / moved if moved else None,
            "more_than_one_step": far / moved if moved else None,
            "mean_abs_residual_all": float(res_all.abs().mean()),
            "mean_abs_residual_moved": float(res_moved.abs().mean()) if moved else None,
            "near_boundary_all": float((res_all.abs() > 0.4).float().mean()),
            "near_boundary_moved": float((res_moved.abs() > 0.4).float().mean()) if moved else None,
            "weight_error_ratio": err_es / err_rtn if err_rtn > 0 else None}
