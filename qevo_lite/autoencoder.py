"""The autoencoder experiment: a small convolutional autoencoder, nearest rounding versus the ES.

The setting is anomaly detection, as in the paper's autoencoder experiment: the autoencoder is
trained on *normal* images only (by default the five garment classes 0-4 of Fashion-MNIST:
T-shirt/top, Trouser, Pullover, Dress, Coat) and an image is scored by its reconstruction error;
images of the unseen classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) should reconstruct worse.
The split mixes easy anomalies (footwear and bags look nothing like a garment) with a hard one
(a Shirt looks like a T-shirt, a Pullover or a Coat), so the AUROC is high but not saturated and a
quantization that hurts the model can show in it.

Data (:func:`ae_splits`), all from :func:`qevo_lite.data.load_splits` with the checkpoint's split seed:

* ``train``: the pretraining images of the normal classes (never used by the ES);
* ``search``: the ES fitness set, normal-class images from the training images held back from
  pretraining (``load_splits``' reserved pool), so the autoencoder never saw them;
* ``test`` / ``test_normal``: the official test split (every class, for the AUROC) and its
  normal-class images (for the held-out MSE and PSNR); reported only, never used to select.

Units (every docstring below uses them):

* **MSE** is the mean squared error per pixel on the *normalised* scale the model reconstructs
  (``(pixel / 255 - mean) / std`` with the training-split mean and std of ``load_splits``); it is
  the ES fitness (:func:`qevo_lite.fitness.reconstruction_mse`) and the anomaly score.
* **PSNR** (dB) is on the ``[0, 1]`` pixel scale: ``10 log10(1 / MSE_pixel)`` where ``MSE_pixel``
  is the MSE of the de-normalised images (``= std^2 x`` the normalised MSE for one channel),
  averaged over all held-out pixels (no clamping of the reconstruction).
* **AUROC**: :func:`sklearn.metrics.roc_auc_score` of the per-image MSE with anomalies (classes
  outside ``normal_classes``) as the positive class; 0.5 = chance, 1 = perfect.

One *cell* of the grid is (bit width, seed); :func:`run_ae_cell` follows
:func:`qevo_lite.experiments.run_cell`: FP32, RTN per channel (scale rule chosen by search MSE: the
baseline) and per tensor; where RTN raises the search MSE by at least ``min_drop`` (relative), the
local layer-wise ES (:func:`qevo_lite.experiments.local_stage`) then the global (1+lambda) ES on
the search MSE (:func:`qevo_lite.experiments.global_stage`, ``loss="mse"``), with held-out MSE,
PSNR and AUROC measured only at reporting points. :func:`reproduce_task` runs the grid headless
(resumable) and writes ``results.json``, ``results.md`` and figures; ``qevo reproduce --experiment
autoencoder`` calls it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import experiments as ex
from .data import SEARCH_POOL, Split, load_arrays, load_splits
from .evaluate import default_device, to_fast_layout
from .fold import fold_batchnorm
from .baseline import best_rtn
from .quant import SCALE_RULES
from .sensitivity import layer_sensitivity
from .train import train_loop

ARCH = "conv_autoencoder"
EXPERIMENT = "autoencoder"
DEFAULT_NORMAL_CLASSES = (0, 1, 2, 3, 4)
# Training recipe of the committed checkpoint (about 1-2 minutes on 2 CPU cores for Fashion-MNIST).
RECIPES = {"fashion_mnist": {"epochs": 5, "lr": 3e-3}, "digits": {"epochs": 30, "lr": 3e-3}}
DEFAULT_RECIPE = {"epochs": 4, "lr": 3e-3}
LATENT_DIM = 24


# ----------------------------------------------------------------------------- the model
def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> batch-norm -> ReLU (BN is folded into the conv before quantizing)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder with a dense bottleneck.

    Encoder: 3x3 conv stride 2 (C->16, HxW -> H/2), 3x3 conv stride 2 (16->32, -> H/4), 3x3 conv
    (32->16), flatten, linear to a ``latent``-dim code. Decoder: linear back to 16 x H/4 x W/4, 3x3
    conv (16->32), nearest 2x upsampling, 3x3 conv (32->16), 2x upsampling, 3x3 conv (16->C), no output
    activation (the targets are normalised images). Only Conv2d and Linear layers carry weights
    (upsampling is ``nn.Upsample``, not a transposed conv), so the quantizer sees every weight.
    For 28x28x1 and ``latent=24``: 56,352 weights in 8 layers.

    Args:
        in_channels: image channels C.
        image_size: H = W, divisible by 4.
        latent: bottleneck dimension (small, so unseen classes reconstruct badly).
    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent: int = LATENT_DIM):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}.")
        s = image_size // 4
        self.encoder = nn.Sequential(_conv_bn_relu(in_channels, 16, 2), _conv_bn_relu(16, 32, 2),
                                     _conv_bn_relu(32, 16), nn.Flatten(), nn.Linear(16 * s * s, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 16 * s * s), nn.ReLU(), nn.Unflatten(1, (16, s, s)),
                                     _conv_bn_relu(16, 32), nn.Upsample(scale_factor=2, mode="nearest"),
                                     _conv_bn_relu(32, 16), nn.Upsample(scale_factor=2, mode="nearest"),
                                     nn.Conv2d(16, in_channels, 3, 1, 1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_model(arch: str = ARCH, entry: dict | None = None) -> nn.Module:
    """A fresh autoencoder shaped as the manifest ``entry`` says (in_channels, image_size, latent_dim)."""
    if arch != ARCH:
        raise ValueError(f"qevo_lite.autoencoder builds {ARCH!r}, not {arch!r}.")
    entry = entry or {}
    return ConvAutoencoder(entry.get("in_channels", 1), entry.get("image_size", 28),
                           entry.get("latent_dim", LATENT_DIM))


# ----------------------------------------------------------------------------- data
@dataclass
class AESplits:
    """The autoencoder's splits (see the module docstring); images normalised as by ``load_splits``.

    ``pixel_std``/``pixel_mean``: per-channel normalisation constants (C,), so that
    ``pixel = x * std + mean`` is on the [0, 1] scale. ``test_is_anomaly``: bool (N_test,).
    """

    dataset: str
    train: Split
    search: Split
    test: Split
    test_normal: Split
    normal_classes: tuple
    classes: tuple
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    train_indices: torch.Tensor   # indices into the official training split
    search_indices: torch.Tensor  # indices into the official training split

    @property
    def test_is_anomaly(self) -> torch.Tensor:
        return ~is_normal(self.test.y, self.normal_classes)

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]


def is_normal(y: torch.Tensor, normal_classes) -> torch.Tensor:
    """Bool mask (N,): whether each label is one of ``normal_classes``."""
    return torch.isin(y, torch.tensor(list(normal_classes), dtype=y.dtype))


def _select(split: Split, mask: torch.Tensor) -> Split:
    return Split(split.x[mask], split.y[mask])


def ae_splits(dataset: str = "fashion_mnist", seed: int = 0, normal_classes=DEFAULT_NORMAL_CLASSES,
              search_size: int | None = None, test_size: int | None = None, download: bool = False) -> AESplits:
    """Load ``dataset`` as the autoencoder's splits (seeded by ``seed``, the checkpoint's split seed).

    ``search_size``: normal-class images of the search split (None: all in the reserved pool);
    ``test_size``: first images of the official test split (None: all). The reserved pool is
    ``min(SEARCH_POOL, n_train // 3)`` training images, the same whatever ``search_size`` is, so the
    pretraining images never depend on it.
    """
    normal_classes = tuple(int(c) for c in normal_classes)
    x_tr, y_tr, _, _, classes = load_arrays(dataset, download=download)
    bad = [c for c in normal_classes if not 0 <= c < len(classes)]
    if bad or not normal_classes or len(set(normal_classes)) == len(classes):
        raise ValueError(f"normal_classes must be a non-empty proper subset of 0..{len(classes) - 1}, "
                         f"got {normal_classes}.")
    pixels = x_tr.float().div(255.0)  # the normalisation constants of load_splits
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))
    pool = min(SEARCH_POOL, len(y_tr) // 3)
    del pixels, x_tr
    s = load_splits(dataset, search_size=pool, seed=seed, download=download)
    search = _select(s.search, is_normal(s.search.y, normal_classes))
    search_idx = s.search_indices[is_normal(s.search.y, normal_classes)]
    if search_size is not None:
        if search_size > len(search):
            raise ValueError(f"search_size={search_size} exceeds the {len(search)} normal-class images held back "
                             f"from pretraining.")
        search, search_idx = search.subset(search_size), search_idx[:search_size]
    train_mask = is_normal(s.train.y, normal_classes)
    test = s.test if test_size is None else s.test.subset(test_size)
    return AESplits(dataset, _select(s.train, train_mask), search, test,
                    _select(test, is_normal(test.y, normal_classes)), normal_classes, s.classes, mean, std,
                    s.train_indices[train_mask], search_idx)


# ----------------------------------------------------------------------------- metrics
@torch.no_grad()
def reconstruct(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Reconstructions (N, C, H, W) of images ``x`` (N, C, H, W), on the CPU, computed on the model's device."""
    device = next(model.parameters()).device
    model = model.eval()
    return torch.cat([model(to_fast_layout(x[i:i + batch_size].to(device))).float().cpu().contiguous()
                      for i in range(0, len(x), batch_size)]) if len(x) else x.clone()


def per_image_mse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (N,) on the normalised scale (the ES fitness and the anomaly score)."""
    return F.mse_loss(recon, x, reduction="none").flatten(1).mean(1)


def psnr_db(recon: torch.Tensor, x: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> float:
    """PSNR (dB) on the [0, 1] pixel scale of reconstructions ``recon`` of normalised images ``x``
    (both (N, C, H, W)): both are de-normalised (``x * std + mean``, per channel), then
    ``10 log10(1 / MSE)`` over all pixels (torchmetrics' ``peak_signal_noise_ratio``, data range 1)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio
    shape = (1, -1, 1, 1)
    to_pixels = lambda t: t * pixel_std.reshape(shape) + pixel_mean.reshape(shape)  # noqa: E731
    return float(peak_signal_noise_ratio(to_pixels(recon), to_pixels(x), data_range=1.0))


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve of anomaly ``scores`` (N,) against ``is_anomaly`` (N,) bools/0-1
    (sklearn's ``roc_auc_score``; anomalies are the positive class, a higher score = more anomalous)."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(torch.as_tensor(is_anomaly).int().numpy(), torch.as_tensor(scores).double().numpy()))


def ae_metrics(model: nn.Module, splits: AESplits) -> dict:
    """Held-out numbers of ``model``: ``{"mse": normalised MSE on the normal-class test images,
    "psnr": PSNR (dB, [0, 1] scale) on them, "auroc": AUROC of the per-image MSE on the whole test
    split (anomalies = classes outside normal_classes)}``."""
    recon = reconstruct(model, splits.test.x)
    scores = per_image_mse(recon, splits.test.x)
    normal = ~splits.test_is_anomaly
    return {"mse": float(scores[normal].mean()),
            "psnr": psnr_db(recon[normal], splits.test.x[normal], splits.pixel_mean, splits.pixel_std),
            "auroc": auroc(scores, splits.test_is_anomaly)}


def search_mse(model: nn.Module, search: Split) -> float:
    """Mean normalised MSE on ``search`` (what the ES minimises)."""
    return float(per_image_mse(reconstruct(model, search.x), search.x).mean())


def anomaly_scores(model: nn.Module, split: Split) -> torch.Tensor:
    """Per-image anomaly score (N,): the normalised reconstruction MSE."""
    return per_image_mse(reconstruct(model, split.x), split.x)


# ----------------------------------------------------------------------------- training
def train_autoencoder(model: nn.Module, train: Split, epochs: int = 4, batch_size: int = 128, lr: float = 3e-3,
                      seed: int = 0, device="cpu", progress: bool = True) -> list[dict]:
    """Train ``model`` in place to reconstruct ``train.x`` (MSE, :func:`qevo_lite.train.train_loop`,
    weight decay 1e-4).

    Returns one dict per epoch: ``loss`` (mean training MSE, normalised scale) and ``seconds``."""
    return train_loop(model, train, lambda out, x, y: F.mse_loss(out, x), epochs, batch_size, lr,
                      weight_decay=1e-4, seed=seed, device=device, progress=progress)


def train_model(arch: str, dataset: str, seed: int = 0, epochs: int | None = None, device=None,
                progress: bool = True, normal_classes=DEFAULT_NORMAL_CLASSES) -> tuple[nn.Module, dict]:
    """Train the autoencoder on the normal-class training images of ``dataset`` (split ``seed``).

    Returns ``(model in eval mode on the CPU, manifest fields)``: epochs, lr, normal_classes,
    in_channels, image_size, latent_dim, train_images and the FP32 held-out numbers
    ``fp32_test_mse`` (normalised), ``fp32_test_psnr`` (dB) and ``fp32_auroc`` on the whole test split.
    """
    if arch != ARCH:
        raise ValueError(f"qevo_lite.autoencoder trains {ARCH!r}, not {arch!r}.")
    recipe = dict(RECIPES.get(dataset, DEFAULT_RECIPE))
    if epochs is not None:
        recipe["epochs"] = epochs
    splits = ae_splits(dataset, seed=seed, normal_classes=normal_classes)
    entry = {"in_channels": splits.in_channels, "image_size": splits.train.x.shape[-1], "latent_dim": LATENT_DIM}
    torch.manual_seed(seed)
    model = build_model(arch, entry)
    train_autoencoder(model, splits.train, epochs=recipe["epochs"], lr=recipe["lr"], seed=seed,
                      device=device or default_device(), progress=progress)
    model = model.cpu().eval()
    m = ae_metrics(model, splits)
    return model, {**entry, "epochs": recipe["epochs"], "lr": recipe["lr"],
                   "normal_classes": list(splits.normal_classes), "train_images": len(splits.train),
                   "fp32_test_mse": round(m["mse"], 5), "fp32_test_psnr": round(m["psnr"], 3),
                   "fp32_auroc": round(m["auroc"], 4)}


# ----------------------------------------------------------------------------- rounding baseline
def best_rtn_mse(fmodel: nn.Module, search: Split, bits: int, granularity: str = "per_channel",
                 rules=SCALE_RULES) -> dict:
    """Nearest rounding with the scale rule of lowest *search MSE* (:func:`qevo_lite.baseline.best_rtn`
    scored by :func:`search_mse`). Returns ``{"state", "rule", "search_mse", "scores": {rule: search MSE}}``."""
    res = best_rtn(fmodel, search, bits, granularity, rules=rules, score=search_mse)
    scores = {rule: v["loss"] for rule, v in res.scores.items()}
    return {"state": res.state, "rule": res.config.scale_rule, "search_mse": scores[res.config.scale_rule],
            "scores": scores}


def mse_sensitivity(fmodel: nn.Module, state, search: Split) -> dict:
    """``{layer: search MSE with only that layer quantized - FP32 search MSE}`` (normalised), most
    sensitive first (:func:`qevo_lite.sensitivity.layer_sensitivity` scored by :func:`search_mse`)."""
    return layer_sensitivity(fmodel, state, search, score=search_mse)


# ----------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class AEProfile(ex.Overridable):
    """Sizes and budgets of the autoencoder experiment (see :data:`AE_PROFILES`).

    Fields as in :class:`qevo_lite.experiments.Profile`; here ``search_size`` counts normal-class
    images, ``test_size`` the first images of the official test split (every class), and ``min_drop``
    is *relative*: the ES runs where RTN's search MSE is at least ``(1 + min_drop)`` times FP32's.
    ``normal_classes`` must match the checkpoint's.
    """

    what = "autoencoder profile"

    name: str = "fast"
    dataset: str = "fashion_mnist"
    arch: str = ARCH
    normal_classes: tuple = DEFAULT_NORMAL_CLASSES
    bits: tuple = (2, 3, 4, 8)
    seeds: tuple = (0, 1, 2)
    search_size: int = 1024
    test_size: int | None = 2000
    local_samples: int = 128
    local_evaluations: int = 500
    local_moves: int | None = 4
    budget: int = 96
    lam: int = 8
    p: float = 0.002
    report_every: int = 4
    min_drop: float = 0.02
    granularity: str = "per_channel"
    split_seed: int = 0
    train_epochs: int | None = None
    es_bits: tuple | None = None   # bit widths where the ES may run (None: every one where RTN hurts)



AE_PROFILES = {
    # fast: the ES at 3 and 4 bits (measured on the committed checkpoint: at 2 bits rounding destroys the
    # model, MSE 16x FP32's and AUROC below chance, so there is no detector left to preserve; at 3 bits
    # RTN doubles the MSE and costs 0.09 AUROC; at 4 bits it costs 17% MSE). full: wherever RTN hurts.
    "fast": AEProfile("fast", es_bits=(3, 4)),
    "full": AEProfile("full", search_size=2048, test_size=None, seeds=(0, 1, 2, 3, 4), local_samples=512,
                      local_evaluations=1000, budget=2000, report_every=25),
}


def get_ae_profile(name: str | None = None, **overrides) -> AEProfile:
    """The autoencoder profile ``name`` (default: ``$QEVO_PROFILE`` or ``fast``) with ``overrides``."""
    name = name or os.environ.get("QEVO_PROFILE", "fast")
    if name not in AE_PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(AE_PROFILES)}.")
    return AE_PROFILES[name].with_overrides(**overrides)


# ----------------------------------------------------------------------------- shared state
class AEContext:
    """What the cells of one profile share (computed once, cached): splits, the BN-folded model,
    FP32 numbers, RTN baselines, layer sensitivities.

    Args: as :class:`qevo_lite.experiments.Context`.
    """

    def __init__(self, profile: AEProfile, device=None, checkpoint_dir=None, download: bool = False,
                 local_threads: int | None = 1):
        self.profile = profile
        self.device = torch.device(device) if device is not None else default_device()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.download = download
        self.local_threads = local_threads if self.device.type == "cpu" else None
        self._splits = self._model = self._fp32 = None
        self._rtn: dict = {}
        self._sensitivity: dict = {}

    @property
    def splits(self) -> AESplits:
        if self._splits is None:
            p = self.profile
            self._splits = ae_splits(p.dataset, seed=p.split_seed, normal_classes=p.normal_classes,
                                     search_size=p.search_size, test_size=p.test_size, download=self.download)
        return self._splits

    @property
    def search(self) -> Split:
        return self.splits.search

    def model(self):
        """``(BN-folded float model on the device, manifest entry)``; trains a missing checkpoint."""
        if self._model is None:
            from .checkpoints import load_pretrained, train_checkpoint
            p = self.profile
            try:
                model, entry = load_pretrained(p.arch, p.dataset, directory=self.checkpoint_dir,
                                               train_if_missing=False)
            except (FileNotFoundError, ValueError) as exc:
                print(f"{exc} Training it now.")
                model, entry = train_checkpoint(p.arch, p.dataset, seed=p.split_seed, epochs=p.train_epochs,
                                                directory=self.checkpoint_dir, progress=False)
            if entry.get("split_seed", p.split_seed) != p.split_seed:
                raise ValueError(f"{p.arch} was trained against split seed {entry['split_seed']}, the profile uses "
                                 f"{p.split_seed}: its search split could contain training images.")
            if tuple(entry.get("normal_classes", DEFAULT_NORMAL_CLASSES)) != tuple(p.normal_classes):
                raise ValueError(f"{p.arch} was trained on normal classes {entry['normal_classes']}, the profile "
                                 f"uses {list(p.normal_classes)}; retrain it or change the profile.")
            self._model = (fold_batchnorm(model).to(self.device).eval(), entry)
        return self._model

    def fp32(self) -> dict:
        """FP32 ``{"search_mse", "test": {mse, psnr, auroc}}``."""
        if self._fp32 is None:
            fmodel, _ = self.model()
            self._fp32 = {"search_mse": search_mse(fmodel, self.search), "test": ae_metrics(fmodel, self.splits)}
        return self._fp32

    def rtn(self, bits: int, granularity: str | None = None) -> dict:
        """The RTN baseline (scale rule of lowest search MSE): :func:`best_rtn_mse`'s dict plus ``"test"``."""
        granularity = granularity or self.profile.granularity
        if (bits, granularity) not in self._rtn:
            fmodel, _ = self.model()
            res = best_rtn_mse(fmodel, self.search, bits, granularity)
            res["test"] = ae_metrics(res["state"].to_model(fmodel), self.splits)
            self._rtn[(bits, granularity)] = res
        return self._rtn[(bits, granularity)]

    def sensitivity(self, bits: int) -> dict:
        if bits not in self._sensitivity:
            fmodel, _ = self.model()
            self._sensitivity[bits] = mse_sensitivity(fmodel, self.rtn(bits)["state"], self.search)
        return self._sensitivity[bits]

    def settings(self) -> dict:
        """What a cell's numbers depend on (a finished cell is reused only when these match)."""
        p = asdict(self.profile)
        for k in ("name", "bits", "seeds", "train_epochs"):
            p.pop(k)
        return p


def cell_key(bits: int, seed: int) -> str:
    return f"{EXPERIMENT}/W{bits}/seed{seed}"


def _state_file(states_dir: Path, bits: int, seed: int) -> Path:
    return Path(states_dir) / f"{EXPERIMENT}-W{bits}-seed{seed}-codes.pt"


def load_es_state(ctx: AEContext, states_dir: Path, bits: int, seed: int):
    """The ES's :class:`~qevo_lite.quant.QuantState` of cell (bits, seed), saved by :func:`run_ae_cell`."""
    codes = torch.load(_state_file(states_dir, bits, seed), weights_only=True)
    return ctx.rtn(bits)["state"].with_codes(codes)


# ----------------------------------------------------------------------------- one cell
def run_ae_cell(ctx: AEContext, bits: int, seed: int, checkpoint_dir=None, states_dir=None,
                progress: bool = False) -> dict:
    """One (bits, seed) cell: FP32, RTN per channel and per tensor, then (where RTN raises the search MSE
    by at least ``min_drop``, relative, and ``bits`` is in the profile's ``es_bits``) the local + global
    ES on the search MSE. Returns a JSON-ready dict (MSE normalised, PSNR in dB, AUROC in [0, 1]).

    ``checkpoint_dir``: ES progress files (an interrupted cell resumes; removed when done).
    ``states_dir``: where the ES codes are saved (``load_es_state`` reads them for figures).
    """
    p = ctx.profile
    fmodel, entry = ctx.model()
    fp32, rtn, rtn_t = ctx.fp32(), ctx.rtn(bits), ctx.rtn(bits, "per_tensor")
    rtn_state = rtn["state"]
    out = {"experiment": EXPERIMENT, "arch": p.arch, "dataset": p.dataset, "bits": bits, "seed": seed,
           "settings": ctx.settings(), "normal_classes": list(ctx.splits.normal_classes),
           "search_images": len(ctx.search), "test_images": len(ctx.splits.test),
           "test_normal_images": len(ctx.splits.test_normal), "num_weights": rtn_state.num_weights,
           "fp32_search_mse": fp32["search_mse"]}
    for prefix, d in (("fp32", fp32["test"]), ("rtn", rtn["test"]), ("rtn_per_tensor", rtn_t["test"])):
        out.update({f"{prefix}_test_mse": d["mse"], f"{prefix}_test_psnr": d["psnr"], f"{prefix}_auroc": d["auroc"]})
    out.update(rtn_rule=rtn["rule"], rtn_search_mse=rtn["search_mse"], rtn_per_tensor_rule=rtn_t["rule"],
               rtn_per_tensor_search_mse=rtn_t["search_mse"])
    rise = rtn["search_mse"] / fp32["search_mse"] - 1
    if rise < p.min_drop or (p.es_bits is not None and bits not in p.es_bits):
        reason = (f"RTN raises the search MSE by only {100 * rise:.1f}% (< {100 * p.min_drop:.0f}%)"
                  if rise < p.min_drop else f"the profile runs the ES only at {list(p.es_bits)} bits")
        out.update(es_run=False, es_skipped_reason=reason)
        return out

    ck_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stem = f"{EXPERIMENT}-W{bits}-seed{seed}"
    ck_local = ck_dir / f"{stem}-local.pt" if ck_dir else None
    ck_global = ck_dir / f"{stem}-global.pt" if ck_dir else None
    local_codes, local_log, local_seconds = ex.local_stage(
        fmodel, rtn_state, ctx.search, evaluations=p.local_evaluations, lam=p.lam, p=p.p,
        local_moves=p.local_moves, samples=p.local_samples, seed=seed, checkpoint=ck_local,
        threads=ctx.local_threads)
    local_evals = sum(e["evaluations"] for e in local_log)
    splits = ctx.splits
    result, start_eval, setup_seconds = ex.global_stage(
        fmodel, rtn_state, ctx.search, local_codes, budget=p.budget, lam=p.lam, p=p.p, seed=seed, loss="mse",
        metric=None, report=lambda m: ae_metrics(m, splits), report_every=p.report_every, checkpoint=ck_global,
        progress=progress)
    es_state = result.state(rtn_state)
    es_test = result.reports[-1]
    gap = rtn["test"]["mse"] - fp32["test"]["mse"]
    out.update(
        es_run=True,
        local_search_mse=start_eval.fitness, local_test_mse=result.reports[0]["mse"],
        local_test_psnr=result.reports[0]["psnr"], local_auroc=result.reports[0]["auroc"],
        local_evaluations=local_evals, local_seconds=local_seconds,
        local_log=[{k: e[k] for k in ("layer", "before", "after", "evaluations")} for e in local_log],
        es_search_mse=search_mse(es_state.to_model(fmodel), ctx.search),
        es_test_mse=es_test["mse"], es_test_psnr=es_test["psnr"], es_auroc=es_test["auroc"],
        mse_reduction=rtn["test"]["mse"] - es_test["mse"], psnr_gain=es_test["psnr"] - rtn["test"]["psnr"],
        auroc_change=es_test["auroc"] - rtn["test"]["auroc"],
        search_mse_reduction=rtn["search_mse"] - result.best_eval.fitness,
        gap_recovered=(rtn["test"]["mse"] - es_test["mse"]) / gap if gap > 0 else None,
        global_evaluations=result.evaluations, evaluations=local_evals + result.evaluations,
        global_seconds=result.seconds + setup_seconds,
        wall_seconds=local_seconds + result.seconds + setup_seconds, final_p=result.p,
        history=[{"evaluations": h["evaluations"], "best": h["best"], "mean": h["mean"]} for h in result.history],
        reports=[{k: r[k] for k in ("evaluations", "generation", "mse", "psnr", "auroc")} for r in result.reports],
        moved=ex.moved_analysis(rtn_state, es_state, ctx.sensitivity(bits)),
    )
    if states_dir is not None:
        ex._atomic_torch_save(es_state.codes(), _state_file(states_dir, bits, seed))
    for f in (ck_local, ck_global):
        if f is not None and f.exists():
            f.unlink()
    return out


# ----------------------------------------------------------------------------- summaries
SUMMARY_KEYS = ("es_search_mse", "es_test_mse", "es_test_psnr", "es_auroc", "mse_reduction", "psnr_gain",
                "auroc_change", "local_test_mse", "local_auroc", "evaluations", "local_evaluations",
                "global_evaluations", "wall_seconds")


def summarize_ae(cells: dict) -> list[dict]:
    """One row per bit width: FP32 and RTN numbers, and seed mean / sample std (``<key>_std``) of the ES's."""
    groups: dict = {}
    for c in cells.values():
        groups.setdefault(c["bits"], []).append(c)
    rows = []
    for bits, cs in sorted(groups.items()):
        cs = sorted(cs, key=lambda c: c["seed"])
        c0 = cs[0]
        row = {k: c0[k] for k in ("experiment", "arch", "dataset", "bits", "fp32_search_mse", "fp32_test_mse",
                                  "fp32_test_psnr", "fp32_auroc", "rtn_rule", "rtn_search_mse", "rtn_test_mse",
                                  "rtn_test_psnr", "rtn_auroc", "rtn_per_tensor_rule", "rtn_per_tensor_test_mse",
                                  "rtn_per_tensor_test_psnr", "rtn_per_tensor_auroc")}
        row["seeds"] = [c["seed"] for c in cs]
        row["es_run"] = all(c["es_run"] for c in cs)
        if row["es_run"]:
            for k in SUMMARY_KEYS:
                row[k], row[k + "_std"] = ex.mean_std(c[k] for c in cs)
            row["moved_share"], row["moved_share_std"] = ex.mean_std(c["moved"]["share"] for c in cs)
            gaps = [c["gap_recovered"] for c in cs if c["gap_recovered"] is not None]
            row["gap_recovered"], row["gap_recovered_std"] = ex.mean_std(gaps) if gaps else (None, None)
            row["es_below_rtn_every_seed"] = all(c["es_test_mse"] < c["rtn_test_mse"] for c in cs)
        else:
            row["es_skipped_reason"] = c0.get("es_skipped_reason")
        rows.append(row)
    return rows


def ae_checks(rows: list[dict], rise: float = 0.10) -> dict:
    """The claims: at the lowest bit width where RTN raises the held-out MSE by at least ``rise``
    (relative) and the ES ran, does the ES lower the held-out MSE in every seed, how much of the
    RTN->FP32 MSE gap does it recover, and does the AUROC stay at RTN's or above (seed mean)?"""
    lossy = [r for r in rows if r["rtn_test_mse"] >= (1 + rise) * r["fp32_test_mse"] and r["es_run"]]
    low = min(lossy, key=lambda r: r["bits"]) if lossy else None
    return {"target_bits": low["bits"] if low else None,
            "rtn_mse_rise": low["rtn_test_mse"] / low["fp32_test_mse"] - 1 if low else None,
            "gap_recovered": low["gap_recovered"] if low else None,
            "es_below_rtn_every_seed": all(r["es_below_rtn_every_seed"] for r in rows if r["es_run"]),
            "auroc_not_below_rtn": bool(low and low["es_auroc"] >= low["rtn_auroc"])}


def _pm(x, std=None, fmt="{:.4f}") -> str:
    if x is None:
        return "-"
    return fmt.format(x) + ("" if std is None else " ± " + fmt.format(std))


def ae_markdown_table(rows: list[dict], timing: bool = True) -> str:
    """The held-out table: FP32 / RTN per channel / ES, MSE (normalised), PSNR (dB), AUROC; ES as
    mean ± sample std over seeds."""
    head = ["bits", "method", "test MSE", "test PSNR (dB)", "AUROC", "search MSE", "gap recovered",
            "evaluations (local + global)"] + (["wall time (s)"] if timing else []) + ["weights moved", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    r0 = rows[0]
    lines.append("| " + " | ".join(["32 (float)", "FP32", _pm(r0["fp32_test_mse"]), _pm(r0["fp32_test_psnr"],
                                     fmt="{:.2f}"), _pm(r0["fp32_auroc"], fmt="{:.3f}"), _pm(r0["fp32_search_mse"]),
                                     "-", "-"] + (["-"] if timing else []) + ["-", "-"]) + " |")
    for r in rows:
        lines.append("| " + " | ".join([f"W{r['bits']}", f"RTN per-channel ({r['rtn_rule']})", _pm(r["rtn_test_mse"]),
                                         _pm(r["rtn_test_psnr"], fmt="{:.2f}"), _pm(r["rtn_auroc"], fmt="{:.3f}"),
                                         _pm(r["rtn_search_mse"]), "-", "-"] + (["-"] if timing else [])
                                        + ["-", "-"]) + " |")
        if r["es_run"]:
            cells = [f"W{r['bits']}", "ES (local + global)", _pm(r["es_test_mse"], r["es_test_mse_std"]),
                     _pm(r["es_test_psnr"], r["es_test_psnr_std"], "{:.2f}"),
                     _pm(r["es_auroc"], r["es_auroc_std"], "{:.3f}"), _pm(r["es_search_mse"], r["es_search_mse_std"]),
                     "-" if r["gap_recovered"] is None else f"{100 * r['gap_recovered']:.0f}%",
                     f"{r['local_evaluations']:.0f} + {r['global_evaluations']:.0f}"]
            cells += [f"{r['wall_seconds']:.0f}"] if timing else []
            cells += [f"{100 * r['moved_share']:.2f}%", ",".join(str(s) for s in r["seeds"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ae_results_markdown(results: dict) -> str:
    """The ``results.md`` section: ``## Autoencoder`` heading, how the numbers were made, the table,
    the checks and the figures (Markdown image links relative to the output folder)."""
    p, c = results["profile"], results["checks"]
    lines = [f"## Autoencoder (profile `{p['name']}`)", "",
             f"A convolutional autoencoder ({results.get('num_weights', '?')} weights) on `{p['dataset']}`, trained "
             f"only on the normal classes {p['normal_classes']}; anomaly score = per-image reconstruction MSE. "
             f"Search split: {p['search_size']} normal-class training images never used in pretraining (the ES "
             f"fitness set). Held-out: the first {results.get('test_images', '?')} official test images "
             f"(MSE and PSNR on their {results.get('test_normal_images', '?')} normal-class images; AUROC on all, "
             "anomalies = the other classes). MSE is per pixel on the normalised scale the model reconstructs; "
             "PSNR (dB) on the [0, 1] pixel scale; AUROC by scikit-learn. RTN = nearest rounding per channel "
             "with the scale rule of lowest search MSE. ES = local layer-wise ES "
             f"({p['local_evaluations']} evaluations per layer on {p['local_samples']} images) then global "
             f"(1+{p['lam']}) ES ({p['budget']} evaluations on the search MSE, early rejection), run where RTN "
             f"raises the search MSE by at least {100 * p['min_drop']:.0f}%"
             + (f" (this profile: at {p['es_bits']} bits)" if p.get("es_bits") else "")
             + "; mean ± sample std over seeds. Gap recovered = (RTN MSE - ES MSE) / (RTN MSE - FP32 MSE), "
             "held-out.", "", ae_markdown_table(results["summary"]), ""]
    if c["target_bits"] is None:
        lines.append("- RTN never raises the held-out MSE by 10% at the bit widths where the ES ran.")
    else:
        lines.append(f"- Lowest bit width where RTN raises the held-out MSE by >= 10%: W{c['target_bits']} "
                     f"(+{100 * c['rtn_mse_rise']:.0f}%); the ES recovers {100 * c['gap_recovered']:.0f}% of the "
                     f"RTN->FP32 MSE gap; ES held-out MSE below RTN's in every seed at every ES bit width: "
                     f"{'yes' if c['es_below_rtn_every_seed'] else 'no'}; ES AUROC (seed mean) at or above "
                     f"RTN's there: {'yes' if c['auroc_not_below_rtn'] else 'no'}.")
    lines.append("")
    for f in results.get("figures", []):
        lines += [f"![{f.rsplit('.', 1)[0].replace('_', ' ')}]({f})", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
def _subplots(nrows=1, ncols=1, figsize=(6.4, 4.0)):
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False)


def plot_metrics_vs_bits(rows: list[dict], path=None):
    """Left: held-out MSE (normalised, log scale) against bit width; right: AUROC. FP32, RTN per tensor,
    RTN per channel, ES (mean ± std over seeds)."""
    fig, axes = _subplots(1, 2, figsize=(11, 3.8))
    rs = sorted(rows, key=lambda r: r["bits"])
    bits = [r["bits"] for r in rs]
    es = [r for r in rs if r["es_run"]]
    for ax, key, fpkey, label in ((axes[0, 0], "test_mse", "fp32_test_mse", "held-out MSE (normalised, log scale)"),
                                  (axes[0, 1], "auroc", "fp32_auroc", "AUROC (normal vs unseen classes)")):
        ax.axhline(rs[0][fpkey], color="black", ls="--", lw=1.2, label=f"FP32 ({rs[0][fpkey]:.3f})")
        ax.plot(bits, [r[f"rtn_per_tensor_{key}"] for r in rs], "s:", color="tab:gray", label="RTN per-tensor")
        ax.plot(bits, [r[f"rtn_{key}"] for r in rs], "o-", color="tab:blue", label="RTN per-channel")
        if es:
            ax.errorbar([r["bits"] for r in es], [r[f"es_{key}"] for r in es], yerr=[r[f"es_{key}_std"] for r in es],
                        fmt="D-", color="tab:red", capsize=4, label=f"ES (mean ± std, {len(es[0]['seeds'])} seeds)")
        ax.set_xticks(bits)
        ax.set_xlabel("weight bit width (bits)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("reconstruction error vs bit width")
    axes[0, 1].set_title("anomaly detection vs bit width")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_reconstructions(images: torch.Tensor, models: dict, splits: AESplits, labels=None, path=None):
    """A grid: row 1 the input images, then for each ``{name: model}`` its reconstructions and, below,
    the absolute error map ``|recon - x|`` on the [0, 1] pixel scale (same colour scale everywhere),
    with each image's MSE (normalised) in the title. ``images``: (N, 1, H, W) normalised."""
    n, names = len(images), list(models)
    fig, axes = _subplots(1 + 2 * len(names), n, figsize=(1.35 * n + 0.6, 1.45 * (1 + 2 * len(names))))
    std, mean = splits.pixel_std.reshape(1, -1, 1, 1), splits.pixel_mean.reshape(1, -1, 1, 1)
    pix = lambda t: (t * std + mean)[:, 0]  # noqa: E731
    x = pix(images)
    for j in range(n):
        axes[0, j].imshow(x[j].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(labels[j] if labels is not None else "input", fontsize=7)
    for i, name in enumerate(names):
        recon = reconstruct(models[name], images)
        mse = per_image_mse(recon, images)
        r = pix(recon)
        for j in range(n):
            axes[1 + 2 * i, j].imshow(r[j].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[1 + 2 * i, j].set_title(f"{name} {mse[j]:.3f}", fontsize=7)
            im = axes[2 + 2 * i, j].imshow((r[j] - x[j]).abs().numpy(), cmap="magma", vmin=0, vmax=0.5)
            axes[2 + 2 * i, j].set_title(f"|{name} error|", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, -1], shrink=0.5, label="|error| (pixel scale 0-1)")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_roc(scores: dict, is_anomaly: torch.Tensor, path=None):
    """Left: ROC curves (sklearn's ``roc_curve``) of each ``{name: per-image scores (N,)}``; right:
    histograms of the anomaly score (log MSE) of normal and anomalous test images for each name."""
    from sklearn.metrics import roc_curve
    fig, axes = _subplots(1, 2, figsize=(11, 3.8))
    a1, a2 = axes[0]
    anomalous = torch.as_tensor(is_anomaly).bool()
    y = anomalous.int().numpy()
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, torch.as_tensor(s).numpy())
        a1.plot(fpr, tpr, color=f"C{i}", label=f"{name} (AUROC {auroc(s, is_anomaly):.3f})")
        logs = torch.as_tensor(s).log10()
        for mask, ls, kind in ((~anomalous, "-", "normal"), (anomalous, ":", "anomaly")):
            a2.hist(logs[mask].numpy(), bins=50, histtype="step", density=True, color=f"C{i}", ls=ls,
                    label=f"{name} {kind}")
    a1.plot([0, 1], [0, 1], color="0.7", lw=1)
    a1.set_xlabel("false positive rate (normal flagged)")
    a1.set_ylabel("true positive rate (anomalies flagged)")
    a1.set_title("ROC: reconstruction error as anomaly score")
    a1.legend(fontsize=8)
    a2.set_xlabel("anomaly score: log10 per-image MSE (normalised)")
    a2.set_ylabel("density")
    a2.set_title("scores of normal (solid) and anomalous (dotted) test images")
    a2.legend(fontsize=7, ncol=2)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_ae_curves(cells: dict, bits: int, path=None):
    """Left: best search MSE over the global stage's evaluations, one line per seed (0 = after the local
    stage), RTN as a line. Right: held-out MSE of the best candidate at the reporting points."""
    cs = sorted([c for c in cells.values() if c["bits"] == bits and c["es_run"]], key=lambda c: c["seed"])
    if not cs:
        raise ValueError(f"No ES runs at {bits} bits.")
    fig, axes = _subplots(1, 2, figsize=(11, 3.8))
    a1, a2 = axes[0]
    for i, c in enumerate(cs):
        h = c["history"]
        a1.plot([0] + [x["evaluations"] for x in h], [c["local_search_mse"]] + [x["best"] for x in h],
                color=f"C{i}", label=f"seed {c['seed']}")
        a2.plot([r["evaluations"] for r in c["reports"]], [r["mse"] for r in c["reports"]], "o-", ms=3,
                color=f"C{i}", label=f"seed {c['seed']}")
    for ax, rtn, fp in ((a1, cs[0]["rtn_search_mse"], cs[0]["fp32_search_mse"]),
                        (a2, cs[0]["rtn_test_mse"], cs[0]["fp32_test_mse"])):
        ax.axhline(rtn, color="tab:blue", ls=":", label="RTN")
        ax.axhline(fp, color="black", ls="--", lw=1, label="FP32")
        ax.set_xlabel("global-stage fitness evaluations")
        ax.legend(fontsize=8)
    a1.set_ylabel("best search MSE (normalised)")
    a1.set_title(f"W{bits}: search fitness (0 = after the local stage)")
    a2.set_ylabel("held-out MSE (normalised)")
    a2.set_title("held-out MSE at the reporting points")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_ae_moved(cells: dict, bits: int, path=None):
    """:func:`qevo_lite.experiments.plot_moved` for the autoencoder cells (sensitivity in search MSE)."""
    fig = ex.plot_moved(cells, EXPERIMENT, bits)
    for ax in fig.axes:
        if ax.get_ylabel().startswith("sensitivity"):
            ax.set_ylabel("sensitivity: search-MSE increase")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def write_ae_figures(ctx: AEContext, results: dict, out: Path, states_dir: Path, n_images: int = 8) -> list[str]:
    """Write the figures into ``out`` and return their file names: metrics vs bits, and per ES bit width
    the search curves, moved weights, reconstructions (seed of the first ES run) and ROC curves."""
    import matplotlib.pyplot as plt
    names = ["autoencoder_metrics_vs_bits.png"]
    plt.close(plot_metrics_vs_bits(results["summary"], path=out / names[0]))
    fmodel, _ = ctx.model()
    splits = ctx.splits
    # the first n/2 normal and n/2 anomalous test images
    normal_idx = (~splits.test_is_anomaly).nonzero().squeeze(1)[: n_images // 2]
    anom_idx = splits.test_is_anomaly.nonzero().squeeze(1)[: n_images - len(normal_idx)]
    idx = torch.cat([normal_idx, anom_idx])
    labels = [("normal: " if i in normal_idx else "anomaly: ") + str(splits.classes[int(splits.test.y[i])])
              for i in idx]
    for r in results["summary"]:
        if not r["es_run"]:
            continue
        b, seed = r["bits"], r["seeds"][0]
        for kind, fn in (("curves", plot_ae_curves), ("moved", plot_ae_moved)):
            names.append(f"autoencoder_W{b}_{kind}.png")
            plt.close(fn(results["cells"], b, path=out / names[-1]))
        models = {"FP32": fmodel, "RTN": ctx.rtn(b)["state"].to_model(fmodel),
                  "ES": load_es_state(ctx, states_dir, b, seed).to_model(fmodel)}
        names.append(f"autoencoder_W{b}_reconstructions.png")
        plt.close(plot_reconstructions(splits.test.x[idx], models, splits, labels, path=out / names[-1]))
        names.append(f"autoencoder_W{b}_roc.png")
        plt.close(plot_roc({k: anomaly_scores(m, splits.test) for k, m in models.items()}, splits.test_is_anomaly,
                           path=out / names[-1]))
    return names


# ----------------------------------------------------------------------------- the grid
def run_ae_grid(ctx: AEContext, out=None, progress: bool = True) -> dict:
    """Every (bits, seed) cell of the profile, resumable through ``out/results.json`` (same settings:
    reused); ES progress in ``out/checkpoints``, ES codes in ``out/states``. Returns ``{"profile", "cells",
    "summary", "checks", ...}``."""
    p = ctx.profile
    out = Path(out) if out is not None else None
    header = {"version": 1, "experiment": EXPERIMENT, "profile": ex._jsonable(asdict(p))}
    ck = None if out is None else out / "checkpoints"
    states = None if out is None else out / "states"
    settings = ctx.settings()
    prev = ex.load_results(out).get("cells", {}) if out is not None else {}
    jobs = []
    for b in p.bits:
        for s in p.seeds:
            key, st = cell_key(b, s), settings
            if states is not None and prev.get(key, {}).get("es_run") and not _state_file(states, b, s).exists():
                st = {**settings, "rerun": "its ES codes are missing"}  # forces a rerun (figures need the codes)
            jobs.append((key, st, lambda b=b, s=s: run_ae_cell(ctx, b, s, checkpoint_dir=ck, states_dir=states)))
    t0 = time.perf_counter()
    selected, reused = ex.run_cells(jobs, None if out is None else out / ex.RESULTS_JSON, header, progress,
                                    desc="autoencoder")
    results = {**header, "cells": selected}
    results["summary"] = summarize_ae(selected)
    results["checks"] = ae_checks(results["summary"])
    first = next(iter(selected.values()))
    for k in ("num_weights", "test_images", "test_normal_images", "search_images"):
        results[k] = first[k]
    results["seconds_this_run"] = time.perf_counter() - t0
    results["cells_reused"] = reused
    return ex._jsonable(results)


def reproduce_task(profile: str | AEProfile = "fast", out="results/autoencoder", progress: bool = True, device=None,
                   download: bool = False, figures: bool = True, checkpoint_dir=None, **overrides) -> dict:
    """Run the autoencoder experiment headless: ``out/results.json`` (every number), ``out/results.md``
    (a ``## Autoencoder`` section: held-out table, how it was made, checks, figure links) and the figures.

    ``profile``: ``fast``, ``full`` or an :class:`AEProfile`. ``overrides``: profile fields (bits, seeds,
    budget, search_size, test_size, local_evaluations, min_drop, train_epochs, ...; None keeps the
    profile's; unknown names raise ValueError). Resumes from what ``out`` holds (cells with the same
    settings are reused). ``checkpoint_dir``: the pretrained-checkpoint registry (default: the package's)."""
    prof = profile if isinstance(profile, AEProfile) else get_ae_profile(profile)
    prof = prof.with_overrides(**overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = AEContext(prof, device=device, checkpoint_dir=checkpoint_dir, download=download)
    results = run_ae_grid(ctx, out, progress=progress)
    results["figures"] = write_ae_figures(ctx, results, out, out / "states") if figures else []
    ex._atomic_write_text(out / ex.RESULTS_JSON, json.dumps(results, indent=1))
    ex._atomic_write_text(out / ex.RESULTS_MD, ae_results_markdown(results))
    return results
