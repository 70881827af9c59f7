"""The exact quadratic local fitness and the per-channel ES on it: the error change of any move set equals
the change measured by running the layer (every layer kind, grouped, transposed, any padding mode), an
accepted move keeps the bookkeeping exact, the ES never raises a layer's error, stays on the grid, and a
layer that is not linear in its weight is refused."""
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from qevo_lite import Split, quantize_model
from qevo_lite.es.channel_es import evolve_layer
from qevo_lite.es.stages import quadratic_stage
from qevo_lite.evaluators.quadratic import LayerQuadratic, NotQuadratic
from qevo_lite.quant.layout import from_rows

LAYERS = [
    (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (16, 4, 7, 7)),
    (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="reflect"), (16, 3, 9, 9)),
    (lambda: nn.Linear(10, 5), (16, 10)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (16, 4, 5, 5)),
    (lambda: nn.Conv1d(3, 4, 3, padding=2, dilation=2, padding_mode="circular"), (16, 3, 9)),
    (lambda: nn.Conv3d(2, 3, 2, bias=False), (8, 2, 4, 4, 4)),
    (lambda: nn.ConvTranspose1d(3, 2, 4, stride=2), (16, 3, 6)),
]
# one output channel (an autoencoder's last conv): per position and per element weights have the same size
ONE_CHANNEL = (lambda: nn.Conv2d(4, 1, 3, padding=1), (16, 4, 7, 7))


def layer_case(make, shape, bits=2, seed=0):
    torch.manual_seed(seed)
    layer = make()
    lq = quantize_model(nn.Sequential(layer), bits=bits).layers["0"]
    x = torch.randn(shape)
    with torch.no_grad():
        y = layer(x) + 0.05 * torch.randn_like(layer(x))
    return layer, lq, x, y


def squared_error(layer, lq, x, y, codes):
    bshape = (-1,) + (1,) * (codes.dim() - 1)
    w = lq.scale.reshape(bshape) * (codes.float() - lq.zero_point.reshape(bshape).float())
    with torch.no_grad():
        out = functional_call(layer, {"weight": from_rows(w, layer)}, (x,))
    return float((out.double() - y.double()).pow(2).sum())


def assert_changes_match(q, lq, error_of, candidates: int = 12):
    """``q``'s tracked error equals ``error_of(codes)`` (the layer run), and the predicted change of random
    candidates (3 moves in one row each) equals the change of ``error_of`` measured after applying them."""
    e0 = error_of(lq.codes)
    assert q.error == pytest.approx(e0, rel=1e-5)
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(lq.codes.shape[0], (candidates,), generator=g)
    cols = torch.stack([torch.randperm(q.k, generator=g)[:3] for _ in rows])
    moves = torch.randint(-1, 2, (candidates, 3), generator=g)
    delta = q.delta(rows, cols, moves)
    for n in range(candidates):
        codes = lq.codes.reshape(lq.codes.shape[0], -1).clone()
        codes[rows[n], cols[n]] += moves[n].to(codes.dtype)
        assert float(delta[n]) == pytest.approx(error_of(codes.reshape(lq.codes.shape)) - e0, rel=1e-5,
                                                abs=1e-6 * e0)


@pytest.mark.parametrize("make,shape", LAYERS)
def test_error_changes_equal_the_layer_run(make, shape):
    layer, lq, x, y = layer_case(make, shape)
    q = LayerQuadratic(layer, lq, x, y, chunk=5)                  # several chunks accumulate H and G
    assert_changes_match(q, lq, lambda codes: squared_error(layer, lq, x, y, codes))


@pytest.mark.parametrize("make,shape", LAYERS[:4])
def test_the_es_lowers_the_error_exactly_and_stays_on_the_grid(make, shape):
    layer, lq, x, y = layer_case(make, shape)
    q = LayerQuadratic(layer, lq, x, y)
    log = evolve_layer(q, generations=300, seed=0)
    codes = q.codes_like_layer()
    assert log["after"] < log["before"] and log["moves"] > 0
    assert codes.min() >= lq.qmin and codes.max() <= lq.qmax and codes.shape == lq.codes.shape
    # the tracked error (updated move by move) is the error of the final codes
    assert q.error == pytest.approx(squared_error(layer, lq, x, y, codes), rel=1e-6)
    fresh = LayerQuadratic(layer, lq, x, y, codes)                # and the tracked G is the true one
    assert torch.allclose(fresh.g, q.g, rtol=1e-6, atol=1e-8 * float(q.g.abs().max()))


def test_same_seed_same_codes():
    layer, lq, x, y = layer_case(*LAYERS[0])
    a, b = LayerQuadratic(layer, lq, x, y), LayerQuadratic(layer, lq, x, y)
    evolve_layer(a, generations=50, seed=3)
    evolve_layer(b, generations=50, seed=3)
    assert torch.equal(a.codes, b.codes)


class SquaredWeightLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.weight.abs(), self.bias)


def test_a_layer_not_linear_in_its_weight_is_refused_and_kept_by_the_stage():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), SquaredWeightLinear(8, 3)).eval()
    state = quantize_model(model, bits=2)
    x = torch.randn(64, 8)
    with pytest.raises(NotQuadratic):
        LayerQuadratic(model[2], state.layers["2"], x[:, :8], model[2](x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes, log, _ = quadratic_stage(model, state, Split(x, torch.zeros(64)), samples=64, generations=50)
    assert any("'2'" in str(w.message) for w in caught)
    assert torch.equal(codes["2"], state.layers["2"].codes) and [e["layer"] for e in log] == ["0"]


def test_the_stage_starts_from_given_codes_and_lowers_every_layer_error(tiny_vgg, digits):
    state = quantize_model(tiny_vgg, bits=2)
    start = {n: c.clone() for n, c in state.codes().items()}
    first = next(iter(start))
    start[first] = torch.clamp(start[first] + 1, state.layers[first].qmin, state.layers[first].qmax)
    codes, log, _ = quadratic_stage(tiny_vgg, state, digits.search, start, samples=64, generations=100)
    assert [e["layer"] for e in log] == list(state.layers)
    assert all(e["after"] <= e["before"] for e in log) and log[0]["moves"] > 0
    assert (codes[first] != state.layers[first].codes).sum() > 0


def weighted_error(layer, lq, x, y, codes, b):
    """``sum_c sum_p b_cp r_cp^2`` by running the layer (``b``: one weight per image and output position, or per
    output element)."""
    bshape = (-1,) + (1,) * (codes.dim() - 1)
    w = lq.scale.reshape(bshape) * (codes.float() - lq.zero_point.reshape(bshape).float())
    with torch.no_grad():
        r = functional_call(layer, {"weight": from_rows(w, layer)}, (x,)).double() - y.double()
    if b.shape != r.shape:
        b = b.unsqueeze(-1) if isinstance(layer, nn.Linear) else b.unsqueeze(1)
    b = b.double()
    return float((b * r.pow(2)).sum())


@pytest.mark.parametrize("per_element", [False, True], ids=["per-position", "per-element"])
@pytest.mark.parametrize("make,shape", [LAYERS[0], LAYERS[2], LAYERS[3], ONE_CHANNEL],
                         ids=["grouped-conv", "linear", "transposed-conv", "one-output-channel"])
def test_weighted_error_changes_equal_the_layer_run(make, shape, per_element):
    """With a weight per output position or per output element (the Fisher weighting; per element each channel
    has its own H), H, G and the error are the weighted ones: every candidate's predicted change equals the change
    of the weighted error measured by running the layer."""
    layer, lq, x, y = layer_case(make, shape)
    with torch.no_grad():
        out = layer(x)
    shape_b = out.shape if per_element else (out.shape[:1] + out.shape[2:] if out.dim() > 2 else out.shape[:1])
    b = torch.rand(shape_b, generator=torch.Generator().manual_seed(5)) * 3
    q = LayerQuadratic(layer, lq, x, y, chunk=5, weights=b)
    assert q.h.shape[0] == (lq.codes.shape[0] if per_element else getattr(layer, "groups", 1))   # equal at C_out 1
    assert q.error != pytest.approx(squared_error(layer, lq, x, y, lq.codes), rel=1e-3)   # the weights count
    assert_changes_match(q, lq, lambda codes: weighted_error(layer, lq, x, y, codes, b))
    with pytest.raises(ValueError, match="one weight per image and output position"):
        LayerQuadratic(layer, lq, x, y, weights=torch.ones(len(x), 2))


def test_output_weights_are_the_squared_loss_gradient_before_the_relu():
    """``output_weights``: the squared gradient of the per-image loss with respect to the layer's output (taken
    before an in-place ReLU, so a dead position weighs 0), averaged over channels (or per element for a layer in
    ``per_element``), scaled to mean 1."""
    from qevo_lite.evaluators.base import cross_entropy_loss
    from qevo_lite.evaluators.output_weights import output_weights
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 1), nn.ReLU(inplace=True), nn.Linear(1, 3)).eval()
    x, y = torch.randn(40, 6), torch.randint(3, (40,))
    b = output_weights(model, ["0", "2"], x, y, cross_entropy_loss, per_element=["2"], batch_size=16)
    pre = model[0](x).detach().requires_grad_(True)
    g, = torch.autograd.grad(cross_entropy_loss(model[2](torch.relu(pre)), y).sum(), pre)
    expected = g.pow(2).mean(1)
    assert b["0"].shape == (40,) and torch.allclose(b["0"], expected / expected.mean(), rtol=1e-5)
    assert torch.all(b["0"][pre.detach()[:, 0] < 0] == 0) and b["0"].mean() == pytest.approx(1.0)
    assert all(p.grad is None for p in model.parameters())          # the caller's model is untouched
    out = model[2](torch.relu(model[0](x))).detach().requires_grad_(True)
    g2, = torch.autograd.grad(cross_entropy_loss(out, y).sum(), out)
    assert b["2"].shape == (40, 3) and torch.allclose(b["2"], g2.pow(2) / g2.pow(2).mean(), rtol=1e-5)


def test_the_fisher_weighted_stage_lowers_the_weighted_error_and_chooses_other_codes(tiny_vgg, digits):
    state = quantize_model(tiny_vgg, bits=2)
    plain, _, _ = quadratic_stage(tiny_vgg, state, digits.search, samples=64, generations=100)
    fisher, log, seconds = quadratic_stage(tiny_vgg, state, digits.search, samples=64, generations=100,
                                           weighting="fisher", loss="cross_entropy")
    assert all(e["after"] <= e["before"] for e in log) and seconds > 0
    assert any(not torch.equal(plain[n], fisher[n]) for n in plain)
    channels, log, _ = quadratic_stage(tiny_vgg, state, digits.search, samples=64, generations=100,
                                       weighting="fisher_channels", loss="cross_entropy")
    assert all(e["after"] <= e["before"] for e in log)
    assert any(not torch.equal(channels[n], fisher[n]) for n in plain)
    with pytest.raises(ValueError, match="Unknown weighting"):
        quadratic_stage(tiny_vgg, state, digits.search, samples=64, generations=1, weighting="hessian")
