"""The classification experiments, shared by notebooks 03/04 and ``qevo reproduce``.

One *cell* of the experiment grid is (experiment, bit width, seed). :func:`run_cell` walks the
whole path for it and returns a dict of every number:

1. the pretrained model (BN folded) and its FP32 accuracy on the search and test splits;
2. nearest rounding (RTN) per channel with the scale rule chosen on the search split (the
   baseline), and per tensor (shown because that is where rounding hurts most);
3. if RTN loses at least ``min_drop`` search accuracy: the ES, in two stages,

   * *local*: layer by layer, in graph order, on the layer-output MSE against the FP32 layer
     (:func:`qevo_lite.layerwise.run_layerwise`; a few milliseconds per evaluation);
   * *global*: a (1+lambda) ES on the cross-entropy of the whole network on the search split,
     started from the local result (:class:`~qevo_lite.fitness.IncrementalEvaluator` with early
     rejection), with held-out accuracy measured only at reporting points (never for selection);

4. the final search and held-out accuracies, gain, share of the RTN->FP32 gap recovered,
   evaluations, wall time, the weights moved per layer and their rounding residuals.

Profiles (:data:`PROFILES`) are data: dataset, models, bit widths, seeds and budgets. ``fast`` is the
offline Fashion-MNIST setting of the notebooks; ``full`` is CIFAR-10 with VGG-11 and ResNet-20. The
code path is the same, only sizes change. Budgets are counted in evaluations, never seconds, so a
run is deterministic for a given seed (and thread count).

:func:`reproduce` runs a grid of cells headless and writes ``results.json`` (every number),
``results.md`` (the table) and the figures into a folder. The JSON is rewritten atomically after
each cell; a second call skips the cells already there (with the same settings), and a cell that
was interrupted resumes from its ES checkpoints in ``<out>/checkpoints``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from .baseline import best_rtn
from .checkpoints import atomic_write, load_pretrained, train_checkpoint
from .data import Split, load_splits
from .es import ESConfig, run_es
from .evaluate import default_device, evaluate
from .fitness import IncrementalEvaluator
from .fold import fold_batchnorm
from .layerwise import run_layerwise
from .sensitivity import layer_sensitivity

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"

# experiment name -> kind. The classification experiments run here (one model per experiment and
# profile); the other kinds are whole experiments in their own task module (TASK_MODULES), which
# provides ``reproduce_task(profile, out, progress, device, download, figures, checkpoint_dir,
# **overrides) -> results dict`` writing results.json, results.md and figures into ``out``.
EXPERIMENTS = {"vgg": "classification", "resnet": "classification",
               "detection": "detection", "autoencoder": "autoencoder"}
TASK_MODULES = {"detection": "qevo_lite.detection", "autoencoder": "qevo_lite.autoencoder"}
# Profile fields a task module's reproduce_task accepts as overrides (None: the task profile's own).
TASK_OVERRIDES = ("bits", "seeds", "budget", "search_size", "test_size", "local_evaluations", "min_drop",
                  "train_epochs")


class Overridable:
    """Mixin for the frozen profile dataclasses: copies with some fields replaced.

    ``what`` names the profile kind in error messages."""

    what = "profile"

    def with_overrides(self, **kwargs):
        """A copy with the non-None keyword fields replaced (lists become tuples; unknown names raise
        ValueError)."""
        known = {f.name for f in fields(self)}
        bad = set(kwargs) - known
        if bad:
            raise ValueError(f"Unknown {self.what} fields {sorted(bad)}; known: {sorted(known)}.")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if v is not None}
        return replace(self, **kwargs)


@dataclass(frozen=True)
class Profile(Overridable):
    """Sizes and budgets of one reproduction (see :data:`PROFILES`).

    Attributes:
        name: ``fast`` or ``full``.
        dataset: dataset name for :func:`qevo_lite.data.load_splits` (``folder:<path>`` works too).
        models: ``{experiment: architecture}``.
        bits: bit widths of the grid (RTN at all; the ES where RTN loses accuracy).
        seeds: ES seeds (the data split is fixed by the checkpoint's split seed).
        search_size: images of the search split (the ES fitness set).
        test_size: held-out test images (None: the whole official test split).
        local_samples: search images whose layer inputs/outputs the local stage matches.
        local_evaluations: local-stage evaluations per layer.
        local_moves: weights a local-stage mutation moves on average (its rate starts at
            ``local_moves / layer size``, then adapts by the 1/5 rule), so small and large layers are
            explored alike; None: the rate ``p`` for every layer.
        budget: global-stage evaluations per cell.
        lam: offspring per generation (both stages); p: initial share of a layer's weights moved.
        report_every: generations between held-out reports in the global stage.
        min_drop: run the ES only where RTN's search accuracy is at least this far below FP32's.
        granularity: grid of the ES runs (``per_channel``: the strongest rounding baseline).
        split_seed: the data split the checkpoints were trained against.
        train_epochs: epochs when a missing checkpoint has to be trained (None: the recipe's).
    """

    name: str
    dataset: str
    models: dict
    bits: tuple = (2, 3, 4, 8)
    seeds: tuple = (0, 1, 2)
    search_size: int = 1024
    test_size: int | None = None
    local_samples: int = 128
    local_evaluations: int = 200
    local_moves: int | None = 4
    budget: int = 64
    lam: int = 8
    p: float = 0.002
    report_every: int = 4
    min_drop: float = 0.005
    granularity: str = "per_channel"
    split_seed: int = 0
    train_epochs: int | None = None


PROFILES = {
    "fast": Profile("fast", "fashion_mnist", {"vgg": "vgg_small", "resnet": "resnet_small"},
                    bits=(2, 3, 4, 8), seeds=(0, 1, 2), search_size=1024, test_size=5000,
                    local_samples=128, local_evaluations=200, budget=64, report_every=2),
    "full": Profile("full", "cifar10", {"vgg": "vgg11", "resnet": "resnet20"},
                    bits=(2, 3, 4, 8), seeds=(0, 1, 2), search_size=4096, test_size=None,
                    local_samples=512, local_evaluations=1000, budget=2000, report_every=25),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile ``name`` (default: ``$QEVO_PROFILE`` or ``fast``) with ``overrides`` applied."""
    name = name or os.environ.get("QEVO_PROFILE", "fast")
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}.")
    return PROFILES[name].with_overrides(**overrides)


@contextmanager
def _threads(n: int | None):
    """Temporarily use ``n`` torch CPU threads (None: unchanged)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ----------------------------------------------------------------------------- shared state
class Context:
    """What the cells of one profile share: the splits, the pretrained models, RTN baselines.

    Everything is computed once, on first use, and cached.

    Args:
        profile: the :class:`Profile`.
        device: where models run (default: CUDA if available, else the CPU).
        checkpoint_dir: where pretrained checkpoints live (default: the package's registry,
            ``data/checkpoints``); missing ones are trained there.
        download: allow torchvision to download the dataset.
        local_threads: CPU threads of the local stage (many tiny operations: one thread is as
            fast as two on an idle machine and far faster when the cores are shared).
    """

    def __init__(self, profile: Profile, device=None, checkpoint_dir=None, download: bool = False,
                 local_threads: int | None = 1):
        self.profile = profile
        self.device = torch.device(device) if device is not None else default_device()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.download = download
        self.local_threads = local_threads if self.device.type == "cpu" else None
        self._splits = None
        self._models: dict = {}
        self._fp32: dict = {}
        self._rtn: dict = {}
        self._sensitivity: dict = {}

    # -- data and models ----------------------------------------------------------------------
    @property
    def splits(self):
        if self._splits is None:
            p = self.profile
            self._splits = load_splits(p.dataset, search_size=p.search_size, seed=p.split_seed,
                                       download=self.download)
        return self._splits

    @property
    def search(self) -> Split:
        return self.splits.search

    @property
    def test(self) -> Split:
        t = self.splits.test
        return t if self.profile.test_size is None else t.subset(self.profile.test_size)

    def arch(self, experiment: str) -> str:
        if experiment not in self.profile.models:
            raise ValueError(f"The {self.profile.name!r} profile has no model for experiment {experiment!r}; "
                             f"it has {sorted(self.profile.models)}.")
        return self.profile.models[experiment]

    def model(self, experiment: str):
        """``(BN-folded float model on the device, manifest entry)``; trains a missing checkpoint."""
        if experiment not in self._models:
            arch, p = self.arch(experiment), self.profile
            if p.train_epochs is None:
                model, entry = load_pretrained(arch, p.dataset, directory=self.checkpoint_dir, splits=self.splits)
            else:
                try:
                    model, entry = load_pretrained(arch, p.dataset, directory=self.checkpoint_dir,
                                                   train_if_missing=False)
                except (FileNotFoundError, ValueError) as exc:
                    print(f"{exc} Training it now ({p.train_epochs} epochs).")
                    model, entry = train_checkpoint(arch, p.dataset, seed=p.split_seed, epochs=p.train_epochs,
                                                    splits=self.splits, directory=self.checkpoint_dir,
                                                    progress=False)
            if entry.get("split_seed", p.split_seed) != p.split_seed:
                raise ValueError(f"{arch} was trained against split seed {entry['split_seed']}, the profile uses "
                                 f"{p.split_seed}: its search split could contain training images.")
            self._models[experiment] = (fold_batchnorm(model).to(self.device).eval(), entry)
        return self._models[experiment]

    def fp32(self, experiment: str) -> dict:
        """FP32 ``{"search": {loss, accuracy}, "test": {...}}``."""
        if experiment not in self._fp32:
            fmodel, _ = self.model(experiment)
            self._fp32[experiment] = {"search": evaluate(fmodel, self.search), "test": evaluate(fmodel, self.test)}
        return self._fp32[experiment]

    def rtn(self, experiment: str, bits: int, granularity: str | None = None) -> dict:
        """The RTN baseline: ``{"result": RTNResult, "search": {...}, "test": {...}}``; the scale rule is the
        one with the lowest search loss, test accuracy is only reported."""
        granularity = granularity or self.profile.granularity
        key = (experiment, bits, granularity)
        if key not in self._rtn:
            fmodel, _ = self.model(experiment)
            res = best_rtn(fmodel, self.search, bits, granularity)
            self._rtn[key] = {"result": res, "search": res.scores[res.config.scale_rule],
                              "test": evaluate(res.state.to_model(fmodel), self.test)}
        return self._rtn[key]

    def sensitivity(self, experiment: str, bits: int) -> dict:
        """``{layer: search-loss increase with only that layer quantized}`` (RTN baseline grid), most
        sensitive first."""
        key = (experiment, bits)
        if key not in self._sensitivity:
            fmodel, _ = self.model(experiment)
            self._sensitivity[key] = layer_sensitivity(fmodel, self.rtn(experiment, bits)["result"].state,
                                                       self.search)
        return self._sensitivity[key]

    def settings(self, experiment: str) -> dict:
        """What a cell's numbers depend on (a finished cell is reused only when these match)."""
        p = self.profile
        return {"arch": self.arch(experiment), "dataset": p.dataset, "search_size": p.search_size,
                "test_size": p.test_size, "local_samples": p.local_samples,
                "local_evaluations": p.local_evaluations, "local_moves": p.local_moves, "budget": p.budget, "lam": p.lam, "p": p.p,
                "report_every": p.report_every, "min_drop": p.min_drop, "granularity": p.granularity,
                "split_seed": p.split_seed}


def cell_key(experiment: str, bits: int, seed: int) -> str:
    return f"{experiment}/W{bits}/seed{seed}"


# ----------------------------------------------------------------------------- one cell
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


def local_stage(fmodel, rtn_state, search: Split, *, evaluations: int, lam: int, p: float, local_moves: int | None,
                samples: int, seed: int, checkpoint: Path | None = None, threads: int | None = 1) -> tuple:
    """Layer-wise (local) ES, one layer at a time in graph order, each on its layer-output MSE against the
    FP32 layer (:func:`qevo_lite.layerwise.run_layerwise`). Works for any task: it only needs the float
    model, the RTN state and search inputs ``search.x``.

    ``evaluations`` per layer; a mutation moves ``local_moves`` weights of the layer on average (rate
    ``local_moves / layer size``; None: rate ``p``), adapted by the 1/5 rule. ``checkpoint``: a file the
    codes are saved to after each layer, so an interrupted run resumes between layers. ``threads``: CPU
    threads during the stage (many tiny operations). Returns ``(codes, per-layer log, seconds)``; raises
    KeyboardInterrupt when a layer was interrupted (after saving the layers before it).
    """
    codes, log, seconds, done = rtn_state.codes(), [], 0.0, 0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        codes, log, seconds, done = ck["codes"], ck["log"], ck["seconds"], ck["done"]
    names = list(rtn_state.layers)
    for i in range(done, len(names)):
        t0 = time.perf_counter()
        n = rtn_state.layers[names[i]].codes.numel()
        rate = p if local_moves is None else min(1.0, local_moves / n)
        cfg = ESConfig(max_evaluations=evaluations, lam=lam, p=rate, seed=seed * 1009 + i)
        with _threads(threads):
            codes, layer_log = run_layerwise(fmodel, rtn_state, search, cfg, samples=samples,
                                             layers=[names[i]], progress=False, start=codes)
        seconds += time.perf_counter() - t0
        if layer_log[0]["evaluations"] < evaluations:  # run_es caught a Ctrl-C: stop here
            raise KeyboardInterrupt
        log += layer_log
        if checkpoint is not None:
            _atomic_torch_save({"codes": codes, "log": log, "seconds": seconds, "done": i + 1}, checkpoint)
    return codes, log, seconds


def global_stage(fmodel, rtn_state, search: Split, start_codes, *, budget: int, lam: int, p: float, seed: int,
                 loss="cross_entropy", metric="default", report=None, report_every: int = 1,
                 checkpoint: Path | None = None, progress: bool = False, early_reject: bool = True,
                 chunk_size: int | None = None) -> tuple:
    """The global (1+lambda) ES on the whole network's per-sample ``loss`` over ``search``, started from
    ``start_codes`` (e.g. the local stage's result), with the fast :class:`IncrementalEvaluator`.

    ``loss``/``metric``: as for :class:`~qevo_lite.fitness.FullEvaluator` (``"cross_entropy"``, ``"mse"``
    or callables on ``(outputs, targets)``). ``report``: ``model -> dict`` of held-out numbers, called
    at the start, every ``report_every`` generations and at the end (never used for selection).
    ``checkpoint``: ES checkpoint file (resumes when it exists). Returns ``(ESResult, start Evaluation,
    setup seconds)``; raises KeyboardInterrupt when the run was interrupted (its checkpoint is saved).
    ``chunk_size``: images per forward pass (default: the evaluator's); early rejection decides after
    whole chunks, so a search split of a few hundred images needs smaller chunks for it to act.
    """
    t0 = time.perf_counter()
    evaluator = IncrementalEvaluator(copy.deepcopy(fmodel), rtn_state, search, loss=loss, metric=metric,
                                     chunk_size=chunk_size)
    evaluator.set_reference(start_codes)
    start_eval = evaluator.reference_eval
    cfg = ESConfig(mu=1, lam=lam, p=p, max_evaluations=budget, early_reject=early_reject,
                   report_every=report_every, seed=seed)
    setup_seconds = time.perf_counter() - t0
    result = run_es(evaluator, cfg, report=report, checkpoint=checkpoint, checkpoint_every=5, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return result, start_eval, setup_seconds


def run_cell(ctx: Context, experiment: str, bits: int, seed: int, checkpoint_dir: str | Path | None = None,
             progress: bool = False) -> dict:
    """Run one (experiment, bits, seed) cell: RTN baselines, then (where RTN loses accuracy) the
    local + global ES, and return a JSON-ready dict of every number (see the module docstring).

    ``checkpoint_dir``: where the ES stages save their progress; an interrupted cell resumes from
    there (the files are removed when the cell completes). Accuracies are fractions in [0, 1].
    """
    p = ctx.profile
    if EXPERIMENTS.get(experiment) != "classification":
        raise ValueError(f"run_cell runs classification experiments ({sorted(EXPERIMENTS)}), not {experiment!r}.")
    fmodel, entry = ctx.model(experiment)
    fp32 = ctx.fp32(experiment)
    rtn = ctx.rtn(experiment, bits)
    rtn_t = ctx.rtn(experiment, bits, "per_tensor")
    rtn_state = rtn["result"].state
    out = {"experiment": experiment, "arch": ctx.arch(experiment), "dataset": p.dataset, "bits": bits,
           "seed": seed, "settings": ctx.settings(experiment),
           "search_images": len(ctx.search), "test_images": len(ctx.test),
           "fp32_search_accuracy": fp32["search"]["accuracy"], "fp32_test_accuracy": fp32["test"]["accuracy"],
           "rtn_rule": rtn["result"].config.scale_rule, "rtn_search_loss": rtn["search"]["loss"],
           "rtn_search_accuracy": rtn["search"]["accuracy"], "rtn_test_accuracy": rtn["test"]["accuracy"],
           "rtn_per_tensor_rule": rtn_t["result"].config.scale_rule,
           "rtn_per_tensor_search_accuracy": rtn_t["search"]["accuracy"],
           "rtn_per_tensor_test_accuracy": rtn_t["test"]["accuracy"],
           "num_weights": rtn_state.num_weights}
    drop = fp32["search"]["accuracy"] - rtn["search"]["accuracy"]
    if drop < p.min_drop:
        out.update(es_run=False, es_skipped_reason=f"RTN is within {100 * p.min_drop:.1f} points of FP32 "
                                                    f"on the search split ({100 * drop:+.2f})")
        return out

    ck_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stem = f"{experiment}-W{bits}-seed{seed}"
    ck_local = ck_dir / f"{stem}-local.pt" if ck_dir else None
    ck_global = ck_dir / f"{stem}-global.pt" if ck_dir else None

    # stage 1: local (layer-wise) ES on each layer's output MSE
    local_codes, local_log, local_seconds = local_stage(
        fmodel, rtn_state, ctx.search, evaluations=p.local_evaluations, lam=p.lam, p=p.p,
        local_moves=p.local_moves, samples=p.local_samples, seed=seed, checkpoint=ck_local,
        threads=ctx.local_threads)
    local_evals = sum(e["evaluations"] for e in local_log)

    # stage 2: global (1+lambda) ES on the search-split cross-entropy, from the local result
    test = ctx.test
    result, start_eval, setup_seconds = global_stage(
        fmodel, rtn_state, ctx.search, local_codes, budget=p.budget, lam=p.lam, p=p.p, seed=seed,
        report=lambda m: evaluate(m, test), report_every=p.report_every, checkpoint=ck_global, progress=progress)

    es_state = result.state(rtn_state)
    qmodel = es_state.to_model(fmodel)
    es_search, es_test = evaluate(qmodel, ctx.search), result.reports[-1]
    rtn_test, fp_test = rtn["test"]["accuracy"], fp32["test"]["accuracy"]
    gap = fp_test - rtn_test
    local_search = start_eval.metric
    sens = ctx.sensitivity(experiment, bits)
    out.update(
        es_run=True,
        local_search_accuracy=local_search, local_search_loss=start_eval.fitness,
        local_test_accuracy=result.reports[0]["accuracy"],
        local_evaluations=local_evals, local_seconds=local_seconds,
        local_log=[{k: e[k] for k in ("layer", "before", "after", "evaluations")} for e in local_log],
        es_search_loss=es_search["loss"], es_search_accuracy=es_search["accuracy"],
        es_test_accuracy=es_test["accuracy"], es_test_loss=es_test["loss"],
        gain=es_test["accuracy"] - rtn_test, search_gain=es_search["accuracy"] - rtn["search"]["accuracy"],
        gap_recovered=(es_test["accuracy"] - rtn_test) / gap if gap > 0 else None,
        global_evaluations=result.evaluations, evaluations=local_evals + result.evaluations,
        global_seconds=result.seconds + setup_seconds, wall_seconds=local_seconds + result.seconds + setup_seconds,
        final_p=result.p,
        history=[{"evaluations": h["evaluations"], "best": h["best"], "mean": h["mean"],
                  "best_metric": h["best_metric"]} for h in result.history],
        reports=[{"evaluations": r["evaluations"], "generation": r["generation"], "accuracy": r["accuracy"],
                  "loss": r["loss"]} for r in result.reports],
        moved=moved_analysis(rtn_state, es_state, sens),
    )
    for f in (ck_local, ck_global):
        if f is not None and f.exists():
            f.unlink()
    return out


# ----------------------------------------------------------------------------- summaries
def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(cells: dict) -> list[dict]:
    """One row per (experiment, bits): seed means and standard deviations of the cell numbers.

    ``noise`` is the seed-to-seed standard deviation of the ES held-out accuracy (sample std over
    seeds; the data split and RTN are fixed, so it measures the ES's own randomness);
    ``within_noise`` says whether the mean ES held-out accuracy is at least RTN's minus that noise.
    """
    groups: dict = {}
    for c in cells.values():
        groups.setdefault((c["experiment"], c["bits"]), []).append(c)
    rows = []
    for (exp, bits), cs in sorted(groups.items(), key=lambda kv: (list(EXPERIMENTS).index(kv[0][0])
                                                                  if kv[0][0] in EXPERIMENTS else 99, kv[0][1])):
        cs = sorted(cs, key=lambda c: c["seed"])
        c0 = cs[0]
        row = {"experiment": exp, "arch": c0["arch"], "dataset": c0["dataset"], "bits": bits,
               "seeds": [c["seed"] for c in cs], "fp32_test_accuracy": c0["fp32_test_accuracy"],
               "fp32_search_accuracy": c0["fp32_search_accuracy"], "rtn_rule": c0["rtn_rule"],
               "rtn_search_accuracy": c0["rtn_search_accuracy"], "rtn_test_accuracy": c0["rtn_test_accuracy"],
               "rtn_per_tensor_rule": c0["rtn_per_tensor_rule"],
               "rtn_per_tensor_test_accuracy": c0["rtn_per_tensor_test_accuracy"],
               "rtn_gap": c0["fp32_test_accuracy"] - c0["rtn_test_accuracy"],
               "es_run": all(c["es_run"] for c in cs)}
        if row["es_run"]:
            for k in ("es_search_accuracy", "es_test_accuracy", "gain", "evaluations", "local_evaluations",
                      "global_evaluations", "wall_seconds", "local_test_accuracy"):
                row[k], row[k + "_std"] = mean_std(c[k] for c in cs)
            row["moved_share"], row["moved_share_std"] = mean_std(c["moved"]["share"] for c in cs)
            gaps = [c["gap_recovered"] for c in cs if c["gap_recovered"] is not None]
            row["gap_recovered"], row["gap_recovered_std"] = mean_std(gaps) if gaps else (None, None)
            row["noise"] = row["es_test_accuracy_std"]
            row["within_noise"] = row["es_test_accuracy"] >= row["rtn_test_accuracy"] - row["noise"]
        else:
            row["es_skipped_reason"] = c0.get("es_skipped_reason")
        rows.append(row)
    return rows


def checks(rows: list[dict], gap_points: float = 0.02, target: float = 0.5) -> dict:
    """The issue's claims per experiment: at the lowest bit width where RTN loses at least
    ``gap_points`` held-out accuracy, does the ES recover at least ``target`` of the gap (seed mean)?
    And at every bit width with an ES run, is ES held-out accuracy within noise of RTN or above?"""
    out = {}
    for exp in dict.fromkeys(r["experiment"] for r in rows):
        rs = [r for r in rows if r["experiment"] == exp]
        lossy = [r for r in rs if r["rtn_gap"] >= gap_points and r["es_run"]]
        low = min(lossy, key=lambda r: r["bits"]) if lossy else None
        out[exp] = {"target_bits": low["bits"] if low else None,
                    "gap_recovered": low["gap_recovered"] if low else None,
                    "target": target,
                    "target_met": bool(low and low["gap_recovered"] is not None
                                       and low["gap_recovered"] >= target),
                    "es_within_noise_of_rtn_or_above": all(r["within_noise"] for r in rs if r["es_run"])}
    return out


def _pct(x, std=None, digits: int = 1) -> str:
    if x is None:
        return "-"
    s = f"{100 * x:.{digits}f}"
    return s + (f" ± {100 * std:.{digits}f}" if std is not None else "")


def markdown_table(rows: list[dict], timing: bool = True) -> str:
    """The results table in Markdown: accuracies in %, mean ± std over seeds (held-out = test split).
    ``timing=False`` leaves out the wall-time column (for outputs that must be deterministic)."""
    head = ["model", "bits", "FP32 test", "RTN per-tensor test", "RTN per-channel (rule)", "RTN search",
            "RTN test", "ES search", "ES test", "gain (points)", "gap recovered", "evaluations (local + global)"]
    head += ["wall time (s)"] if timing else []
    head += ["weights moved", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['arch']}", f"W{r['bits']}", _pct(r["fp32_test_accuracy"]),
                 _pct(r["rtn_per_tensor_test_accuracy"]), r["rtn_rule"], _pct(r["rtn_search_accuracy"]),
                 _pct(r["rtn_test_accuracy"])]
        if r["es_run"]:
            cells += [_pct(r["es_search_accuracy"], r["es_search_accuracy_std"]),
                      _pct(r["es_test_accuracy"], r["es_test_accuracy_std"]),
                      f"{100 * r['gain']:+.1f} ± {100 * r['gain_std']:.1f}",
                      "-" if r["gap_recovered"] is None else f"{100 * r['gap_recovered']:.0f}%",
                      f"{r['local_evaluations']:.0f} + {r['global_evaluations']:.0f}"]
            cells += [f"{r['wall_seconds']:.0f}"] if timing else []
            cells += [f"{100 * r['moved_share']:.2f}%"]
        else:
            cells += ["(not run: RTN ~ FP32)", "-", "-", "-", "-"] + (["-"] if timing else []) + ["-"]
        cells.append(",".join(str(s) for s in r["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    """The whole ``results.md``: table, checks and how the numbers were made."""
    p = results["profile"]
    lines = [f"# qevo reproduce: classification, profile `{p['name']}`", "",
             f"Dataset `{p['dataset']}`; search split {p['search_size']} images (the ES fitness set, drawn from "
             f"the training images, never trained on); held-out test {results.get('test_images', '?')} images "
             "(reported only, never used to select). Accuracies in %, mean ± sample std over the seeds. "
             "RTN = nearest rounding with the scale rule of lowest search loss. ES = local layer-wise ES "
             f"({p['local_evaluations']} evaluations per layer on {p['local_samples']} images) then global "
             f"(1+{p['lam']}) ES ({p['budget']} evaluations on the search cross-entropy, early rejection). "
             "Gap recovered = (ES test - RTN test) / (FP32 test - RTN test). Weights moved = share of codes "
             "that differ from RTN.", "", markdown_table(results["summary"]), ""]
    for exp, c in results["checks"].items():
        if c["target_bits"] is None:
            lines.append(f"- {exp}: RTN never loses 2 points at the bit widths run.")
            continue
        lines.append(f"- {exp}: lowest bit width where RTN loses >= 2 points: W{c['target_bits']}; ES recovers "
                     f"{100 * c['gap_recovered']:.0f}% of the RTN->FP32 gap (target {100 * c['target']:.0f}%: "
                     f"{'met' if c['target_met'] else 'not met'}); ES test within seed noise of RTN or above at "
                     f"every ES bit width: {'yes' if c['es_within_noise_of_rtn_or_above'] else 'no'}.")
    lines += ["", "Noise: the seed-to-seed sample std of the ES test accuracy at that bit width (the data split "
              "and RTN are fixed, so it measures the ES's randomness).", ""]
    figs = results.get("figures", [])
    if figs:
        lines += ["Figures: " + ", ".join(f"`{f}`" for f in figs), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
def _fig(ncols=1, figsize=(6.4, 4.0)):
    import matplotlib.pyplot as plt
    return plt.subplots(1, ncols, figsize=figsize, layout="constrained")


def plot_accuracy_vs_bits(rows: list[dict], experiment: str, ax=None, path=None):
    """Held-out accuracy (%) against bit width: FP32, RTN per tensor, RTN per channel, ES (mean ± std)."""
    rs = sorted([r for r in rows if r["experiment"] == experiment], key=lambda r: r["bits"])
    if not rs:
        raise ValueError(f"No rows for experiment {experiment!r}.")
    fig, ax = (ax.figure, ax) if ax is not None else _fig()
    bits = [r["bits"] for r in rs]
    ax.axhline(100 * rs[0]["fp32_test_accuracy"], color="black", ls="--", lw=1.2,
               label=f"FP32 ({100 * rs[0]['fp32_test_accuracy']:.1f}%)")
    ax.plot(bits, [100 * r["rtn_per_tensor_test_accuracy"] for r in rs], "s:", color="tab:gray",
            label="RTN per-tensor")
    ax.plot(bits, [100 * r["rtn_test_accuracy"] for r in rs], "o-", color="tab:blue", label="RTN per-channel")
    es = [r for r in rs if r["es_run"]]
    if es:
        ax.errorbar([r["bits"] for r in es], [100 * r["es_test_accuracy"] for r in es],
                    yerr=[100 * r["es_test_accuracy_std"] for r in es], fmt="D-", color="tab:red", capsize=4,
                    label=f"ES per-channel (mean ± std, {len(es[0]['seeds'])} seeds)")
    ax.set_xticks(bits)
    ax.set_xlabel("weight bit width (bits)")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title(f"{rs[0]['arch']}: held-out accuracy vs bit width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_curves(cells: dict, experiment: str, bits: int, path=None):
    """Left: best search-split loss against global-stage evaluations, one line per seed (evaluation 0 is
    the local stage's result). Right: held-out accuracy of the best candidate at the reporting points,
    with RTN and FP32 as lines."""
    cs = sorted([c for c in cells.values() if c["experiment"] == experiment and c["bits"] == bits
                 and c["es_run"]], key=lambda c: c["seed"])
    if not cs:
        raise ValueError(f"No ES runs for {experiment} at {bits} bits.")
    fig, (a1, a2) = _fig(2, figsize=(11, 3.8))
    for i, c in enumerate(cs):
        h = c["history"]
        a1.plot([0] + [x["evaluations"] for x in h], [c["local_search_loss"]] + [x["best"] for x in h],
                color=f"C{i}", label=f"seed {c['seed']}")
        a2.plot([r["evaluations"] for r in c["reports"]], [100 * r["accuracy"] for r in c["reports"]], "o-",
                ms=3, color=f"C{i}", label=f"seed {c['seed']}")
    a1.axhline(cs[0]["rtn_search_loss"], color="tab:blue", ls=":", label="RTN")
    a1.set_xlabel("global-stage fitness evaluations")
    a1.set_ylabel("best search-split loss (nats)")
    a1.set_title(f"{cs[0]['arch']} W{bits}: search fitness (0 = after the local stage)")
    a1.legend(fontsize=8)
    a2.axhline(100 * cs[0]["rtn_test_accuracy"], color="tab:blue", ls=":", label="RTN")
    a2.axhline(100 * cs[0]["fp32_test_accuracy"], color="black", ls="--", lw=1, label="FP32")
    a2.set_xlabel("global-stage fitness evaluations")
    a2.set_ylabel("held-out test accuracy (%)")
    a2.set_title("held-out accuracy at the reporting points")
    a2.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_moved(cells: dict, experiment: str, bits: int, path=None):
    """Left: share of each layer's weights the ES moved (mean over seeds), with the layer's sensitivity.
    Right: RTN rounding residuals of all weights and of the moved ones (densities, pooled over seeds)."""
    cs = [c for c in cells.values() if c["experiment"] == experiment and c["bits"] == bits and c["es_run"]]
    if not cs:
        raise ValueError(f"No ES runs for {experiment} at {bits} bits.")
    fig, (a1, a2) = _fig(2, figsize=(11, 3.8))
    layers = list(cs[0]["moved"]["per_layer"])
    share = [100 * statistics.fmean(c["moved"]["per_layer"][n]["share"] for c in cs) for n in layers]
    a1.bar(range(len(layers)), share, color="tab:red", alpha=0.8)
    a1.set_xticks(range(len(layers)), layers, rotation=35, ha="right", fontsize=7)
    a1.set_xlabel("layer (graph order)")
    a1.set_ylabel("weights moved (% of the layer)")
    sens = [cs[0]["moved"]["per_layer"][n]["sensitivity"] for n in layers]
    if all(s is not None for s in sens):
        a3 = a1.twinx()
        a3.plot(range(len(layers)), sens, "k.--", lw=0.8, label="sensitivity")
        a3.set_ylabel("sensitivity: search-loss increase (nats)")
        a3.legend(fontsize=8, loc="upper right")
    a1.set_title(f"{cs[0]['arch']} W{bits}: where the ES moved weights")
    edges = cs[0]["moved"]["residual_edges"]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    for key, label, color in (("residual_all", "all weights", "0.7"), ("residual_moved", "moved weights", "tab:red")):
        counts = [sum(c["moved"][key][i] for c in cs) for i in range(len(centers))]
        total = sum(counts) or 1
        a2.step(centers, [k / total / width for k in counts], where="mid", color=color, label=label,
                lw=2 if key == "residual_moved" else 1.5)
    a2.set_xlabel("RTN rounding residual (w - w_hat) / step (steps)")
    a2.set_ylabel("density")
    a2.set_title("rounding residuals of the moved weights")
    a2.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def write_figures(results: dict, out: Path) -> list[str]:
    """Write the figures of every experiment into ``out``; return their file names."""
    import matplotlib.pyplot as plt
    names = []
    for exp in dict.fromkeys(r["experiment"] for r in results["summary"]):
        f = f"{exp}_accuracy_vs_bits.png"
        plt.close(plot_accuracy_vs_bits(results["summary"], exp, path=out / f))
        names.append(f)
        es_bits = sorted({r["bits"] for r in results["summary"] if r["experiment"] == exp and r["es_run"]})
        for b in es_bits:
            for kind, fn in (("curves", plot_curves), ("moved", plot_moved)):
                f = f"{exp}_W{b}_{kind}.png"
                plt.close(fn(results["cells"], exp, b, path=out / f))
                names.append(f)
    return names


# ----------------------------------------------------------------------------- the grid
def plan(profile: Profile, experiments) -> list[tuple]:
    """The cells ``(experiment, bits, seed)`` of a run, in order."""
    return [(e, b, s) for e in experiments for b in profile.bits for s in profile.seeds]


def load_results(out: str | Path, name: str = RESULTS_JSON) -> dict:
    """The JSON of an earlier run in folder ``out`` ({} when there is none)."""
    path = Path(out) / name
    return json.loads(path.read_text()) if path.exists() else {}


def run_cells(jobs, out_json: Path | None = None, header: dict | None = None, progress: bool = True,
              desc: str = "reproduce") -> tuple[dict, int]:
    """Run a resumable list of cells, any task. ``jobs``: ``[(key, settings, run)]`` where ``run()``
    returns the cell's JSON-ready dict (which must hold ``"settings": settings``).

    With ``out_json``, the cells already there with equal settings are reused, and the file (``header``
    plus ``"cells"``, keeping cells of other keys) is rewritten atomically after each new cell, so an
    interrupted grid resumes at the cell it was in. Returns ``({key: cell} for the jobs, reused count)``.
    """
    from tqdm.auto import tqdm
    previous = load_results(out_json.parent, out_json.name) if out_json is not None else {}
    cells = dict(previous.get("cells", {}))
    settings_json = {key: _jsonable(settings) for key, settings, _ in jobs}
    done = {key for key, _, _ in jobs if key in cells and cells[key].get("settings") == settings_json[key]}
    bar = tqdm(total=len(jobs), initial=len(done), desc=desc, unit="cell", disable=not progress)
    try:
        for key, settings, run in jobs:
            if key in done:
                continue
            bar.set_postfix_str(key)
            cells[key] = _jsonable(run())
            if out_json is not None:
                _atomic_write_text(out_json, json.dumps(_jsonable({**(header or {}), "cells": cells}), indent=1))
            bar.update(1)
    finally:
        bar.close()
    return {key: cells[key] for key, _, _ in jobs}, len(done)


def run_grid(ctx: Context, experiments, out: str | Path | None = None, progress: bool = True,
             cell_runner=None) -> dict:
    """Run every cell of the grid (skipping those already in ``out``'s JSON with the same settings)
    and return ``{"profile", "cells", "summary", "checks", ...}``. With ``out``, the JSON is rewritten
    atomically after each cell and the ES checkpoints go to ``out/checkpoints``."""
    runner = cell_runner or run_cell
    for e in experiments:
        if EXPERIMENTS.get(e) != "classification":
            raise ValueError(f"Unknown classification experiment {e!r}; choose from "
                             f"{sorted(k for k, v in EXPERIMENTS.items() if v == 'classification')}.")
        ctx.arch(e)
    out = Path(out) if out is not None else None
    header = {"version": 1, "profile": _jsonable(asdict(ctx.profile))}
    ck = None if out is None else out / "checkpoints"
    jobs = [(cell_key(e, b, s), ctx.settings(e),
             lambda e=e, b=b, s=s: runner(ctx, e, b, s, checkpoint_dir=ck)) for e, b, s in plan(ctx.profile, experiments)]
    t_start = time.perf_counter()
    selected, reused = run_cells(jobs, None if out is None else out / RESULTS_JSON, header, progress)
    results = {**header, "cells": selected}
    results["summary"] = summarize(selected)
    results["checks"] = checks(results["summary"])
    results["test_images"] = len(ctx.test)
    results["seconds_this_run"] = time.perf_counter() - t_start
    results["cells_reused"] = reused
    return _jsonable(results)


def reproduce(experiments=("vgg", "resnet"), profile: str | Profile = "fast", out: str | Path = "results/reproduce",
              progress: bool = True, device=None, checkpoint_dir=None, download: bool = False, figures: bool = True,
              **overrides) -> dict:
    """Run experiments headless and write ``results.json``, ``results.md`` and (with ``figures``) the
    figures into ``out``; resume from what ``out`` already holds. ``overrides`` are :class:`Profile`
    fields (``bits``, ``seeds``, ``budget``, ``dataset``, ...).

    The classification experiments (``vgg``, ``resnet``) write into ``out`` itself; ``detection`` and
    ``autoencoder`` into ``out/<experiment>/`` (their task module's own JSON, table and figures), and
    ``out/results.md`` then holds every table. Returns the classification results dict, with the other
    experiments' results under ``"tasks"``."""
    import importlib
    experiments = list(experiments)
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)} or 'all'.")
    classification = [e for e in experiments if EXPERIMENTS[e] == "classification"]
    tasks = [e for e in experiments if EXPERIMENTS[e] != "classification"]
    name = profile.name if isinstance(profile, Profile) else (profile or os.environ.get("QEVO_PROFILE", "fast"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, sections = {"figures": []}, []
    if classification:
        prof = profile if isinstance(profile, Profile) else get_profile(profile)
        prof = prof.with_overrides(**overrides)
        ck_dir = checkpoint_dir
        if ck_dir is None and prof.dataset.startswith("folder:"):
            ck_dir = out / "pretrained"   # never register stand-in models in the package's registry
        ctx = Context(prof, device=device, checkpoint_dir=ck_dir, download=download)
        results = run_grid(ctx, classification, out=out, progress=progress)
        results["figures"] = write_figures(results, out) if figures else []
        _atomic_write_text(out / RESULTS_JSON, json.dumps(results, indent=1))
        sections.append(results_markdown(results))
    task_overrides = {k: v for k, v in overrides.items() if k in TASK_OVERRIDES}
    if tasks:
        results["tasks"] = {}
    for e in tasks:
        module = importlib.import_module(TASK_MODULES[EXPERIMENTS[e]])
        res = module.reproduce_task(name, out / e, progress=progress, device=device, download=download,
                                    figures=figures, checkpoint_dir=checkpoint_dir, **task_overrides)
        results["tasks"][e] = res
        results["figures"] += [f"{e}/{f}" for f in res.get("figures", [])]
        # the task's relative links (its figures) now point into its folder; absolute and web links stay
        sections.append(re.sub(r"\]\((?!https?://|/)", f"]({e}/", (out / e / RESULTS_MD).read_text()))
    _atomic_write_text(out / RESULTS_MD, "\n\n".join(sections))
    return results


def _jsonable(obj):
    """Tuples to lists, tensors and numpy scalars to Python numbers, NaN/inf to None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.item())
    return obj
