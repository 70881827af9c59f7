import pytest
import torch
from torch import nn

from qevo_lite import QuantConfig, quantize_model, quantize_tensor, fold_batchnorm, build_model, SCALE_RULES
from qevo_lite.quant.export import save_state, load_state, pack_codes, unpack_codes, float_size_bytes

CONFIGS = [QuantConfig(b, s, g, r) for b in (2, 3, 4, 8) for s in ("symmetric", "asymmetric")
           for g in ("per_channel", "per_tensor") for r in SCALE_RULES]


def weights(shape=(8, 4, 3, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.linspace(0.1, 2.0, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    return w


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_codes_in_range_and_in_range_error_at_most_half_step(cfg):
    w = weights()
    codes, scale, zp = quantize_tensor(w, cfg)
    qmin, qmax = cfg.grid()
    assert codes.dtype == torch.int16 and codes.shape == w.shape
    assert int(codes.min()) >= qmin and int(codes.max()) <= qmax
    rows = w.shape[0] if cfg.granularity == "per_channel" else 1
    assert scale.shape == (rows,) and zp.shape == (rows,)
    s = scale.reshape(-1, 1) if rows > 1 else scale.reshape(1, 1)
    z = zp.reshape(-1, 1).float()
    w2 = w.reshape(rows, -1)
    q = codes.reshape(rows, -1).float()
    lo, hi = s * (qmin - z), s * (qmax - z)
    inside = (w2 >= lo) & (w2 <= hi)
    err = (s * (q - z) - w2).abs()
    assert inside.float().mean() > 0.5  # the check below is not vacuous
    assert torch.all(err[inside] <= s.expand_as(w2)[inside] * 0.5 + 1e-6)


def test_grids_and_full_grid_convention():
    assert QuantConfig(2, scale_rule="maxabs_full").grid() == (-2, 1)
    assert QuantConfig(2, scale_rule="maxabs_narrow").grid() == (-1, 1)
    assert QuantConfig(8, scheme="asymmetric").grid() == (0, 255)
    w = torch.tensor([[-1.0, 0.5, 1.0, 0.0]])
    codes, scale, _ = quantize_tensor(w, QuantConfig(3, granularity="per_tensor"))
    assert scale.item() == pytest.approx(1.0 / 4)  # max|w| / 2^(b-1)
    assert codes.tolist() == [[-4, 2, 3, 0]]       # +1.0 clipped to qmax = 3


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("rule", SCALE_RULES)
def test_per_channel_error_not_worse_than_per_tensor(bits, rule):
    w = weights(seed=bits)
    err = {}
    for g in ("per_channel", "per_tensor"):
        cfg = QuantConfig(bits, granularity=g, scale_rule=rule)
        codes, scale, zp = quantize_tensor(w, cfg)
        s = scale.reshape(-1, 1, 1, 1)
        err[g] = ((s * (codes.float() - zp.reshape(-1, 1, 1, 1)) - w) ** 2).sum()
    assert err["per_channel"] <= err["per_tensor"] + 1e-6


def test_mse_rule_has_lowest_weight_error():
    w = weights(seed=3)
    errs = {}
    for rule in SCALE_RULES:
        cfg = QuantConfig(3, scale_rule=rule)
        codes, scale, zp = quantize_tensor(w, cfg)
        errs[rule] = ((scale.reshape(-1, 1, 1, 1) * codes.float() - w) ** 2).sum().item()
    assert errs["mse"] <= min(errs["maxabs_full"], errs["maxabs_narrow"]) + 1e-6


@pytest.mark.parametrize("bad", [1, 9, 0, 4.0, "4", True, None])
def test_bad_bits_raise(bad):
    with pytest.raises(ValueError, match="bits"):
        QuantConfig(bits=bad)


def test_bad_names_raise():
    with pytest.raises(ValueError, match="scale rule"):
        QuantConfig(4, scale_rule="percentile")
    with pytest.raises(ValueError, match="scheme"):
        QuantConfig(4, scheme="log")
    with pytest.raises(ValueError, match="granularity"):
        QuantConfig(4, granularity="per_group")


def test_model_without_quantizable_layer_and_nonfinite_weights_raise():
    with pytest.raises(ValueError, match="no layer to quantize"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Flatten()), bits=4)
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        quantize_model(model, bits=4)


def test_batchnorm_folding_keeps_outputs():
    torch.manual_seed(0)
    for arch in ("vgg_small", "resnet_small"):
        model = build_model(arch, 1, 10)
        for m in model.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(4, 1, 28, 28)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it; folding falls back to nn.Sequential pairs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.body(x).mean((2, 3))
        return self.head(y) if y.sum() > -1e9 else -self.head(y)


def test_folding_falls_back_for_untraceable_models():
    model = Untraceable()
    model.body[1].running_var.fill_(2.0)
    model.eval()
    with pytest.warns(UserWarning, match="could not trace"):
        folded = fold_batchnorm(model)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


class UserNet(nn.Module):
    """A user's own model: nested modules, a functional forward and a grouped conv."""

    def __init__(self):
        super().__init__()
        self.enc = nn.ModuleDict({"a": nn.Conv2d(3, 8, 3, padding=1), "g": nn.Conv2d(8, 8, 3, padding=1, groups=4)})
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.enc["a"](x))
        x = torch.nn.functional.gelu(self.enc["g"](x)) + x
        return self.fc(x.mean((2, 3)))


def test_users_own_model_quantizes_and_applies():
    torch.manual_seed(0)
    model = UserNet().eval()
    folded = fold_batchnorm(model)
    state = quantize_model(folded, bits=8)
    assert set(state.layers) == {"enc.a", "enc.g", "fc"}
    assert state.layers["enc.g"].codes.shape == (8, 2, 3, 3)
    q = state.to_model(folded)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(q(x), model(x), rtol=0.05, atol=0.02)
    assert not torch.equal(q.get_submodule("enc.a").weight, folded.get_submodule("enc.a").weight)  # a copy


@pytest.mark.parametrize("cfg", [QuantConfig(2), QuantConfig(3, "asymmetric", "per_tensor", "mse"),
                                 QuantConfig(5, scale_rule="maxabs_narrow"), QuantConfig(8, "asymmetric")],
                         ids=lambda c: c.describe())
def test_export_import_round_trip_is_exact(tmp_path, cfg):
    torch.manual_seed(0)
    model = fold_batchnorm(build_model("resnet_small", 1, 10).eval())
    state = quantize_model(model, cfg)
    size = save_state(state, tmp_path / "m.qevo", model)
    loaded, biases = load_state(tmp_path / "m.qevo")
    assert loaded.config == state.config
    for name, lq in state.layers.items():
        assert torch.equal(loaded.layers[name].codes, lq.codes)
        assert torch.equal(loaded.layers[name].scale, lq.scale)
        assert torch.equal(loaded.layers[name].zero_point, lq.zero_point)
        assert torch.equal(loaded.layers[name].dequantize(), lq.dequantize())
    assert set(biases) == {n for n in state.layers if model.get_submodule(n).bias is not None}
    # the packed codes take bits/32 of the float weights, plus small per-channel metadata
    assert size < float_size_bytes(state) * cfg.bits / 32 + 20_000


def test_pack_unpack_random_codes():
    g = torch.Generator().manual_seed(1)
    for bits in range(2, 9):
        qmin = -(2 ** (bits - 1))
        codes = torch.randint(qmin, 2 ** (bits - 1), (1001,), generator=g).to(torch.int16)
        data = pack_codes(codes, qmin, bits)
        assert len(data) == (1001 * bits + 7) // 8
        assert torch.equal(unpack_codes(data, 1001, qmin, bits), codes)


def test_residuals_are_within_half_a_step(tiny_vgg):
    state = quantize_model(tiny_vgg, bits=4, scale_rule="maxabs_narrow")
    for lq in state.layers.values():
        assert lq.residual().abs().max() <= 0.5 + 1e-5
