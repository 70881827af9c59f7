"""The ES's ``gate_local``: the local stage's codes are kept only where they lower the task's loss on the search
split (qevo_lite.es.pipeline.gate); where they are set aside the second stages start from the start codes, and
cells, summaries and results.md say so."""
import torch

from qevo_lite import quantize_model
from qevo_lite.es import pipeline
from qevo_lite.es.gradient_stage import task_loss
from qevo_lite.es.pipeline import EvolutionConfig, GradientStage, QuadraticLocal, evolve
from qevo_lite.es.stages import LocalStageResult
from qevo_lite.experiment.summary import peer_targets_markdown

CONFIG = EvolutionConfig(QuadraticLocal(samples=64, generations=50), gate_local=True)


def test_a_local_stage_that_lowers_the_loss_is_kept_unchanged(tiny_vgg, digits):
    rtn = quantize_model(tiny_vgg, bits=2)
    gated = evolve(tiny_vgg, rtn, digits.search, CONFIG, seed=0)
    plain = evolve(tiny_vgg, rtn, digits.search, EvolutionConfig(CONFIG.local), seed=0)
    assert gated.local_kept and plain.local_kept
    assert all(torch.equal(gated.local.codes[n], plain.local.codes[n]) for n in rtn.layers)
    assert any(not torch.equal(gated.local.codes[n], c) for n, c in rtn.codes().items())
    assert task_loss(tiny_vgg, rtn, gated.local.codes, digits.search) < task_loss(tiny_vgg, rtn, rtn.codes(),
                                                                                   digits.search)


def test_a_local_stage_that_raises_the_loss_is_set_aside_and_the_second_stage_starts_from_the_start(
        tiny_vgg, digits, monkeypatch):
    rtn = quantize_model(tiny_vgg, bits=4)                # RTN is good at 4 bits: the made-up local stage is not
    start = rtn.codes()
    worse = {n: torch.full_like(c, rtn.layers[n].qmin) for n, c in start.items()}   # every weight at the bottom
    made_up = lambda *a, **k: LocalStageResult({n: c.clone() for n, c in worse.items()}, [{"layer": "x"}], 1.0)
    monkeypatch.setattr(pipeline, "run_local", made_up)
    config = EvolutionConfig(CONFIG.local, gradient_stage=GradientStage(budget=3, draws=2), gate_local=True)
    res = evolve(tiny_vgg, rtn, digits.search, config, start, seed=0)
    assert not res.local_kept
    assert all(torch.equal(res.local.codes[n], start[n]) for n in start)
    assert res.local.seconds > 1.0                        # the gate's two forward passes are counted
    assert task_loss(tiny_vgg, rtn, res.gradient.codes, digits.search) < task_loss(tiny_vgg, rtn, worse,
                                                                                    digits.search)
    ungated = evolve(tiny_vgg, rtn, digits.search, EvolutionConfig(CONFIG.local), start, seed=0)
    assert ungated.local_kept and all(torch.equal(ungated.local.codes[n], worse[n]) for n in worse)


def test_the_gate_travels_with_the_config_and_old_configs_read_as_ungated():
    assert EvolutionConfig.from_dict(CONFIG.as_dict()) == CONFIG
    old = CONFIG.as_dict()
    del old["gate_local"]                   # results.json written before the gate existed
    assert EvolutionConfig.from_dict(old).gate_local is False


def test_the_autoencoder_gates_its_local_stage_and_its_description_says_so():
    from qevo_lite.experiment.task import describe_es
    from qevo_lite.tasks import autoencoder, classification
    assert autoencoder.PROFILES["fast"].methods.es.gate_local
    assert not classification.PROFILES["fast"].methods.es.gate_local
    assert "codes kept only where they lower the search MSE" in describe_es(
        autoencoder.PROFILES["fast"].as_dict(), "images", "MSE")
    assert "kept only where" not in describe_es(classification.PROFILES["fast"].as_dict(), "images", "loss")


def test_the_targets_say_in_how_many_seeds_the_local_stage_was_set_aside():
    from qevo_lite.tasks import get_task
    task = get_task("autoencoder")
    t = {"arch": "conv_autoencoder", "bits": 2, "peer": "brecq", "margin": -0.003, "std": 0.0005,
         "time_ratio": 2.2, "reaches": False, "beats": False, "met": False, "global_off": True, "global_gain": None,
         "global_beyond_noise": None, "second": "gradient", "peers": {"brecq": 0.003, "gptq": 0.4},
         "set_aside": {"brecq": 3, "gptq": 0}, "seeds": 3}
    line = peer_targets_markdown([t], task)[0]
    assert "ES from BRECQ vs BRECQ +0.003000 (local stage set aside in 3 of 3 seeds)" in line
    assert "ES from GPTQ vs GPTQ +0.400000." in line           # kept in every seed: nothing added
