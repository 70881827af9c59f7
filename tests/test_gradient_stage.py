"""The gradient stage (qevo_lite.es.gradient_stage): its curvature, its exact checks, its early stopping, its place
in the ES's config, results and tables."""
import torch
from torch import nn

from qevo_lite import quantize_model
from qevo_lite.core.data import Split
from qevo_lite.es.gradient_stage import gradient_stage, loss_curvature
from qevo_lite.es.pipeline import EvolutionConfig, GradientStage, QuadraticLocal, evolve
from qevo_lite.evaluators.base import cross_entropy_loss, reconstruction_mse
from qevo_lite.experiment.records import method_outcomes


def _search_loss(model, split, fn) -> float:
    with torch.no_grad():
        return float(fn(model(split.x), split.y).mean())


def test_curvature_is_the_gauss_newton_diagonal_of_a_mean_squared_error():
    """For y = W x + b and a per-image MSE over D outputs, the Gauss-Newton diagonal for W_ij is
    2/(N D) sum_n x_nj^2, the same for every output i."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    x = torch.randn(50, 6) * torch.linspace(0.2, 2.0, 6)
    h = loss_curvature(layer, {"": layer}, x, torch.zeros(50, 4), reconstruction_mse, draws=1500)[""]
    exact = (2 / (50 * 4) * x.pow(2).sum(0)).expand(4, 6)
    assert h.shape == (4, 6)
    assert torch.allclose(h, exact, rtol=0.15)


def test_curvature_of_cross_entropy_is_positive_where_the_model_is_unsure(tiny_vgg, digits):
    layers = {"classifier": tiny_vgg.get_submodule("classifier")}
    model = tiny_vgg
    h = loss_curvature(model, layers, digits.search.x[:64], digits.search.y[:64], cross_entropy_loss, draws=4)
    assert h["classifier"].shape == layers["classifier"].weight.shape
    assert (h["classifier"] >= 0).all() and h["classifier"].sum() > 0
    for p in model.parameters():
        assert p.grad is None


def test_the_stage_lowers_the_fitted_loss_and_keeps_the_codes_best_on_its_held_out_slice(tiny_vgg, digits):
    rtn = quantize_model(tiny_vgg, bits=2)
    search = digits.search
    res = gradient_stage(tiny_vgg, rtn, search, rtn.codes(), budget=30, draws=4, seed=0)
    assert 0 < res.evaluations <= 30 and res.seconds > 0 and res.log
    fit, held = Split(search.x[:192], search.y[:192]), Split(search.x[192:], search.y[192:])
    before, after = rtn.to_model(tiny_vgg), rtn.with_codes(res.codes).to_model(tiny_vgg)
    assert _search_loss(after, held, cross_entropy_loss) < _search_loss(before, held, cross_entropy_loss)
    assert _search_loss(after, fit, cross_entropy_loss) < _search_loss(before, fit, cross_entropy_loss)
    assert res.log[-1]["fit"] <= res.log[0]["fit"]
    for name, lq in rtn.layers.items():
        assert res.codes[name].dtype == lq.codes.dtype and res.codes[name].shape == lq.codes.shape
        assert lq.qmin <= int(res.codes[name].min()) and int(res.codes[name].max()) <= lq.qmax
    assert torch.equal(rtn.layers["features.0.0"].codes, quantize_model(tiny_vgg, bits=2).layers["features.0.0"].codes)


def test_start_codes_that_are_strided_views_give_the_same_result(tiny_vgg, digits):
    """A peer's codes can be non-contiguous (a transposed layout); the stage moves codes by flat index."""
    rtn = quantize_model(tiny_vgg, bits=2)
    strided = {n: c.transpose(0, 1).contiguous().transpose(0, 1) for n, c in rtn.codes().items()}
    assert any(not c.is_contiguous() for c in strided.values())
    a = gradient_stage(tiny_vgg, rtn, digits.search, strided, budget=5, draws=2, seed=0)
    b = gradient_stage(tiny_vgg, rtn, digits.search, rtn.codes(), budget=5, draws=2, seed=0)
    assert a.evaluations == b.evaluations > 0
    assert all(torch.equal(a.codes[n], b.codes[n]) for n in b.codes)


def test_no_budget_returns_the_start_codes_without_reading_the_data(tiny_vgg):
    rtn = quantize_model(tiny_vgg, bits=2)
    res = gradient_stage(tiny_vgg, rtn, None, rtn.codes(), budget=0)
    assert res.evaluations == 0 and res.seconds == 0.0 and res.log == []
    assert all(torch.equal(res.codes[n], c) for n, c in rtn.codes().items())


def test_the_es_runs_the_gradient_stage_after_the_local_one_and_counts_its_time(tiny_vgg, digits):
    rtn = quantize_model(tiny_vgg, bits=2)
    config = EvolutionConfig(QuadraticLocal(samples=64, generations=50),
                             gradient_stage=GradientStage(budget=10, draws=2))
    res = evolve(tiny_vgg, rtn, digits.search, config, seed=0)
    assert 0 < res.gradient.evaluations <= 10
    assert res.seconds >= res.local.seconds + res.gradient.seconds
    final = res.state(rtn).codes()
    assert all(torch.equal(final[n], res.gradient.codes[n]) for n in final)   # no global stage: its codes
    assert "gradient-proposed moves (10 checks)" in config.describe("x")
    assert EvolutionConfig.from_dict(config.as_dict()) == config
    old = config.as_dict()
    del old["gradient_stage"]                     # results.json written before the stage existed
    assert EvolutionConfig.from_dict(old).gradient_stage == GradientStage()


def test_a_row_whose_second_stage_was_the_gradient_stage_is_labelled_so():
    row = {"es_run": True, "local_method": "quadratic", "local_evaluations": 1e6, "global_evaluations": 200,
           "second_stage": "gradient", "wall_seconds": 50.0, "moved": {"share": 0.2}}
    assert method_outcomes(row)[0].label == "ES from RTN (local + gradient)"
    row.pop("second_stage")
    assert method_outcomes(row)[0].label == "ES from RTN (local + global)"


def test_the_results_description_names_the_gradient_stage_where_a_profile_runs_it():
    from qevo_lite.experiment.task import describe_es
    from qevo_lite.tasks import autoencoder, classification
    text = describe_es(autoencoder.PROFILES["fast"].as_dict(), "images", "MSE")
    assert "then a gradient stage on the search MSE" in text and "at most 200 such checks" in text
    assert "last 25%" in text and "no global stage" in text
    assert "gradient stage" not in describe_es(classification.PROFILES["fast"].as_dict(), "images", "loss")
