"""One cell of an experiment grid: (architecture, bit width, seed), any task.

:func:`run_cell` walks the whole path for it and returns a :class:`~qevo_lite.experiment.cell_result.CellResult`
of every number (``to_json()``: the flat dict ``results.json`` holds):

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
from .cell_result import CellResult, ESRun, PeerRun, RTNRun
from .moved import moved_analysis
from .records import SPLITS


def cell_stem(task: str, arch: str, bits: int, seed: int) -> str:
    """The file stem of one cell's ES files (checkpoints, codes)."""
    return f"{task}-{arch}-W{bits}-seed{seed}"


def _splits(numbers: dict) -> dict:
    """The search and test numbers of ``numbers`` (a context's FP32, RTN or peer entry) as a Split."""
    return {split: numbers[split] for split in SPLITS}


def baseline(ctx, arch: str, bits: int, seed: int) -> CellResult:
    """The part of a cell that needs no ES: FP32 and RTN numbers on both splits and RTN's scale rules."""
    profile = ctx.profile
    fp32, rtn = ctx.fp32(arch), ctx.rtn(arch, bits)
    extra = {}
    for g in profile.grid.extra_granularities:
        r = ctx.rtn(arch, bits, g)
        extra[g] = RTNRun(r["rule"], _splits(r))
    return CellResult(ctx.task.name, arch, profile.data.dataset, bits, seed, ctx.settings(arch), len(ctx.search),
                      len(ctx.test), rtn["state"].num_weights, _splits(fp32),
                      RTNRun(rtn["rule"], _splits(rtn)), extra,
                      head=ctx.task.metrics[0].key)


def _improvements(task, cell: CellResult) -> dict:
    """``gain_<metric>`` / ``search_gain_<metric>`` (positive = better than RTN) and the gap recovered."""
    res = {}
    for m in task.metrics:
        for split, prefix in (("test", "gain"), ("search", "search_gain")):
            es, rtn = cell.es.numbers[split].get(m.key), cell.rtn.numbers[split].get(m.key)
            if es is not None and rtn is not None:
                res[f"{prefix}_{m.key}"] = m.improvement(es, rtn)
    head = task.metrics[0]
    gap = head.improvement(cell.fp32["test"][head.key], cell.rtn.numbers["test"][head.key])
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


def _peers(ctx, arch: str, bits: int, seed: int, files, progress: bool) -> list[PeerRun]:
    """Each peer's numbers and wall time, and (``profile.methods.es_from_peers``) the ES started from its codes."""
    head = ctx.task.metrics[0]
    rtn_state = ctx.rtn(arch, bits)["state"]
    fmodel, _ = ctx.model(arch)
    out = []
    for config in ctx.profile.methods.peers:
        res = ctx.peer(arch, bits, config, seed)
        peer = PeerRun(get_method(config).name, res["seconds"], _splits(res))
        out.append(peer)
        ctx.step_done(peer.name)
        if not ctx.profile.methods.es_from_peers:
            continue
        peer_files = [f.with_name(f"{f.stem}-{peer.name}.pt") if f is not None else None for f in files]
        evolved = _evolve(ctx, arch, bits, seed, res["state"].codes(), peer_files, progress, report=False)
        es_state = evolved.glob.result.state(rtn_state)
        model = es_state.to_model(fmodel)
        peer.es_numbers = {split: ctx.evaluate(model, split) for split in SPLITS}
        peer.es_seconds = evolved.seconds
        peer.es_local_kept = float(evolved.local_kept)
        peer.es_moved_share = sum(rtn_state.with_codes(res["state"].codes()).moved(es_state).values()) \
            / rtn_state.num_weights
        peer.gain_over_peer = head.improvement(peer.es_numbers["test"][head.key], peer.numbers["test"][head.key])
        for f in peer_files:
            if f is not None and f.exists():
                f.unlink()
        ctx.step_done(f"es_from:{peer.name}")
    return out


def _after_local(ctx, evolved: EvolutionResult, fmodel, rtn_state, final_loss: float, final_test: dict,
                 numbers_only) -> tuple[float, dict]:
    """The search loss and held-out numbers after the local stage: the global stage's start and first report
    where it ran, the final ones where no second stage ran, measured on the local codes where only the gradient
    stage ran."""
    result, glob_ran = evolved.glob.result, evolved.glob.ran
    if evolved.gradient.evaluations and not glob_ran:
        local_model = rtn_state.with_codes(evolved.local.codes).to_model(fmodel)
        return ctx.evaluate(local_model, "search")["loss"], numbers_only(ctx.evaluate(local_model, "test"))
    return (evolved.glob.start.fitness if glob_ran else final_loss,
            numbers_only(result.reports[0]) if result.reports else final_test if not glob_ran else {})


def run_cell(ctx, arch: str, bits: int, seed: int, checkpoint_dir: str | Path | None = None,
             progress: bool = False) -> tuple[CellResult, dict | None]:
    """Run one (arch, bits, seed) cell of ``ctx``'s task (see the module docstring).

    ``checkpoint_dir``: where the ES stages save their progress; an interrupted cell resumes from there
    (the files are removed when the cell completes). Returns ``(cell, evolved codes or None)``; the cell's
    :meth:`~qevo_lite.experiment.cell_result.CellResult.to_json` is what ``results.json`` holds.
    """
    profile, task = ctx.profile, ctx.task
    cell = baseline(ctx, arch, bits, seed)
    ctx.step_done("baseline")
    cell.es_skipped_reason = ctx.es_skip_reason(arch, bits)
    if cell.es_skipped_reason is not None:
        return cell, None
    fmodel, _ = ctx.model(arch)
    rtn_state = ctx.rtn(arch, bits)["state"]
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stem = cell_stem(task.name, arch, bits, seed)
    files = [ck / f"{stem}-{stage}.pt" if ck else None for stage in ("local", "global")]

    evolved = _evolve(ctx, arch, bits, seed, rtn_state.codes(), files, progress, report=True)
    result = evolved.glob.result
    local_log = evolved.local.log
    es_state = result.state(rtn_state)
    es_model = es_state.to_model(fmodel)
    es_test = result.reports[-1] if result.reports else ctx.evaluate(es_model, "test")
    numbers_only = lambda report: {k: v for k, v in report.items() if k not in ("generation", "evaluations")}
    search = ctx.evaluate(es_model, "search")
    glob_ran, grad = evolved.glob.ran, evolved.gradient   # no second stage (the default): the local codes are it
    local_search_loss, local_test = _after_local(ctx, evolved, fmodel, rtn_state, search["loss"],
                                                 numbers_only(es_test), numbers_only)
    cell.es = ESRun(
        local_method=profile.methods.es.local_kind,
        local_search_loss=local_search_loss,
        local_evaluations=sum(e["evaluations"] for e in local_log), local_seconds=evolved.local.seconds,
        local_log=[{k: e[k] for k in ("layer", "before", "after", "evaluations")} for e in local_log],
        # held-out after the local stage: the first report, or measured where a second stage ran without reports
        local_test=local_test,
        numbers={"search": search, "test": numbers_only(es_test)},
        global_evaluations=result.evaluations + grad.evaluations,
        global_seconds=result.seconds + evolved.glob.setup_seconds + grad.seconds,
        second_stage=" + ".join(name for name, ran in (("gradient", grad.evaluations), ("global", glob_ran)) if ran)
        or "global",
        local_kept=evolved.local_kept, final_p=result.p,
        history=[{k: h[k] for k in ("evaluations", "best", "mean", "best_metric", "complete", "accepted")}
                 for h in result.history],
        reports=list(result.reports), moved=moved_analysis(rtn_state, es_state, ctx.sensitivity(arch, bits)))
    cell.gains = _improvements(task, cell)
    ctx.step_done("es")
    if ctx.rtn_hurts(arch, bits):
        cell.peers = _peers(ctx, arch, bits, seed, files, progress)
    for f in files:
        if f is not None and f.exists():
            f.unlink()
    return cell, es_state.codes()
