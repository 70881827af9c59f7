"""The task interface: what a task (classification, detection, the autoencoder, yours) supplies to the
one experiment pipeline.

The pipeline (:mod:`~qevo_lite.experiment.context`, :mod:`~qevo_lite.experiment.cell`,
:mod:`~qevo_lite.experiment.cell_grid`, :mod:`~qevo_lite.experiment.summary`) walks the same path for every
task: pretrained model -> FP32 numbers -> RTN baselines -> (where RTN hurts) local + global ES ->
held-out numbers -> tables and figures. A task fills in the hooks below; everything else is shared.
To add a task: subclass :class:`Task` in a new ``qevo_lite/tasks/<name>/`` package and add one line to
the registry in :mod:`qevo_lite.tasks`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..methods import EvolutionConfig, as_config, config_from_dict, describe


@dataclass(frozen=True)
class Metric:
    """One held-out number of a task.

    ``key``: its name in the task's evaluation dicts (cell keys are ``<stage>_<split>_<key>``, e.g.
    ``rtn_test_accuracy``); ``label``: how tables and axes name it (with its unit);
    ``higher_is_better``; ``scale`` and ``digits``: shown as ``value * scale`` with ``digits`` decimals
    (accuracy 0.913 -> ``91.3`` with scale 100)."""

    key: str
    label: str
    higher_is_better: bool = True
    scale: float = 100.0
    digits: int = 1

    def fmt(self, value, std=None) -> str:
        """``value`` (± ``std``) as the tables show it; ``-`` for None."""
        if value is None:
            return "-"
        s = f"{self.scale * value:.{self.digits}f}"
        return s if std is None else s + f" ± {self.scale * std:.{self.digits}f}"

    def improvement(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` (positive = better), in the metric's own unit."""
        return new - old if self.higher_is_better else old - new

    def cost(self, quantized: float, fp32: float) -> float:
        """What quantization cost: points (``scale`` units) below FP32 for a higher-is-better metric,
        percent above FP32 for a lower-is-better one."""
        if self.higher_is_better:
            return self.scale * (fp32 - quantized)
        return 100.0 * (quantized / fp32 - 1.0) if fp32 else float("inf")

    @property
    def cost_unit(self) -> str:
        return "points" if self.higher_is_better else "%"


def as_run(config, search_size: int | None):
    """``config`` with its ``samples`` (search images asked for) cut to ``search_size``, the split's size, when
    it asks for more: a method reads the split's first ``samples`` images, so that is how many it ran on."""
    asked = getattr(config, "samples", None)
    if search_size is None or asked is None or asked <= search_size:
        return config
    return replace(config, samples=search_size)


def describe_es(p: dict, samples: str, loss: str) -> str:
    """How a profile's ES and peers ran, in a sentence or two (for :meth:`Task.describe`); ``p`` the profile as
    a dict (:meth:`Profile.as_dict`), ``samples`` what the local stage's samples are (``images``), ``loss`` the
    global stage's loss."""
    es = EvolutionConfig.from_dict(p["es"])
    loc, glob = es.local, es.global_stage
    if es.local_kind == "quadratic":
        weighted = {"output": "", "fisher": ", each output position weighted by the squared gradient of the task "
                    "loss there (the Fisher diagonal, averaged over channels)",
                    "fisher_channels": ", each output element weighted by the squared gradient of the task loss "
                    "there (the Fisher diagonal)"}[loc.weighting]
        local = (f"local stage: per output channel, a (1+{loc.lam}) ES on the layer's exact quadratic output "
                 f"error{weighted} over {loc.samples} {samples} (up to {loc.generations} generations per layer), "
                 "layer by layer")
    elif es.local_kind == "sampled":
        local = (f"local stage: {loc.evaluations} evaluations per layer on the layer-output MSE of "
                 f"{loc.samples} {samples}")
    else:
        local = ""
    grad = es.gradient_stage
    if grad.active:       # the gradient stage after the local one (qevo_lite.es.gradient_stage)
        local = (f"{local}; then " if local else "") + (
            f"a gradient stage on the search {loss}: sets of one-step moves ranked by the loss's gradient and a "
            f"Gauss-Newton curvature ({grad.draws} random directions), each set kept only if the exact loss on the "
            f"first {1 - grad.holdout:.0%} of the search split falls, at most {grad.budget} such checks, the result "
            f"the codes best on the last {grad.holdout:.0%}")
    if es.gate_local and local:
        local += (f"; the local stage's codes kept only where they lower the search {loss} below the start "
                  "codes'")
    glob_txt = f"a global (1+{glob.lam}) ES with {glob.budget} evaluations on the search {loss}"
    if not glob.active:
        es_txt = f"{local}; no global stage (the default: it added no held-out gain)" if local else "the start codes"
    else:
        es_txt = f"{local}; then {glob_txt}" if local else glob_txt
    peers = p.get("peers", ())   # each {"method": name, **settings} (Profile.as_dict)
    configs = [as_config(x) if isinstance(x, str) else config_from_dict(x) for x in peers]
    peer_txt = (" Peers on the same grid: " + ", ".join(describe(as_run(c, p.get("search_size")), samples)
                                                        for c in configs) +
                ("; each is also the start of the same ES (\"ES from ...\")" if p.get("es_from_peers", True) else "") +
                ". Wall times are end to end from the RTN state on one machine and thread setting.") if peers else ""
    grid = {"per_channel": "one scale per output channel", "per_tensor": "one scale per layer"}
    g = p.get("granularity", "per_channel")
    grid_txt = f"Every method keeps RTN's {g.replace('_', '-')} grid ({grid.get(g, g)}). "
    return grid_txt + f"ES = {es_txt}." + peer_txt


class Task:
    """The hooks of one task. Subclasses set the class attributes and override the methods that raise.

    Attributes:
        name: the registry name (``classification``, ...); also the output folder of ``qevo reproduce``.
        title: heading of the task's ``results.md`` section.
        metrics: held-out :class:`Metric` s, the headline first (it decides where RTN hurts, the gap
            recovered and the noise).
        search_metrics: metric keys also measured on the search split (besides ``loss``).
        es_loss, es_metric: the global stage's per-sample loss and metric (a name of
            :data:`qevo_lite.evaluators.base.LOSSES` or a callable ``(outputs, targets) -> (n,)``).
        hurt: RTN "hurts" at a bit width where the held-out headline metric costs at least this much
            (:meth:`Metric.cost`: points, or percent for a lower-is-better metric); the checks look at
            the lowest such width.
        architectures: the architectures the task builds and trains (the registry's dispatch).
        plotted_metrics: how many of :attr:`metrics` get a "metric vs bits" figure.
        profiles: ``{"fast": Profile, "full": Profile}``.
        first_es: ``{profile name: EvolutionConfig}``: the ES as first built, which the task's notebook walks
            before it shows the default ES next to the peers (empty: the notebook walks the default).
        fast_layout: the task's evaluation runs the model in ``channels_last`` layout
            (:func:`~qevo_lite.core.evaluate.to_fast_layout`, which converts a model in place). The context then
            converts the float model once, when it loads it, so that every method sees the same weight layout
            whatever ran first: the CPU conv kernels round differently in each layout, and the ES's choices
            follow its float comparisons.
        tuned_peers: the rounding peers at the settings chosen on this task's validation slice
            (docs/tuning.md), as method configs; the demo profile runs them, notebooks pick from them.
        options_type: the frozen dataclass of the task's own profile settings (``Profile.options``; None: the
            task has none), e.g. :class:`qevo_lite.tasks.autoencoder.task.AutoencoderOptions`.
        study_options: fields of the profile's typed ``options`` that only the task's extra studies read
            (:meth:`extra`); they do not change a cell's numbers, so cells are reused across them and
            :meth:`without_studies` turns the studies off.
        step_seconds: ``{step: seconds}`` of one cell's steps in a reference run (``baseline``, ``es``, each
            peer's name; :mod:`~qevo_lite.experiment.time_left`): ``qevo reproduce``'s bar estimates the time left
            from them (None: it counts cells).
    """

    name = "task"
    step_seconds: dict | None = None
    title = "Task"
    metrics: tuple = ()
    search_metrics: tuple = ()
    es_loss = "cross_entropy"
    es_metric = None
    hurt = 2.0
    plotted_metrics = 1
    architectures: tuple = ()
    profiles: dict = {}
    first_es: dict = {}
    tuned_peers: tuple = ()
    fast_layout = False
    study_options: tuple = ()
    options_type: type | None = None

    # -- data and models --------------------------------------------------------------------------
    def unavailable(self, profile) -> str | None:
        """Why this task cannot run ``profile`` at all (None: it can). ``qevo reproduce`` stops with this
        message when the task was asked for by name, and skips the task with it under ``all``."""
        return None

    def load_splits(self, profile, download: bool | None = None):
        """The task's data for ``profile``: an object with ``search`` and ``test`` splits (``x``,
        ``y``, ``subset``), ``test`` already cut to ``profile.data.test_size``."""
        raise NotImplementedError

    def build_model(self, arch: str, entry: dict):
        """A fresh, untrained ``arch`` shaped as the manifest ``entry`` says."""
        raise NotImplementedError

    def train_model(self, arch: str, dataset: str, seed: int = 0, epochs: int | None = None, device=None,
                    progress: bool = True, splits=None):
        """Train ``arch`` on ``dataset`` (split ``seed``; ``epochs`` None: the recipe's). Returns
        ``(model in eval mode on the CPU, manifest fields)``; the fields hold ``epochs`` and the FP32
        held-out numbers as ``fp32_<...>``."""
        raise NotImplementedError

    def check_entry(self, profile, arch: str, entry: dict) -> None:
        """Raise ValueError if the checkpoint ``entry`` does not fit ``profile`` (beyond the split seed)."""

    # -- numbers ----------------------------------------------------------------------------------
    def evaluate(self, ctx, model, split: str) -> dict:
        """``{"loss": mean ES loss, <metric key>: value, ...}`` of ``model`` on ``ctx``'s ``split``
        (``"search"``: ``loss`` and :attr:`search_metrics`; ``"test"``: ``loss`` and every metric)."""
        raise NotImplementedError

    def rtn_score(self, model, split) -> float:
        """The search-split loss that picks RTN's scale rule and scores layer sensitivity."""
        raise NotImplementedError

    def search_cost(self, fp32_search: dict, rtn_search: dict) -> tuple[str, float]:
        """What RTN costs on the search split: ``(key, cost)``, the headline metric's :meth:`Metric.cost` (points
        below FP32, or percent above it for a lower-is-better metric) where both dicts hold it, else the same
        for ``"loss"`` (the one place that reads this; :meth:`es_skip_reason` and the context's
        :meth:`~qevo_lite.experiment.context.Context.rtn_hurts` decide from it)."""
        m = self.metrics[0]
        key = m.key if m.key in fp32_search and m.key in rtn_search else "loss"
        return key, m.cost(rtn_search[key], fp32_search[key])

    def es_skip_reason(self, profile, bits: int, fp32_search: dict, rtn_search: dict) -> str | None:
        """Why the ES is not run at ``bits`` (None: run it): RTN is close to FP32 on the search split
        (``min_drop_points`` / ``min_rise_percent`` of the profile's cell grid, by the headline metric's
        direction), RTN destroys the model there (``max_rise_percent``), or ``bits`` is not in its ``es_bits``."""
        m, grid = self.metrics[0], profile.grid
        key, cost = self.search_cost(fp32_search, rtn_search)
        if m.higher_is_better and cost < grid.min_drop_points:
            return (f"RTN is within {grid.min_drop_points:.1f} points of FP32 on the search split "
                    f"({cost:+.2f})")
        if not m.higher_is_better and cost < grid.min_rise_percent:
            return f"RTN raises the search {key} by only {cost:.1f}% (< {grid.min_rise_percent:.0f}%)"
        if not m.higher_is_better and grid.max_rise_percent is not None and cost > grid.max_rise_percent:
            return (f"RTN raises the search {key} by {cost:.0f}% (> {grid.max_rise_percent:.0f}%): the model is "
                    "destroyed, nothing is left to preserve")
        if grid.es_bits is not None and bits not in grid.es_bits:
            return f"the profile runs the ES only at {list(grid.es_bits)} bits"
        return None

    # -- reporting --------------------------------------------------------------------------------
    def describe(self, results: dict) -> str:
        """The paragraph of ``results.md`` that says how the numbers were made."""
        raise NotImplementedError

    def figures(self, ctx, results: dict) -> list:
        """The task's own figures (beyond the shared ones): ``[(Figure, file name)]``."""
        return []

    def extra(self, ctx, results: dict, out, progress: bool) -> dict:
        """Further studies after the grid (e.g. detection's fitness comparison), resumable through
        :func:`~qevo_lite.experiment.cell_grid.run_cells`; their keys are added to the results."""
        return {}

    def without_studies(self, profile):
        """``profile`` with the task's extra studies turned off (default: unchanged)."""
        return profile

    def extra_markdown(self, results: dict) -> str:
        """Text for the studies of :meth:`extra` in ``results.md``."""
        return ""
