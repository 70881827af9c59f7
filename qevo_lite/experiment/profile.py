"""Profiles: the sizes and budgets of one reproduction, as data.

One :class:`Profile` dataclass serves every task; each task module defines its ``fast`` profile (the
offline CPU setting of the notebooks) and its ``full`` one (paper-sized, GPU recommended). The code
path is the same for both, only sizes change. Budgets are counted in evaluations, never seconds, so a
run is deterministic for a given seed and thread count.

A profile has three parts, each a frozen dataclass: :class:`DataSpec` (what the data needs: the cached splits,
models and baselines depend on it alone), :class:`CellGrid` (the grid of cells: models x bit widths x seeds, on
which quantization grid, and where the ES runs) and :class:`MethodSpec` (the ES's config and the peers'), plus
the task's own typed options (e.g. :class:`qevo_lite.tasks.detection.task.DetectionOptions`), which only the task
reads. ``with_overrides`` takes any field of any part by its name (``bits=``, ``search_size=``, ``es=``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..methods import EvolutionConfig, as_config, config_dict, get_method


@dataclass(frozen=True)
class DataSpec:
    """What a profile's data needs; the cached splits, pretrained models, FP32 and RTN numbers depend on these.

    Attributes:
        dataset: the dataset name the task's data loader understands.
        search_size: images of the search split (the ES fitness set, held back from pretraining).
        test_size: held-out test images (None: the whole official test split).
        split_seed: the data split the checkpoints were trained against.
        train_epochs: epochs when a missing checkpoint has to be trained (None: the recipe's).
    """

    dataset: str
    search_size: int = 1024
    test_size: int | None = None
    split_seed: int = 0
    train_epochs: int | None = None


@dataclass(frozen=True)
class CellGrid:
    """The grid of cells (one cell: one model at one bit width with one seed), on which quantization grid, and
    where the ES and the peers run.

    Attributes:
        models: ``{label: architecture}``; the label names an experiment (``qevo reproduce
            --experiment vgg`` runs the classification task's ``vgg`` model only).
        bits: bit widths of the grid (RTN at all of them; the ES where RTN hurts on the search split).
        seeds: ES seeds (the data split is fixed by :attr:`DataSpec.split_seed`).
        granularity: the quantization grid of RTN and every method (``per_channel``: the strongest rounding
            baseline; ``per_tensor``: one scale per layer).
        extra_granularities: further RTN grids reported beside it (e.g. ``per_tensor``).
        es_bits: bit widths where the ES may run at all (None: every one where RTN hurts).
        min_drop_points: for tasks whose headline metric is higher-is-better (accuracy, mAP): run
            the ES where RTN's search-split metric is at least this many points (percent of 100)
            below FP32's. Negative: always.
        min_rise_percent: for tasks whose headline metric is lower-is-better (reconstruction MSE):
            run the ES where RTN raises the search-split metric by at least this many percent.
        max_rise_percent: for lower-is-better tasks: do not run the ES where RTN raises the search-split metric
            by more than this many percent (the model is destroyed: nothing is left to preserve); None: no limit.
    """

    models: dict
    bits: tuple = (2, 3, 4, 8)
    seeds: tuple = (0, 1, 2)
    granularity: str = "per_channel"
    extra_granularities: tuple = ("per_tensor",)
    es_bits: tuple | None = None
    min_drop_points: float = 0.5
    min_rise_percent: float = 2.0
    max_rise_percent: float | None = None

    def __post_init__(self):
        if self.granularity in self.extra_granularities:
            raise ValueError(f"extra_granularities {self.extra_granularities} repeats the profile's granularity "
                             f"{self.granularity!r}; list only the other RTN grids to report beside it.")


@dataclass(frozen=True)
class MethodSpec:
    """The methods a profile runs, as configs of registered methods (:mod:`qevo_lite.methods`).

    Attributes:
        es: the ES's settings, one config (:class:`~qevo_lite.es.pipeline.EvolutionConfig`: its local stage,
            quadratic or sampled or none, and its global stage with the ``budget`` of evaluations per cell);
            ``Profile.with_overrides(budget=..., local_budget=...)`` changes its budgets.
        peers: the rounding methods run beside the ES (a name stands for that method's default config, e.g.
            ``"gptq"``), each also as a start of the ES, where the ES runs and RTN costs at least the task's
            ``hurt`` on the search split.
        es_from_peers: also run the ES from each peer's codes (``ES from GPTQ`` ...); the demo profiles skip it.
        report_every: generations between held-out reports in the global stage (never used for
            selection); None: held-out numbers only at the end (for costly metrics such as mAP).
    """

    es: EvolutionConfig = field(default_factory=EvolutionConfig)
    peers: tuple = ("gptq", "adaround")
    es_from_peers: bool = True
    report_every: int | None = 4

    def __post_init__(self):
        if not isinstance(self.es, EvolutionConfig):
            raise ValueError(f"es must be an EvolutionConfig, got {self.es!r}.")
        peers = tuple(as_config(x) for x in self.peers)   # ValueError naming the registered methods
        if any(get_method(c).kind != "peer" for c in peers):
            raise ValueError(f"peers must be methods of kind 'peer', got {[get_method(c).name for c in peers]}.")
        object.__setattr__(self, "peers", peers)


PARTS = {"data": DataSpec, "grid": CellGrid, "methods": MethodSpec}
# the order of the keys of Profile.as_dict (the results.json header and a cell's settings; version 3)
FLAT_ORDER = ("name", "task", "dataset", "models", "bits", "seeds", "search_size", "test_size", "es", "peers",
              "es_from_peers", "report_every", "min_drop_points", "min_rise_percent", "max_rise_percent", "es_bits",
              "granularity", "extra_granularities", "split_seed", "train_epochs", "options")


@dataclass(frozen=True)
class Profile:
    """One task's reproduction: a name, the task, and its three parts.

    Attributes:
        name: ``fast``, ``full`` or ``demo``.
        task: the task's name (``classification``, ``detection``, ``autoencoder``).
        data: what the data needs (:class:`DataSpec`).
        grid: the grid of cells and where the ES runs (:class:`CellGrid`).
        methods: the ES's and the peers' configs (:class:`MethodSpec`).
        options: the task's own settings, a frozen dataclass the task defines and alone reads (None: the task
            has none), e.g. the autoencoder's normal classes.
    """

    name: str
    task: str
    data: DataSpec
    grid: CellGrid
    methods: MethodSpec = field(default_factory=MethodSpec)
    options: object = None

    def __post_init__(self):
        for part, kind in PARTS.items():
            if not isinstance(getattr(self, part), kind):
                raise ValueError(f"A profile's {part} must be a {kind.__name__}, got {getattr(self, part)!r}.")

    # -- copies --------------------------------------------------------------------------------------
    def with_overrides(self, budget: int | None = None, local_budget: int | None = None, **kwargs) -> "Profile":
        """A copy with the non-None keyword fields replaced, each named as in its part (``bits=``, ``search_size=``,
        ``es=``, ``options=`` ...; lists become tuples, a part may also be replaced whole: ``data=DataSpec(...)``);
        then the ES's global ``budget`` (evaluations per cell) and the local stage's ``local_budget``
        (generations or evaluations per layer) where not None (:meth:`EvolutionConfig.with_budgets`), as
        ``qevo reproduce --budget`` does. An unknown name raises ValueError listing the known ones."""
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if v is not None}
        owner = {f.name: part for part, kind in PARTS.items() for f in fields(kind)}
        own = {f.name for f in fields(self)}
        bad = set(kwargs) - set(owner) - own
        if bad:
            raise ValueError(f"Unknown profile fields {sorted(bad)}; known: "
                             f"{sorted(set(owner) | own | {'budget', 'local_budget'})}.")
        top = {k: v for k, v in kwargs.items() if k in own}
        for part in PARTS:
            changes = {k: v for k, v in kwargs.items() if owner.get(k) == part}
            if changes:
                top[part] = replace(top.get(part, getattr(self, part)), **changes)
        out = replace(self, **top)
        if budget is not None or local_budget is not None:
            out = replace(out, methods=replace(out.methods, es=out.methods.es.with_budgets(budget, local_budget)))
        return out

    def headline(self, bits: int, peers: tuple, models: dict | None = None) -> "Profile":
        """The ``demo`` profile made from this one: one width ``bits`` (the task's headline width), seed 0, the
        given ``peers`` (not as starts of the ES), no extra RTN grids, and ``models`` (default: this profile's):
        every method once, in minutes (``./run.sh demo``)."""
        return replace(self, name="demo").with_overrides(bits=(bits,), seeds=(0,), peers=peers,
                                                         extra_granularities=(), models=dict(models or self.grid.models),
                                                         es_from_peers=False)

    # -- reading ---------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The profile as flat JSON-ready data (one key per field of every part, in :data:`FLAT_ORDER`; the
        results.json header and what a finished cell is matched on): the ES as :meth:`EvolutionConfig.as_dict`,
        each peer as ``{"method": name, **its settings}``, the task options as a dict."""
        flat = {"name": self.name, "task": self.task, **asdict(self.data), **asdict(self.grid),
                **asdict(self.methods)}
        flat["es"] = self.methods.es.as_dict()
        flat["peers"] = [config_dict(c) for c in self.methods.peers]
        flat["options"] = asdict(self.options) if self.options is not None else {}
        return {k: flat[k] for k in FLAT_ORDER}

    def archs(self, labels=None) -> list[str]:
        """The architectures of ``labels`` (default: every model of the profile), in profile order."""
        models = self.grid.models
        if labels is None:
            return list(models.values())
        unknown = [l for l in labels if l not in models]
        if unknown:
            raise ValueError(f"The {self.name!r} {self.task} profile has no model {unknown}; "
                             f"it has {sorted(models)}.")
        return [models[l] for l in labels]
