"""One cell of an experiment grid: (architecture, bit width, seed), any task.

:func:`run_cell` walks the whole path for it and returns a JSON-ready dict of every number:

1. the pretrained model (BN folded) and its FP32 numbers on the search and test splits;
2. nearest rounding (RTN) on the profile's grid with the scale rule of lowest search loss (the
   baseline), and on the profile's extra grids (e.g. per tensor);
3. unless the task says RTN is close enough to FP32 (:meth:`Task.es_skip_reason`), the ES in two
   stages: *local* (layer by layer on the layer-output error, by default the per-channel ES on its exact
   quadratic form, :func:`~qevo_lite.es.stages.quadratic_stage`; skipped when the profile has no local
   stage), then *global* (a (1+lambda) ES on the task's per-sample loss over the search split,
   :func:`~qevo_lite.es.stages.global_stage`), with held-out numbers at reporting points only (never used
   for selection);
   and, where RTN costs at least the task's ``hurt`` on the search split, the profile's rounding peers
   (``peers``: their registered names in the profile's order, e.g. ``["gptq", "adaround"]``;
   ``<peer>_<split>_<metric>``, ``<peer>_seconds``), each
   also as the start of both ES stages (``es_<peer>_<split>_<metric>``, ``es_<peer>_seconds``: the ES's
   own time, without the peer's);
4. the final search and held-out numbers, the improvement over RTN per metric (``gain_<metric>``,
   positive = better), the share of the RTN->FP32 gap recovered (headline metric), evaluations, wall
   time and where the weights moved.

Cell keys (written and read through :mod:`~qevo_lite.experiment.records`): ``<stage>_<split>_<metric>`` with
stage ``fp32``, ``rtn``, ``rtn_<grid>``, ``local``, ``es``
and split ``search`` or ``test`` (e.g. ``es_test_accuracy``); ``loss`` is always the ES's loss.
"""
from __future__ import annotations

from pathlib import Path

from ..es.pipeline import EvolutionResult, evolve
from ..methods import get_method
from .moved import moved_analysis
from .records import keyed


def cell_stem(task: str, arch: str, bits: int, seed: int) -> str:
    """The file stem of one cell's ES files (checkpoints, codes)."""
    return f"{task}-{arch}-W{bits}-seed{seed}"


def baseline_numbers(ctx, arch: str, bits: int, seed: int) -> dict:
    """The part of a cell that needs no ES: FP32 and RTN numbers on both splits and RTN's scale rules."""
    profile = ctx.profile
    fp32, rtn = ctx.fp32(arch), ctx.rtn(arch, bits)
    out = {"task": ctx.task.name, "arch": arch, "dataset": profile.data.dataset, "bits": bits, "seed": seed,
           "settings": ctx.settings(arch), "search_images": len(ctx.search), "test_images": len(ctx.test),
           "num_weights": rtn["state"].num_weights, "rtn_rule": rtn["rule"]}
    for split in ("search", "test"):
        out.update(keyed("fp32", fp32[split], split))
        out.update(keyed("rtn", rtn[split], split))
    for g in profile.grid.extra_granularities:
        r = ctx.rtn(arch, bits, g)
        prefix = f"rtn_{g}"
        out[f"{prefix}_rule"] = r["rule"]
        for split in ("search", "test"):
            out.update(keyed(prefix, r[split], split))
    return out


def _improvements(task, out: dict) -> dict:
    """``gain_<metric>`` / ``search_gain_<metric>`` (positive = better than RTN) and the gap recovered."""
    res = {}
    for m in task.metrics:
        for split, prefix in (("test", "gain"), ("search", "search_gain")):
            es, rtn = out.get(f"es_{split}_{m.key}"), out.get(f"rtn_{split}_{m.key}")
            if es is not None and rtn is not None:
                res[f"{prefix}_{m.key}"] = m.improvement(es, rtn)
    head = task.metrics[0]
    gap = head.improvement(out[f"fp32_test_{head.key}"], out[f"rtn_test_{head.key}"])
    res["gap_recovered"] = res[f"gain_{head.key}"] / gap if gap > 0 else None
    return res


def _evolve(ctx, arch: str, bits: int, seed: int, start, files, progress: bool, report: bool) -> EvolutionResult:
    """Both ES stages of the profile's ES config from codes ``start`` (:func:`~qevo_lite.es.pipeline.evolve`)."""
    profile, task = ctx.profile, ctx.task
    fmodel, _ = ctx.model(arch)
    methods = profile.methods
    reporter = (lambda m: ctx.evaluate(m, "test")) if report and methods.report_every else None
    return evolve(fmodel, ctx.rtn(arch, bits)["state"], ctx.search, methods.es, start, seed=seed,
                  loss=task.es_loss, metric=task.es_metric, report=reporter, report_every=methods.report_every or 1,
                  checkpoints=tuple(files), threads=ctx.local_threads, progress=progress)


def _peer_columns(ctx, arch: str, bits: int, seed: int, files, progress: bool) -> dict:
    """Each peer's numbers and wall time, and (``profile.methods.es_from_peers``) the ES started from its codes
    (``es_<peer>_*``)."""
    task, out = ctx.task, {}
    head = task.metrics[0]
    rtn_state = ctx.rtn(arch, bits)["state"]
    fmodel, _ = ctx.model(arch)
    out["peers"] = []
    for config in ctx.profile.methods.peers:
        peer = get_method(config).name
        out["peers"].append(peer)
        res = ctx.peer(arch, bits, config, seed)
        out[f"{peer}_seconds"] = res["seconds"]
        for split in ("search", "test"):
            out.update(keyed(peer, res[split], split))
        if not ctx.profile.methods.es_from_peers:
            continue
        peer_files = [f.with_name(f"{f.stem}-{peer}.pt") if f is not None else None for f in files]
        evolved = _evolve(ctx, arch, bits, seed, res["state"].codes(), peer_files, progress, report=False)
        result = evolved.glob.result
        model = result.state(rtn_state).to_model(fmodel)
        prefix = f"es_{peer}"
        out.update(keyed(prefix, ctx.evaluate(model, "search"), "search"))
        out.update(keyed(prefix, ctx.evaluate(model, "test"), "test"))
        out[f"{prefix}_seconds"] = evolved.seconds
        out[f"{prefix}_moved_share"] = sum(rtn_state.with_codes(res["state"].codes()).moved(result.state(rtn_state)).values()) \
            / rtn_state.num_weights
        out[f"gain_over_{peer}_{head.key}"] = head.improvement(out[f"{prefix}_test_{head.key}"],
                                                              out[f"{peer}_test_{head.key}"])
        for f in peer_files:
            if f is not None and f.exists():
                f.unlink()
    return out


def run_cell(ctx, arch: str, bits: int, seed: int, checkpoint_dir: str | Path | None = None,
             progress: bool = False) -> tuple[dict, dict | None]:
    """Run one (arch, bits, seed) cell of ``ctx``'s task (see the module docstring).

    ``checkpoint_dir``: where the ES stages save their progress; an interrupted cell resumes from there
    (the files are removed when the cell completes). Returns ``(cell dict, evolved codes or None)``.
    """
    profile, task = ctx.profile, ctx.task
    out = baseline_numbers(ctx, arch, bits, seed)
    reason = ctx.es_skip_reason(arch, bits)
    if reason is not None:
        out.update(es_run=False, es_skipped_reason=reason)
        return out, None
    fmodel, _ = ctx.model(arch)
    rtn_state = ctx.rtn(arch, bits)["state"]
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stem = cell_stem(task.name, arch, bits, seed)
    files = [ck / f"{stem}-{stage}.pt" if ck else None for stage in ("local", "global")]

    evolved = _evolve(ctx, arch, bits, seed, rtn_state.codes(), files, progress, report=True)
    result, start_eval, setup_seconds = evolved.glob
    local_log, local_seconds = evolved.local.log, evolved.local.seconds
    es_state = result.state(rtn_state)
    es_model = es_state.to_model(fmodel)
    es_test = result.reports[-1] if result.reports else ctx.evaluate(es_model, "test")
    local_evals = sum(e["evaluations"] for e in local_log)
    out.update(es_run=True, local_method=profile.methods.es.local_kind,
               local_search_loss=start_eval.fitness, local_evaluations=local_evals, local_seconds=local_seconds,
               local_log=[{k: e[k] for k in ("layer", "before", "after", "evaluations")} for e in local_log])
    if result.reports:
        out.update({f"local_test_{k}": v for k, v in result.reports[0].items() if k not in ("generation", "evaluations")})
    out.update(keyed("es", ctx.evaluate(es_model, "search"), "search"))
    out.update(keyed("es", {k: v for k, v in es_test.items() if k not in ("generation", "evaluations")}, "test"))
    out.update(_improvements(task, out))
    out.update(
        global_evaluations=result.evaluations, evaluations=local_evals + result.evaluations,
        global_seconds=result.seconds + setup_seconds, wall_seconds=local_seconds + result.seconds + setup_seconds,
        final_p=result.p,
        history=[{k: h[k] for k in ("evaluations", "best", "mean", "best_metric", "complete", "accepted")}
                 for h in result.history],
        reports=list(result.reports),
        moved=moved_analysis(rtn_state, es_state, ctx.sensitivity(arch, bits)))
    if ctx.rtn_hurts(arch, bits):
        out.update(_peer_columns(ctx, arch, bits, seed, files, progress))
    for f in files:
        if f is not None and f.exists():
            f.unlink()
    return out, es_state.codes()
