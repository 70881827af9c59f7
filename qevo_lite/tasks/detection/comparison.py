"""Detection's fitness comparison: the global ES from the RTN codes with two fitnesses at equal budget,
the per-image detection loss and ``1 - mAP@[.5:.95]`` of the search split (no per-image value, so no early
rejection); held-out mAP of both, time and accepted generations."""
from __future__ import annotations

import time

from ...core.stats import mean_std
from ...es.stages import global_stage
from .metrics import evaluate_detector, map_fitness
from .targets import detection_loss

FITNESSES = (("loss", detection_loss, True), ("map", map_fitness, False))


def run_fitness_comparison(ctx, arch: str, bits: int, seed: int, budget: int) -> dict:
    """Both fitnesses for one (arch, bits, seed), each from the RTN codes with ``budget`` evaluations."""
    fmodel, _ = ctx.model(arch)
    rtn = ctx.rtn(arch, bits)
    out = {"arch": arch, "bits": bits, "seed": seed, "budget": budget,
           "rtn_test_map50": rtn["test"]["map50"], "rtn_test_map": rtn["test"]["map"],
           "rtn_search_map50": rtn["search"]["map50"]}
    for name, loss, early in FITNESSES:
        t0 = time.perf_counter()
        stage = ctx.profile.methods.es.global_stage
        result = global_stage(fmodel, rtn["state"], ctx.search, rtn["state"].codes(), budget=budget, lam=stage.lam,
                              p=stage.p, seed=seed, loss=loss, metric=None, early_reject=early).result
        seconds = time.perf_counter() - t0
        model = result.state(rtn["state"]).to_model(fmodel)
        search, test = evaluate_detector(model, ctx.search), evaluate_detector(model, ctx.test)
        out[name] = {"seconds": seconds, "evaluations": result.evaluations,
                     "accepted": sum(h["accepted"] for h in result.history), "generations": len(result.history),
                     **{f"search_{k}": search[k] for k in ("loss", "map", "map50")},
                     **{f"test_{k}": test[k] for k in ("loss", "map", "map50")},
                     "curve": [h["best"] for h in result.history]}
    return out


def summarize_comparison(comparisons: list[dict]) -> dict | None:
    """Seed means of the comparison: ``{"loss": {...}, "map": {...}, "arch", "bits", "seeds", ...}``."""
    if not comparisons:
        return None
    c0 = comparisons[0]
    out = {"arch": c0["arch"], "bits": c0["bits"], "budget": c0["budget"], "seeds": [c["seed"] for c in comparisons],
           "rtn_test_map50": c0["rtn_test_map50"], "rtn_test_map": c0["rtn_test_map"]}
    for name, _, _ in FITNESSES:
        out[name] = {}
        for k in ("test_map50", "test_map", "search_map50", "seconds", "accepted"):
            out[name][k], out[name][k + "_std"] = mean_std(c[name][k] for c in comparisons)
    return out


def comparison_markdown(comp: dict) -> str:
    """The comparison as a paragraph of ``results.md``."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lo, ma = comp["loss"], comp["map"]
    return (f"Fitness comparison ({comp['arch']} W{comp['bits']}, global ES from RTN, {comp['budget']} evaluations, "
            f"seeds {','.join(map(str, comp['seeds']))}): held-out mAP@0.5 / mAP@[.5:.95] {pct(comp['rtn_test_map50'])} "
            f"/ {pct(comp['rtn_test_map'])} (RTN) -> {pct(lo['test_map50'])} / {pct(lo['test_map'])} with the per-image "
            f"detection loss as fitness ({lo['seconds']:.0f} s, {lo['accepted']:.1f} accepted generations) and "
            f"{pct(ma['test_map50'])} / {pct(ma['test_map'])} with 1 - mAP@[.5:.95] of the search split as fitness "
            f"({ma['seconds']:.0f} s, {ma['accepted']:.1f} accepted generations). The experiment uses the loss: it "
            "changes with every small change of the outputs where mAP sits on plateaus, it needs no decoding and "
            "matching, and it has a value per image, which the evaluator's paired early rejection needs (on search "
            "splits of more than one 256-image chunk).")
