"""What the cells of one task and profile share, computed once and cached: the data, the BN-folded
pretrained models, their FP32 numbers, the RTN baselines and the layer sensitivities."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..core.evaluate import default_device, to_fast_layout
from ..methods import RoundingProblem, as_config, choose_codes, get_method
from ..quant.fold import fold_batchnorm
from ..quant.rtn import best_rtn
from ..quant.sensitivity import layer_sensitivity
from .pretrained import load_pretrained

# profile fields a cell's numbers do not depend on (the grid's coordinates and training settings)
NOT_SETTINGS = ("name", "models", "bits", "seeds", "train_epochs", "es_bits")


class Context:
    """The shared state of one task's grid.

    Args:
        task: the :class:`~qevo_lite.experiment.task.Task`.
        profile: its :class:`~qevo_lite.experiment.profile.Profile`.
        device: where models run (default: CUDA if available, else the CPU).
        checkpoint_dir: where pretrained checkpoints live (default: the package's registry,
            ``qevo_lite/checkpoints``); missing ones are trained there.
        download: None (default): download a missing dataset when online; True: always try; False: never.
        local_threads: CPU threads of the local stage (many tiny operations: one thread is as fast as
            two on an idle machine and far faster when the cores are shared).
    """

    def __init__(self, task, profile, device=None, checkpoint_dir=None, download: bool | None = None,
                 local_threads: int | None = 1):
        if profile.task != task.name:
            raise ValueError(f"Profile {profile.name!r} is a {profile.task} profile, not a {task.name} one.")
        kind = task.options_type
        if not (isinstance(profile.options, kind) if kind is not None else profile.options is None):
            expected = kind.__name__ if kind is not None else "None"
            raise ValueError(f"The {task.name} task's profile options must be {expected}, got {profile.options!r}.")
        self.task, self.profile = task, profile
        self.device = torch.device(device) if device is not None else default_device()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.download = download
        self.local_threads = local_threads if self.device.type == "cpu" else None
        self._splits = None
        self._models, self._fp32, self._rtn, self._sensitivity, self._peers = {}, {}, {}, {}, {}
        self.es_codes: dict = {}   # (arch, bits, seed) -> evolved codes of the cells run in this session
        self.on_step = None        # called with each finished step of a cell (run_grid's time-left estimate)

    def step_done(self, name: str) -> None:
        """Tell :attr:`on_step` (if set) that step ``name`` of the running cell finished (``baseline``, ``es``, a
        peer's name, ``es_from:<peer>``; :mod:`~qevo_lite.experiment.time_left`)."""
        if self.on_step is not None:
            self.on_step(name)

    # -- data and models --------------------------------------------------------------------------
    @property
    def splits(self):
        """The task's data (:meth:`Task.load_splits`)."""
        if self._splits is None:
            self._splits = self.task.load_splits(self.profile, download=self.download)
        return self._splits

    @property
    def search(self):
        return self.splits.search

    @property
    def test(self):
        """The held-out split, cut to the profile's ``test_size`` (its first images)."""
        t, n = self.splits.test, self.profile.data.test_size
        return t if n is None or len(t) <= n else t.subset(n)

    def model(self, arch: str):
        """``(BN-folded float model on the device, manifest entry)``; trains a missing checkpoint."""
        if arch not in self._models:
            data = self.profile.data
            model, entry = load_pretrained(self.task, arch, data.dataset, directory=self.checkpoint_dir,
                                           epochs=data.train_epochs, seed=data.split_seed, splits=self.splits,
                                           progress=False)
            if entry.get("split_seed", data.split_seed) != data.split_seed:
                raise ValueError(f"{arch} was trained against split seed {entry['split_seed']}, the profile uses "
                                 f"{data.split_seed}: its search split could contain training images.")
            self.task.check_entry(self.profile, arch, entry)
            fmodel = fold_batchnorm(model).to(self.device).eval()
            # in the layout the task's evaluation leaves it in, from the start (Task.fast_layout): otherwise a
            # method run before the first evaluation would see other float rounding than one run after it
            self._models[arch] = (to_fast_layout(fmodel) if self.task.fast_layout else fmodel, entry)
        return self._models[arch]

    def evaluate(self, model, split: str) -> dict:
        """The task's numbers of ``model`` on ``split`` (``"search"`` or ``"test"``)."""
        return self.task.evaluate(self, model, split)

    # -- baselines --------------------------------------------------------------------------------
    def fp32(self, arch: str) -> dict:
        """FP32 ``{"search": {...}, "test": {...}}``."""
        if arch not in self._fp32:
            fmodel, _ = self.model(arch)
            self._fp32[arch] = {"search": self.evaluate(fmodel, "search"), "test": self.evaluate(fmodel, "test")}
        return self._fp32[arch]

    def rtn(self, arch: str, bits: int, granularity: str | None = None) -> dict:
        """The RTN baseline ``{"state", "rule", "scores": {rule: search loss}, "search", "test"}``: the
        scale rule with the lowest search loss (:meth:`Task.rtn_score`); test numbers are only reported."""
        granularity = granularity or self.profile.grid.granularity
        key = (arch, bits, granularity)
        if key not in self._rtn:
            fmodel, _ = self.model(arch)
            res = best_rtn(fmodel, self.search, bits, granularity, score=self.task.rtn_score)
            qmodel = res.state.to_model(fmodel)
            self._rtn[key] = {"state": res.state, "rule": res.config.scale_rule,
                              "scores": {rule: v["loss"] for rule, v in res.scores.items()},
                              "search": self.evaluate(qmodel, "search"), "test": self.evaluate(qmodel, "test")}
        return self._rtn[key]

    def rtn_search_cost(self, arch: str, bits: int) -> tuple[str, float]:
        """What RTN (the profile's grid) costs on the **search** split: ``(key, cost)``
        (:meth:`Task.search_cost`: the headline metric where the search split measures it, else the loss)."""
        return self.task.search_cost(self.fp32(arch)["search"], self.rtn(arch, bits)["search"])

    def rtn_hurts(self, arch: str, bits: int) -> bool:
        """Whether RTN (the profile's grid) costs at least the task's ``hurt`` on the **search** split's headline
        metric (:meth:`rtn_search_cost`); True where the search split does not measure that metric. The peers
        run only there."""
        key, cost = self.rtn_search_cost(arch, bits)
        return key != self.task.metrics[0].key or cost >= self.task.hurt

    def target_bits(self, arch: str) -> int | None:
        """The lowest bit width of the profile where RTN hurts on the **search** split (:meth:`rtn_hurts`; the
        held-out split never chooses); None if there is none."""
        hurt = [b for b in self.profile.grid.bits if self.rtn_hurts(arch, b)]
        return min(hurt) if hurt else None

    def es_skip_reason(self, arch: str, bits: int) -> str | None:
        """Why the profile does not run the ES on ``arch`` at ``bits`` (None: it runs there), from the search
        split's FP32 and RTN numbers (:meth:`Task.es_skip_reason`)."""
        return self.task.es_skip_reason(self.profile, bits, self.fp32(arch)["search"], self.rtn(arch, bits)["search"])

    def peer(self, arch: str, bits: int, method, seed: int = 0) -> dict:
        """A rounding peer's codes on the RTN grid ``{"state", "seconds", "search", "test"}``. ``method``: a
        registered method's config or name (:mod:`qevo_lite.methods`); a deterministic one (GPTQ) runs once for
        every seed, a seeded one (AdaRound: the seed draws its batches) once per seed. ``seconds``: its wall time
        from the RTN state, layer captures included."""
        config = as_config(method)
        key = (arch, bits, config, seed if get_method(config).seeded else 0)
        if key not in self._peers:
            fmodel, _ = self.model(arch)
            problem = RoundingProblem(fmodel, self.rtn(arch, bits)["state"], self.search, seed=seed,
                                      loss=self.task.es_loss, metric=self.task.es_metric, threads=self.local_threads)
            res = choose_codes(config, problem)
            model = res.state.to_model(fmodel)
            self._peers[key] = {"state": res.state, "seconds": res.seconds, "search": self.evaluate(model, "search"),
                                "test": self.evaluate(model, "test")}
        return self._peers[key]

    def sensitivity(self, arch: str, bits: int) -> dict:
        """``{layer: search-loss increase with only that layer quantized}`` on the RTN grid, most
        sensitive first."""
        key = (arch, bits)
        if key not in self._sensitivity:
            fmodel, _ = self.model(arch)
            self._sensitivity[key] = layer_sensitivity(fmodel, self.rtn(arch, bits)["state"], self.search,
                                                       score=self.task.rtn_score)
        return self._sensitivity[key]

    def with_profile(self, profile) -> "Context":
        """A context for ``profile``, another profile of the same task on the same data (other bit widths, seeds,
        ES settings or peers), sharing this one's caches: data, models, FP32, RTN and sensitivity numbers, and
        the peers' codes (cached per config). Only what differs then costs time.

        Raises ValueError when ``profile`` differs in what the caches depend on: the task, its data
        (:class:`~qevo_lite.experiment.profile.DataSpec`), its quantization grid (``grid.granularity``), or a task
        option other than those of its studies (:attr:`Task.study_options`)."""
        def data(p):
            options = asdict(p.options) if p.options is not None else {}
            return (p.task, p.data, p.grid.granularity,
                    {k: v for k, v in options.items() if k not in self.task.study_options})
        if data(profile) != data(self.profile):
            raise ValueError(f"Profile {profile.name!r} uses other data than this context's (its task, data, "
                             "granularity and task options must agree); make a new Context.")
        other = Context(self.task, profile, device=self.device, checkpoint_dir=self.checkpoint_dir,
                        download=self.download, local_threads=self.local_threads)
        other._splits, other._models, other._fp32 = self._splits, self._models, self._fp32
        other._rtn, other._sensitivity, other._peers = self._rtn, self._sensitivity, self._peers
        return other

    def settings(self, arch: str) -> dict:
        """What a cell's numbers depend on (a finished cell is reused only when these match)."""
        p = self.profile.as_dict()
        for k in NOT_SETTINGS:
            p.pop(k)
        return {"arch": arch, **p}

    def es_model(self, arch: str, bits: int, seed: int, codes=None):
        """The float model decoding the ES codes of cell (arch, bits, seed) (``codes``, else this
        session's ``es_codes``)."""
        codes = codes if codes is not None else self.es_codes.get((arch, bits, seed))
        if codes is None:
            raise ValueError(f"No ES codes of {arch} W{bits} seed {seed} in this session; load them with "
                             "qevo_lite.experiment.cell_grid.load_codes(out, arch, bits, seed).")
        fmodel, _ = self.model(arch)
        return self.rtn(arch, bits)["state"].with_codes(codes).to_model(fmodel)
