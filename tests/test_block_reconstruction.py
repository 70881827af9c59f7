"""Block reconstruction: where the simple rule cuts the package's models, blocks that chain back to the model,
blocks named by prefixes, Fisher weights, codes on the grid with a lower block-output error than nearest
rounding, and the layer-wise fallback for a model torch.fx cannot trace."""
import pytest
import torch
from torch import nn

from qevo_lite import Split, fold_batchnorm, quantize_model
from qevo_lite.core.models import build_model
from qevo_lite.rounding.adaround import adaround
from qevo_lite.rounding.block_reconstruction import block_reconstruction, fisher_weights, model_blocks
from qevo_lite.rounding.blocks import find_blocks, group_by_prefixes
from qevo_lite.rounding.layers import grid_of
from qevo_lite.tasks.autoencoder.model import build_model as build_autoencoder
from qevo_lite.tasks.detection.models import build_model as build_detector


def quantized_layers(fmodel):
    return [n for n, m in fmodel.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("make, expected", [
    (lambda: build_model("vgg_small", 1, 10),
     [("features.0.0", "features.1.0"), ("features.3.0", "features.4.0"), ("features.6.0", "features.7.0"),
      ("classifier",)]),
    (lambda: build_model("resnet_small", 1, 10),
     [("stem.0",), ("stages.0.0.conv1", "stages.0.0.conv2"),
      ("stages.1.0.conv1", "stages.1.0.conv2", "stages.1.0.shortcut.0"),
      ("stages.2.0.conv1", "stages.2.0.conv2", "stages.2.0.shortcut.0"), ("fc",)]),
    (lambda: build_detector("det_vgg_small"),
     [("backbone.0.0",), ("backbone.2.0", "backbone.3.0"), ("backbone.5.0", "backbone.6.0"),
      ("head.conv.0", "head.out")]),
    (build_autoencoder,
     [("encoder.0.0", "encoder.1.0", "encoder.2.0", "encoder.4"), ("decoder.0", "decoder.3.0", "decoder.5.0", "decoder.7")]),
])
def test_the_simple_rule_cuts_stages_residual_blocks_heads_and_halves(make, expected):
    fmodel = fold_batchnorm(make().eval())
    assert find_blocks(fmodel, quantized_layers(fmodel)) == expected


@pytest.mark.parametrize("arch", ["vgg_small", "resnet_small"])
def test_blocks_chained_are_the_model(arch):
    torch.manual_seed(0)
    fmodel = fold_batchnorm(build_model(arch, 1, 10).eval())
    blocks = model_blocks(fmodel, quantized_layers(fmodel))
    x = h = torch.randn(4, 1, 28, 28)
    for block in blocks:
        h = block.module(h)
    assert torch.allclose(h, fmodel(x), atol=1e-5)
    names = [b.name for b in blocks]
    assert len(set(names)) == len(names)             # a VGG stage is named by its layers, not "features" thrice
    assert "stages.1.0" in names or arch == "vgg_small"


def test_blocks_named_by_prefixes():
    layers = ["stem.0", "stages.0.0.conv1", "stages.0.0.conv2", "stages.1.0.conv1", "fc"]
    assert group_by_prefixes(layers, ["stages"]) == [("stem.0",), ("stages.0.0.conv1", "stages.0.0.conv2",
                                                                   "stages.1.0.conv1"), ("fc",)]
    with pytest.raises(ValueError, match="not consecutive"):
        group_by_prefixes(["a.0", "b.0", "a.1"], ["a"])
    fmodel = fold_batchnorm(build_model("resnet_small", 1, 10).eval())
    blocks = model_blocks(fmodel, quantized_layers(fmodel), prefixes=["stages", "fc"])
    assert [b.name for b in blocks] == ["stem.0", "stages", "fc"]


def test_fisher_weights_have_mean_one_and_follow_the_loss(tiny_vgg, digits):
    fmodel = fold_batchnorm(tiny_vgg)
    blocks = model_blocks(fmodel, quantized_layers(fmodel))
    x, y = digits.search.x[:64], digits.search.y[:64]
    weights = fisher_weights(blocks, x, y, lambda out, t: nn.functional.cross_entropy(out, t, reduction="none"))
    assert len(weights) == len(blocks)
    for w, block in zip(weights, blocks):
        assert w.shape[0] == 64 and torch.isclose(w.mean(), torch.tensor(1.0), atol=1e-4) and (w >= 0).all()
    # a loss that ignores the outputs weighs nothing, so the weights fall back to ones
    flat = fisher_weights(blocks, x, y, lambda out, t: out.sum(1) * 0)
    assert all(torch.equal(w, torch.ones_like(w)) for w in flat)


def block_output_error(fmodel, state, x):
    qmodel = state.to_model(fmodel)
    with torch.no_grad():
        return float((qmodel(x) - fmodel(x)).pow(2).mean())


@pytest.mark.parametrize("fisher", [True, False])
def test_block_reconstruction_keeps_the_grid_and_beats_nearest_rounding(tiny_vgg, digits, fisher):
    fmodel = fold_batchnorm(tiny_vgg)
    rtn = quantize_model(fmodel, bits=2)
    state, blocks = block_reconstruction(fmodel, rtn, digits.search, samples=256, steps=150, fisher=fisher)
    assert sorted(l for b in blocks for l in b) == sorted(rtn.layers) and len(blocks) < len(rtn.layers)
    for name, lq in rtn.layers.items():
        lo = state.layers[name]
        assert torch.equal(lo.scale, lq.scale) and lo.codes.dtype == torch.int16
        scale, zero_point = grid_of(lq)
        floor = torch.floor(lq.weight / scale + zero_point)
        assert ((lo.codes - floor).abs() <= 1).all() and lo.codes.min() >= lq.qmin and lo.codes.max() <= lq.qmax
    x = digits.search.x[:256]
    assert block_output_error(fmodel, state, x) < 0.7 * block_output_error(fmodel, rtn, x)


class Untraceable(nn.Module):
    """A forward with data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.sum() > 0:
            h = h * 1.0
        return self.b(h)


def test_an_untraceable_model_falls_back_to_layer_by_layer_with_a_warning():
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(128, 12)
    split = Split(x, torch.randint(0, 4, (128,)))
    rtn = quantize_model(model, bits=2)
    with pytest.warns(UserWarning, match="layer by layer"):
        state, blocks = block_reconstruction(model, rtn, split, samples=128, steps=50, lr=0.01)
    assert blocks == [("a",), ("b",)]
    same = adaround(model, rtn, split, samples=128, steps=50, lr=0.01, reduction="mean")
    assert all(torch.equal(state.layers[n].codes, same.layers[n].codes) for n in rtn.layers)
