"""Every layer type the quantizer handles (Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d), and nothing left
in float silently: other weighted modules are named in one warning."""
import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qevo_lite import FullEvaluator, IncrementalEvaluator, load_state, quantize_model, save_state
from qevo_lite.core.data import Split
from qevo_lite.quant.flips import _write_codes, apply_flips, random_boundary_flips
from qevo_lite.quant.fold import QUANTIZABLE as FOLD_QUANTIZABLE, quantizable_layers
from qevo_lite.quant.layout import QUANTIZABLE, from_rows, is_transposed, rows_shape, to_rows, weight_positions
from qevo_lite.quant.sensitivity import layer_sensitivity

KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class AllKinds(nn.Module):
    """Images (N, 2, 6, 6) through a Conv2d -> grouped ConvTranspose2d branch, a Conv1d -> grouped
    ConvTranspose1d -> MultiheadAttention -> LayerNorm branch on the flattened image, a Conv3d ->
    ConvTranspose3d branch on the image as a volume, a Bilinear and a Linear head."""

    def __init__(self):
        super().__init__()
        self.c2 = nn.Conv2d(2, 4, 3, padding=1)
        self.t2 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)     # weight (4, 3, 3, 3)
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.t1 = nn.ConvTranspose1d(4, 6, 3, groups=2)                           # weight (4, 3, 3)
        self.c3 = nn.Conv3d(1, 3, (2, 3, 3))
        self.t3 = nn.ConvTranspose3d(3, 5, (1, 2, 2), stride=(1, 2, 2))          # weight (3, 5, 1, 2, 2)
        self.mha = nn.MultiheadAttention(6, 2, batch_first=True)
        self.norm = nn.LayerNorm(6)
        self.bil = nn.Bilinear(6, 6, 4)
        self.fc = nn.Linear(6 + 6 + 5 + 4, 10)

    def forward(self, x):
        a = self.t2(torch.relu(self.c2(x))).mean((2, 3))                         # (N, 6)
        s = self.t1(torch.relu(self.c1(x.flatten(2)))).transpose(1, 2)          # (N, 38, 6)
        b = self.norm(self.mha(s, s, s, need_weights=False)[0]).mean(1)          # (N, 6)
        c = self.t3(torch.relu(self.c3(x.unsqueeze(1)))).mean((2, 3, 4))         # (N, 5)
        return self.fc(torch.cat([a, b, c, self.bil(a, b)], 1))


def make_model(seed=0):
    torch.manual_seed(seed)
    return AllKinds().eval().requires_grad_(False)


def quantize(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_model(model, **kw)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return Split(torch.randn(96, 2, 6, 6, generator=g), torch.randint(0, 10, (96,), generator=g))


def direct_loss(model, split):
    with torch.no_grad():
        return F.cross_entropy(model(split.x), split.y).item()


# ------------------------------------------------------------------ layout
@pytest.mark.parametrize("cls,k", [(nn.ConvTranspose1d, (3,)), (nn.ConvTranspose2d, (3, 2)),
                                   (nn.ConvTranspose3d, (2, 1, 3))])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_transposed_rows_layout_round_trips_and_is_output_channel_first(cls, k, groups):
    torch.manual_seed(0)
    m = cls(2 * groups, 3 * groups, k, groups=groups)   # C_in/g = 2 != C_out/g = 3
    w = m.weight.detach().clone()
    rows = to_rows(w, m)
    assert is_transposed(m) and rows.shape == (3 * groups, 2) + k == rows_shape(w.shape, m)
    assert torch.equal(from_rows(rows, m), w)
    for gi in range(groups):            # the definition: group gi's output channel j
        for j in range(3):
            assert torch.equal(rows[gi * 3 + j], w[gi * 2:(gi + 1) * 2, j])
    flat = torch.randperm(rows.numel())
    assert torch.equal(w[weight_positions(flat, w.shape, m)], rows.reshape(-1)[flat])
    # row c really is output channel c: zero it and only that channel loses its weights (bias left)
    x = torch.randn(2, 2 * groups, *([4] * len(k)))
    with torch.no_grad():
        for c in (0, 3 * groups - 1):
            z = rows.clone()
            z[c] = 0
            m.weight.copy_(from_rows(z, m))
            out = m(x)
            assert torch.allclose(out[:, c], m.bias[c].expand_as(out[:, c]))
            assert not torch.allclose(out[:, c - 1], m.bias[c - 1].expand_as(out[:, c - 1]))
            m.weight.copy_(w)
    # works on tensors of other sizes too (depends on type and groups only)
    other = torch.randn(4 * groups, 5, *k)
    assert torch.equal(to_rows(from_rows(other, m), m), other)


def test_linear_and_convs_are_their_own_rows_layout():
    assert FOLD_QUANTIZABLE is QUANTIZABLE and set(QUANTIZABLE) == set(KINDS)
    for m in (nn.Linear(3, 2), nn.Conv1d(4, 2, 3, groups=2), nn.Conv2d(2, 4, 3), nn.Conv3d(1, 2, 2)):
        w = m.weight.detach()
        assert not is_transposed(m) and to_rows(w, m) is w and from_rows(w, m) is w


# ------------------------------------------------------------------ which layers, and the warning
def test_every_kind_is_quantized_and_the_others_are_named_in_one_warning(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = quantize_model(model, bits=4)
    kinds = {type(model.get_submodule(n)) for n in state.layers}
    assert set(KINDS) <= kinds
    assert {"c1", "c2", "c3", "t1", "t2", "t3", "fc", "mha.out_proj"} == set(state.layers)
    assert state.layers["t2"].codes.shape == (6, 2, 3, 3) and state.layers["t3"].codes.shape == (5, 3, 1, 2, 2)
    left = [w for w in caught if "Left in float" in str(w.message)]
    assert len(left) == 1 and len(caught) == 1
    assert set(re.findall(r"'([^']+)' \(", str(left[0].message))) == {"bil", "mha"}
    assert set(quantizable_layers(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.BatchNorm1d(2)))) == {"0"}


def test_no_warning_without_other_weighted_modules_and_error_without_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(nn.Sequential(nn.Conv1d(2, 3, 3), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(3, 2)), bits=4)
    with pytest.raises(ValueError, match=r"no layer to quantize .*'0' \(Embedding\)"):
        quantize_model(nn.Sequential(nn.Embedding(5, 3), nn.ReLU()), bits=4)


# ------------------------------------------------------------------ decoded weights
def test_decoded_weights_sit_on_the_grid_in_each_modules_layout(model):
    state = quantize(model, bits=4, scale_rule="maxabs_narrow")   # no clipping: within half a step
    q = state.to_model(model)
    for name, lq in state.layers.items():
        m, fm = q.get_submodule(name), model.get_submodule(name)
        assert torch.equal(m.weight, from_rows(lq.dequantize(), m)), name
        w, wf = m.weight.detach(), fm.weight.detach()
        # per output channel, checked without the layout helpers: dim 1 (per group) of a transposed conv
        g = getattr(m, "groups", 1)
        for c in range(len(lq.scale)):
            if is_transposed(m):
                c_out_g, c_in_g = w.shape[1], w.shape[0] // g
                sl = (slice(c // c_out_g * c_in_g, (c // c_out_g + 1) * c_in_g), c % c_out_g)
            else:
                sl = (c,)
            steps = w[sl] / lq.scale[c]
            assert torch.allclose(steps, steps.round(), atol=1e-4), (name, c)
            assert steps.round().min() >= lq.qmin and steps.round().max() <= lq.qmax
            assert (w[sl] - wf[sl]).abs().max() <= lq.scale[c] / 2 + 1e-6, (name, c)
            assert (wf[sl].abs().max() / lq.scale[c]).item() == pytest.approx(lq.qmax, rel=1e-5)  # its own range


def test_rtn_8_bits_keeps_the_output(model, data):
    state = quantize(model, bits=8)
    q = state.to_model(model)
    with torch.no_grad():
        out, ref = q(data.x), model(data.x)
    assert torch.allclose(out, ref, atol=0.01 * ref.abs().max().item())
    for name in state.layers:
        assert not torch.equal(q.get_submodule(name).weight, model.get_submodule(name).weight), name


def test_export_round_trip_keeps_codes_and_applies_in_module_layout(model, tmp_path):
    state = quantize(model, bits=3, scale_rule="mse")
    save_state(state, tmp_path / "m.qevo", model)
    loaded, biases = load_state(tmp_path / "m.qevo")
    for name, lq in state.layers.items():
        assert torch.equal(loaded.layers[name].codes, lq.codes), name
        assert torch.equal(biases[name], model.get_submodule(name).bias), name
    a, b = state.to_model(model), loaded.to_model(model)
    for name in state.layers:
        assert torch.equal(a.get_submodule(name).weight, b.get_submodule(name).weight), name


# ------------------------------------------------------------------ evaluators, sensitivity, flips
def moved(state, codes, name, share, seed):
    """``codes`` with about ``share`` of layer ``name``'s codes moved by one step (within the grid)."""
    lq = state.layers[name]
    g = torch.Generator().manual_seed(seed)
    c = codes[name]
    step = torch.where(torch.rand(c.shape, generator=g) < share, torch.randint(0, 2, c.shape, generator=g) * 2 - 1, 0)
    return {**codes, name: (c + step).clamp(lq.qmin, lq.qmax).to(torch.int16)}


def test_evaluators_give_the_loss_of_the_quantized_model(model, data):
    state = quantize(model, bits=3)
    full = FullEvaluator(model, state, data, chunk_size=32)
    inc = IncrementalEvaluator(model, state, data, chunk_size=32)
    exact = IncrementalEvaluator(model, state, data, chunk_size=32, sparse_update=False)
    assert inc.incremental and "fc" in inc._sparse_layers
    assert not {"t1", "t2", "t3", "c1", "c3", "mha.out_proj"} & set(inc._sparse_layers)
    # a change inside the MultiheadAttention (fx calls it as one module) re-runs it, not the other branches
    run = {n.target for n in inc._plan(frozenset(["mha.out_proj"]))[1] if n.op == "call_module"}
    assert {"mha", "norm", "bil", "fc"} <= run and not {"c1", "c2", "c3", "t1", "t2", "t3"} & run
    ref = direct_loss(state.to_model(model), data)
    for ev in (full, inc, exact):
        assert ev.reference_eval.fitness == pytest.approx(ref, rel=1e-5)
    parent = state.codes()
    for i, name in enumerate(["t2", "t1", "t3", "mha.out_proj", "c1", "c3", "fc", "t2", "c2"]):
        child = moved(state, parent, name, 0.3 if i % 2 else 0.05, i)
        want = direct_loss(state.with_codes(child).to_model(model), data)
        results = [ev.evaluate(child) for ev in (full, inc, exact)]
        for ev, r in zip((full, inc, exact), results):
            assert r.fitness == pytest.approx(want, rel=1e-5), (name, type(ev).__name__)
        if i % 3 != 2:  # accept most children (the reference moves), reject some
            for ev, r in zip((full, inc, exact), results):
                ev.set_reference(child, r)
            parent = child
    for ev in (full, inc, exact):  # the evaluator's model decodes the reference, in each module's layout
        q = state.with_codes(parent).to_model(model)
        for name in state.layers:
            assert torch.equal(ev.model.get_submodule(name).weight, q.get_submodule(name).weight), name


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.spare, self.b = nn.Conv2d(2, 3, 3), nn.ConvTranspose1d(2, 2, 1), nn.Linear(3, 10)

    def forward(self, x):
        return self.b(self.a(x).mean((2, 3)))


def test_a_layer_the_graph_never_uses_is_evaluated_correctly(data):
    torch.manual_seed(0)
    model = Unused().eval()
    state = quantize(model, bits=3)
    inc = IncrementalEvaluator(model, state, data, chunk_size=32)
    child = moved(state, state.codes(), "spare", 0.5, 0)
    assert inc.evaluate(child).fitness == pytest.approx(inc.reference_eval.fitness, rel=1e-6)


def test_sensitivity_quantizes_one_layer_in_its_own_layout(model, data):
    state = quantize(model, bits=2)
    sens = layer_sensitivity(model, state, data, score=direct_loss)
    base = direct_loss(model, data)
    for name in ("t1", "t2", "t3"):
        one = copy.deepcopy(model)
        m = one.get_submodule(name)
        with torch.no_grad():
            m.weight.copy_(from_rows(state.layers[name].dequantize(), m))
        assert sens[name] == pytest.approx(direct_loss(one, data) - base, rel=1e-5, abs=1e-7)


class Flat(nn.Module):
    """No 5-D weight (the classification evaluate() keeps models in channels_last)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 1)
        self.t = nn.ConvTranspose2d(4, 6, 3, groups=2)   # C_in/g = 2, C_out/g = 3: not a plain reshape
        self.c = nn.Conv1d(6, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.c(torch.relu(self.t(self.a(x))).flatten(2)).mean(2))


def test_boundary_flips_write_transposed_weights_at_the_right_place(data):
    torch.manual_seed(0)
    model = Flat().eval()
    state = quantize(model, bits=3)
    lq = state.layers["t"]
    q = state.to_model(model)
    m = q.get_submodule("t")
    with torch.no_grad():
        m.weight.zero_()
        flat = torch.randperm(lq.codes.numel())
        _write_codes(state, "t", m, flat, lq.codes.reshape(-1)[flat])
    assert torch.equal(m.weight, from_rows(lq.dequantize(), m))
    before = {n: p.clone() for n, p in model.named_parameters()}
    deltas, flips = random_boundary_flips(model, state, data, n_trials=4, n_flips=6, near=0.3, subset=None,
                                          return_flips=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    base = (state.to_model(model)(data.x).argmax(1) == data.y).float().mean()
    for d, trial in zip(deltas, flips):
        acc = (apply_flips(state, trial).to_model(model)(data.x).argmax(1) == data.y).float().mean()
        assert d.item() == pytest.approx((acc - base).item(), abs=1e-6)
