"""The method registry: a method added with one registration (a toy "round down") reaches ``qv.quantize``, the
reproduce table and the methods-vs-time figure with no other file touched; the built-in methods dispatched
through the registry give the codes their functions give; bad names and configs are refused clearly."""
from dataclasses import dataclass

import pytest
import torch

import qevo_lite as qv
from qevo_lite.experiment import cell_grid
from qevo_lite.experiment.context import Context
from qevo_lite.methods import (AdaRoundConfig, GPTQConfig, RoundingProblem, choose_codes, get_method, method_names,
                               register, unregister)
from qevo_lite.rounding.layers import grid_of
from qevo_lite.experiment.records import method_points

from test_experiments import TASK, ckpt, tiny_profile  # noqa: F401  (ckpt: the shared pretrained fixture)


@dataclass(frozen=True)
class RoundDownConfig:
    """Round every weight down onto the grid (no settings)."""


def round_down(problem, config):
    codes = {}
    for name, lq in problem.rtn_state.layers.items():
        scale, zero_point = grid_of(lq)
        codes[name] = torch.clamp(torch.floor(lq.weight / scale + zero_point), lq.qmin, lq.qmax).to(torch.int16)
    return problem.rtn_state.with_codes(codes), None


@pytest.fixture
def toy_method():
    register("round_down", RoundDownConfig, round_down, label="Round down", seeded=False)
    yield "round_down"
    unregister("round_down")


def test_a_registered_method_reaches_quantize(toy_method, tiny_vgg, digits):
    qmodel, report = qv.quantize(tiny_vgg, digits.search, bits=3, method="round_down", progress=False)
    assert report.method == "round_down" and report.moved > 0
    _, by_config = qv.quantize(tiny_vgg, digits.search, bits=3, method=RoundDownConfig(), progress=False)
    assert by_config.search == report.search
    rtn = qv.best_rtn(qv.fold_batchnorm(tiny_vgg), digits.search, 3).state
    down = round_down(RoundingProblem(tiny_vgg, rtn, digits.search), RoundDownConfig())[0]
    assert all(bool((down.layers[n].codes <= rtn.layers[n].codes).all()) for n in rtn.layers)   # never above RTN


def test_a_registered_method_reaches_the_reproduce_table_and_figure(toy_method, tmp_path, ckpt):  # noqa: F811
    ctx = Context(TASK, tiny_profile(bits=(2,), peers=("round_down",)), device="cpu", checkpoint_dir=ckpt)
    res = cell_grid.run_task(ctx, tmp_path, progress=False, figures=True)
    cell = res["cells"]["classification/vgg_small/W2/seed0"]
    assert cell["peers"] == ["round_down"] and {"round_down_test_accuracy", "es_round_down_seconds"} <= set(cell)
    md = (tmp_path / "results.md").read_text()
    assert "| vgg_small | W2 | Round down |" in md and "| vgg_small | W2 | ES from Round down |" in md
    assert "vgg_small_W2_methods.png" in res["figures"] and (tmp_path / "vgg_small_W2_methods.png").exists()
    labels = [p.label for p in method_points(res["summary"][0], TASK.metrics[0])]
    assert labels == ["RTN", "ES from RTN", "Round down", "ES from Round down"]


def test_the_registry_dispatches_to_the_same_codes(tiny_vgg, digits):
    fmodel = qv.fold_batchnorm(tiny_vgg)
    rtn = qv.best_rtn(fmodel, digits.search, 2).state
    problem = RoundingProblem(fmodel, rtn, digits.search, seed=3)
    res = choose_codes(GPTQConfig(samples=64), problem)
    direct = qv.gptq(fmodel, rtn, digits.search, samples=64)
    assert res.method == "gptq" and res.label == "GPTQ" and res.seconds > 0
    assert all(torch.equal(res.state.layers[n].codes, direct.layers[n].codes) for n in rtn.layers)
    res = choose_codes(AdaRoundConfig(samples=64, steps=10), problem)
    direct = qv.adaround(fmodel, rtn, digits.search, samples=64, steps=10, seed=3)
    assert all(torch.equal(res.state.layers[n].codes, direct.layers[n].codes) for n in rtn.layers)
    assert choose_codes("rtn", problem).state is rtn


def test_names_and_configs_are_checked():
    assert method_names() == ("rtn", "gptq", "adaround", "brecq", "es")
    assert method_names("peer") == ("gptq", "adaround", "brecq")
    with pytest.raises(ValueError, match="Unknown method 'magic'"):
        get_method("magic")
    with pytest.raises(ValueError, match="not the config of a registered method"):
        get_method(RoundDownConfig())
    with pytest.raises(ValueError, match="already registered"):
        register("gptq", RoundDownConfig, round_down, label="x")
    with pytest.raises(ValueError, match="Unknown method"):
        tiny_profile(peers=("magic",))
    with pytest.raises(ValueError, match="kind 'peer'"):
        tiny_profile(peers=("es",))
    assert tiny_profile(peers=("gptq",)).methods.peers == (GPTQConfig(),)


def test_adaround_settings_reach_its_optimiser(tiny_vgg, digits):
    """The learning rate and the reduction of the output error are AdaRound settings of its config (issue 19
    tunes them): other values give other codes; an unknown reduction is refused."""
    fmodel = qv.fold_batchnorm(tiny_vgg)
    rtn = qv.best_rtn(fmodel, digits.search, 2).state
    problem = RoundingProblem(fmodel, rtn, digits.search)

    def codes(**kw):
        state = choose_codes(AdaRoundConfig(samples=64, steps=40, **kw), problem).state
        return torch.cat([lq.codes.flatten() for lq in state.layers.values()])

    default = codes()
    assert not torch.equal(default, codes(lr=1e-1)) and not torch.equal(default, codes(reduction="mean"))
    with pytest.raises(ValueError, match="reduction"):
        codes(reduction="max")
