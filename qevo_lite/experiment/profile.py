"""Profiles: the sizes and budgets of one reproduction, as data.

One :class:`Profile` dataclass serves every task; each task module defines its ``fast`` profile (the
offline CPU setting of the notebooks) and its ``full`` one (paper-sized, GPU recommended). The code
path is the same for both, only sizes change. Budgets are counted in evaluations, never seconds, so a
run is deterministic for a given seed and thread count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..methods import EvolutionConfig, as_config, config_dict, get_method


class Overridable:
    """Mixin for frozen dataclasses: copies with some fields replaced."""

    # keyword names that are not fields but knobs of a field (e.g. a profile's ES budgets)
    knobs = ()

    def with_overrides(self, **kwargs):
        """A copy with the non-None keyword fields replaced (lists become tuples), then the non-None
        :attr:`knobs` applied (:meth:`apply_knobs`). An unknown name raises ValueError listing the known ones."""
        known = {f.name for f in fields(self)}
        bad = set(kwargs) - known - set(self.knobs)
        if bad:
            raise ValueError(f"Unknown profile fields {sorted(bad)}; known: {sorted(known | set(self.knobs))}.")
        knobs = {k: kwargs.pop(k) for k in self.knobs if k in kwargs}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if v is not None}
        out = replace(self, **kwargs)
        return out.apply_knobs(**knobs) if any(v is not None for v in knobs.values()) else out

    def apply_knobs(self, **knobs):
        return self


@dataclass(frozen=True)
class Profile(Overridable):
    """Sizes and budgets of one task's reproduction.

    Attributes:
        name: ``fast`` or ``full``.
        task: the task's name (``classification``, ``detection``, ``autoencoder``).
        dataset: the dataset name the task's data loader understands.
        models: ``{label: architecture}``; the label names an experiment (``qevo reproduce
            --experiment vgg`` runs the classification task's ``vgg`` model only).
        bits: bit widths of the grid (RTN at all of them; the ES where RTN hurts on the search split).
        seeds: ES seeds (the data split is fixed by ``split_seed``).
        search_size: images of the search split (the ES fitness set, held back from pretraining).
        test_size: held-out test images (None: the whole official test split).
        es: the ES's settings, one config (:class:`~qevo_lite.es.pipeline.EvolutionConfig`: its local stage,
            quadratic or sampled or none, and its global stage with the ``budget`` of evaluations per cell);
            ``with_overrides(budget=..., local_budget=...)`` changes its budgets.
        peers: the rounding methods run beside the ES, as configs of registered methods
            (:mod:`qevo_lite.methods`; a name stands for that method's default config, e.g. ``"gptq"``), each
            also as a start of the ES, where the ES runs and RTN costs at least the task's ``hurt`` on the
            search split.
        es_from_peers: also run the ES from each peer's codes (``ES from GPTQ`` ...); the demo profiles skip it.
        report_every: generations between held-out reports in the global stage (never used for
            selection); None: held-out numbers only at the end (for costly metrics such as mAP).
        min_drop_points: for tasks whose headline metric is higher-is-better (accuracy, mAP): run
            the ES where RTN's search-split metric is at least this many points (percent of 100)
            below FP32's. Negative: always.
        min_rise_percent: for tasks whose headline metric is lower-is-better (reconstruction MSE):
            run the ES where RTN raises the search-split metric by at least this many percent.
        max_rise_percent: for lower-is-better tasks: do not run the ES where RTN raises the search-split metric
            by more than this many percent (the model is destroyed: nothing is left to preserve); None: no limit.
        es_bits: bit widths where the ES may run at all (None: every one where RTN hurts).
        granularity: the grid of RTN and the ES (``per_channel``: the strongest rounding baseline).
        extra_granularities: further RTN grids reported beside it (e.g. ``per_tensor``).
        split_seed: the data split the checkpoints were trained against.
        train_epochs: epochs when a missing checkpoint has to be trained (None: the recipe's).
        options: task-specific settings (e.g. the autoencoder's ``normal_classes``), read by the task only.
    """

    name: str
    task: str
    dataset: str
    models: dict
    bits: tuple = (2, 3, 4, 8)
    seeds: tuple = (0, 1, 2)
    search_size: int = 1024
    test_size: int | None = None
    es: EvolutionConfig = field(default_factory=EvolutionConfig)
    peers: tuple = ("gptq", "adaround")
    es_from_peers: bool = True
    report_every: int | None = 4
    min_drop_points: float = 0.5
    min_rise_percent: float = 2.0
    max_rise_percent: float | None = None
    es_bits: tuple | None = None
    granularity: str = "per_channel"
    extra_granularities: tuple = ("per_tensor",)
    split_seed: int = 0
    train_epochs: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.es, EvolutionConfig):
            raise ValueError(f"es must be an EvolutionConfig, got {self.es!r}.")
        peers = tuple(as_config(x) for x in self.peers)   # ValueError naming the registered methods
        if any(get_method(c).kind != "peer" for c in peers):
            raise ValueError(f"peers must be methods of kind 'peer', got {[get_method(c).name for c in peers]}.")
        object.__setattr__(self, "peers", peers)
        if self.granularity in self.extra_granularities:
            raise ValueError(f"extra_granularities {self.extra_granularities} repeats the profile's granularity "
                             f"{self.granularity!r}; list only the other RTN grids to report beside it.")

    knobs = ("budget", "local_budget")

    def apply_knobs(self, budget: int | None = None, local_budget: int | None = None) -> "Profile":
        """A copy whose ES has the global ``budget`` (evaluations per cell) and the local stage's ``local_budget``
        (generations or evaluations per layer) where not None (:meth:`EvolutionConfig.with_budgets`);
        ``with_overrides(budget=..., local_budget=...)`` calls it, as ``qevo reproduce --budget`` does."""
        return replace(self, es=self.es.with_budgets(budget, local_budget))

    def as_dict(self) -> dict:
        """The profile as JSON-ready data: the ES as :meth:`EvolutionConfig.as_dict`, each peer as
        ``{"method": name, **its settings}``."""
        d = asdict(self)
        d["es"] = self.es.as_dict()
        d["peers"] = [config_dict(c) for c in self.peers]
        return d

    def headline(self, bits: int, peers: tuple, models: dict | None = None) -> "Profile":
        """The ``demo`` profile made from this one: one width ``bits`` (the task's headline width), seed 0, the
        given ``peers`` (not as starts of the ES), no extra RTN grids, and ``models`` (default: this profile's):
        every method once, in minutes (``./run.sh demo``)."""
        return replace(self, name="demo", bits=(bits,), seeds=(0,), peers=peers, extra_granularities=(),
                       models=dict(models or self.models), es_from_peers=False)

    def option(self, key: str, default=None):
        """A task-specific setting from :attr:`options`."""
        return self.options.get(key, default)

    def archs(self, labels=None) -> list[str]:
        """The architectures of ``labels`` (default: every model of the profile), in profile order."""
        if labels is None:
            return list(self.models.values())
        unknown = [l for l in labels if l not in self.models]
        if unknown:
            raise ValueError(f"The {self.name!r} {self.task} profile has no model {unknown}; "
                             f"it has {sorted(self.models)}.")
        return [self.models[l] for l in labels]
