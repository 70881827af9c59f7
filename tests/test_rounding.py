"""The rounding peers (GPTQ, AdaRound): codes on the state's grid, a lower layer-output error than nearest
rounding on the data they fit, grouped convs, any module for AdaRound, and no worse a search loss than RTN."""
import pytest
import torch
from torch import nn

from qevo_lite import Split, evaluate, quantize_model
from qevo_lite.rounding.adaround import adaround, adaround_layer, rectified_sigmoid
from qevo_lite.rounding.gptq import gptq, gptq_codes, input_hessian
from qevo_lite.rounding.layers import grid_of


def correlated_inputs(n=512, k=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g)
    return torch.randn(n, k, generator=g) @ mix          # strongly correlated columns: where GPTQ pays off


def output_error(module, inputs, weight):
    with torch.no_grad():
        ref = module(inputs)
        old = module.weight.detach().clone()
        module.weight.copy_(weight)
        err = float((module(inputs) - ref).pow(2).mean())
        module.weight.copy_(old)
    return err


def one_layer_model(layer):
    return nn.Sequential(layer).eval()


def test_gptq_beats_nearest_rounding_on_the_layer_output_and_keeps_the_grid():
    torch.manual_seed(0)
    lin = nn.Linear(24, 16)
    x = correlated_inputs()
    model = one_layer_model(lin)
    rtn = quantize_model(model, bits=3)
    out = gptq(model, rtn, Split(x, torch.zeros(len(x))), samples=len(x))
    lq, lo = rtn.layers["0"], out.layers["0"]
    assert torch.equal(lo.scale, lq.scale) and torch.equal(lo.zero_point, lq.zero_point)
    assert lo.codes.dtype == torch.int16 and lo.codes.min() >= lq.qmin and lo.codes.max() <= lq.qmax
    assert (lo.codes != lq.codes).any()
    assert output_error(lin, x, lo.dequantize()) < 0.8 * output_error(lin, x, lq.dequantize())


def test_gptq_with_an_identity_hessian_is_nearest_rounding():
    w = torch.randn(6, 10)
    scale, zp = torch.full((6, 10), 0.3), torch.zeros(6, 10)
    codes = gptq_codes(w, scale, zp, -4, 3, torch.eye(10, dtype=torch.float64), damp=0.0)
    assert torch.equal(codes, torch.clamp(torch.round(w / 0.3), -4, 3).double())


def test_gptq_handles_grouped_convs_per_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = nn.functional.interpolate(torch.randn(64, 4, 4, 4), scale_factor=2, mode="bilinear")  # correlated pixels
    h = input_hessian(conv, x)
    assert h.shape == (2, 18, 18)
    model = one_layer_model(conv)
    rtn = quantize_model(model, bits=3)
    out = gptq(model, rtn, Split(x, torch.zeros(len(x))), samples=64)
    assert output_error(conv, x, out.layers["0"].dequantize()) < 0.8 * output_error(conv, x, rtn.layers["0"].dequantize())


def test_adaround_rounds_each_weight_down_or_up_and_beats_nearest_rounding():
    torch.manual_seed(0)
    lin = nn.Linear(24, 16)
    x = correlated_inputs()
    lq = quantize_model(one_layer_model(lin), bits=3).layers["0"]
    scale, zp = grid_of(lq)
    with torch.no_grad():
        y = lin(x)
    codes = adaround_layer(lin, lq.weight, scale, zp, lq.qmin, lq.qmax, x, y, steps=300,
                           generator=torch.Generator().manual_seed(0))
    floor = torch.floor(lq.weight / scale + zp)
    assert ((codes == floor) | (codes == floor + 1) | (codes == lq.qmin) | (codes == lq.qmax)).all()
    assert output_error(lin, x, scale * (codes - zp)) < output_error(lin, x, lq.dequantize())
    assert float(rectified_sigmoid(torch.tensor(-10.0))) == 0.0 and float(rectified_sigmoid(torch.tensor(10.0))) == 1.0


def test_adaround_works_on_any_module_with_a_weight():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, 3, padding=1)
    x = torch.randn(128, 3, 16)
    with torch.no_grad():
        y = conv(x)
    w = conv.weight.detach()
    scale = (w.abs().amax(dim=(1, 2), keepdim=True) / 3).expand_as(w)
    zp = torch.zeros_like(w)
    codes = adaround_layer(conv, w, scale, zp, -4, 3, x, y, steps=200)
    nearest = torch.clamp(torch.round(w / scale), -4, 3)
    assert output_error(conv, x, scale * codes) <= output_error(conv, x, scale * nearest)


@pytest.mark.parametrize("bits", [2, 3])
def test_peers_are_no_worse_than_rtn_on_the_search_loss(tiny_vgg, digits, bits):
    rtn = quantize_model(tiny_vgg, bits=bits)
    loss = lambda state: evaluate(state.to_model(tiny_vgg), digits.search)["loss"]  # noqa: E731
    assert loss(gptq(tiny_vgg, rtn, digits.search, samples=128)) <= loss(rtn)
    assert loss(adaround(tiny_vgg, rtn, digits.search, samples=128, steps=100)) <= loss(rtn)
