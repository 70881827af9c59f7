"""The typed views behind the tables and figures (one Outcome per method, read from the cell's own ``peers``), a
profile of three typed parts that holds its ES as one config (budgets as knobs, JSON round trip), the task-typed
options, the layer roles of notebook 04. All fast: no training, no ES run."""
from dataclasses import fields, replace

import pytest
import torch

from qevo_lite.core.models import build_model
from qevo_lite.es.pipeline import EvolutionConfig, GlobalStage, GradientStage, QuadraticLocal, SampledLocal
from qevo_lite.experiment.context import Context
from qevo_lite.experiment.profile import FLAT_ORDER, CellGrid, DataSpec, MethodSpec
from qevo_lite.experiment.records import keyed, method_outcomes, method_points, outcome, outcomes
from qevo_lite.experiment.task import Metric, describe_es
from qevo_lite.tasks import autoencoder, classification, detection
from qevo_lite.tasks.classification.roles import folded_pairs, layer_role

ACC = Metric("accuracy", "accuracy (%)")


def _row():
    row = {"arch": "m", "bits": 2, "seeds": [0, 1], "es_run": True, "granularity": "per_channel", "rtn_rule": "mse",
           "rtn_per_tensor_rule": "maxabs_full", "peers": ["gptq"], "local_method": "quadratic",
           "local_evaluations": 1e6, "global_evaluations": 64, "wall_seconds": 10.0, "moved_share": 0.02,
           "gptq_seconds": 2.0, "es_gptq_seconds": 9.0, "es_gptq_moved_share": 0.01,
           "local_test_accuracy": 0.85}
    for prefix, acc in (("fp32", 0.9), ("rtn", 0.5), ("rtn_per_tensor", 0.3), ("es", 0.88), ("gptq", 0.8),
                        ("es_gptq", 0.87)):
        row.update(keyed(prefix, {"accuracy": acc, "loss": 1 - acc}, "test"))
        row.update(keyed(prefix, {"accuracy": acc + 0.01}, "search"))
    row["es_test_accuracy_std"] = 0.004
    return row


def test_outcomes_read_every_method_of_a_row_and_only_its_own_keys():
    row = _row()
    got = outcomes(row)
    assert [o.prefix for o in got] == ["fp32", "rtn_per_tensor", "rtn", "es", "gptq", "es_gptq"]
    es = outcome(row, "es")
    assert es.value(ACC) == 0.88 and es.std(ACC) == 0.004 and es.value("loss") == pytest.approx(0.12)
    assert es.value(ACC, "search") == pytest.approx(0.89) and es.seconds == 10.0
    assert outcome(row, "rtn").test == {"accuracy": 0.5, "loss": 0.5}      # not rtn_per_tensor's keys
    assert outcome(row, "es_gptq").seconds == 11.0 and outcome(row, "gptq").kind == "peer"
    assert outcome(row, "rtn_per_tensor").label == "RTN per-tensor (maxabs_full)"
    with pytest.raises(KeyError, match="No method 'adaround'.*'gptq'"):
        outcome(row, "adaround")
    assert [p.label for p in method_points(row, ACC)] == ["RTN", "ES from RTN", "GPTQ", "ES from GPTQ"]
    assert method_outcomes({**row, "es_run": False}) == []


def test_a_profile_holds_its_es_as_one_config_with_budget_knobs():
    fast = classification.PROFILES["fast"]
    assert fast.methods.es == EvolutionConfig(QuadraticLocal(samples=256)) and not fast.methods.es.global_stage.active
    changed = fast.with_overrides(budget=12, local_budget=30, bits=[2])
    assert changed.methods.es.global_stage.budget == 12 and changed.methods.es.local.generations == 30 and changed.grid.bits == (2,)
    first = fast.with_overrides(es=classification.TASK.first_es["fast"], local_budget=400)
    assert isinstance(first.methods.es.local, SampledLocal) and first.methods.es.local.evaluations == 400
    with pytest.raises(ValueError, match="Unknown profile fields \\['local_evaluations'\\]"):
        fast.with_overrides(local_evaluations=400)
    with pytest.raises(ValueError, match="es must be an EvolutionConfig"):
        fast.with_overrides(es="quadratic")
    for es in (fast.methods.es, first.methods.es, detection.TASK.first_es["fast"]):
        assert EvolutionConfig.from_dict(es.as_dict()) == es
    d = fast.as_dict()
    assert d["es"]["local"]["kind"] == "quadratic" and d["peers"][0]["method"] == "gptq"
    assert describe_es(d, "images", "cross-entropy").startswith(
        "Every method keeps RTN's per-channel grid (one scale per output channel). ES = local stage: per output channel, a (1+16) ES on the layer's exact quadratic output error over 256 "
        "images (up to 2000 generations per layer), layer by layer; no global stage")
    # with a global budget the text names it (the paper's chain, one flag away)
    with_global = describe_es(fast.with_overrides(budget=64).as_dict(), "images", "cross-entropy")
    assert with_global.split("ES = ")[1].startswith("local stage: per output channel")
    assert "layer by layer; then a global (1+8) ES with 64 evaluations on the search cross-entropy." in with_global
    assert fast.methods.es.budgets_text() == "2000 local generations per layer"
    assert fast.methods.es.describe("images") == "ES (quadratic local stage only)"
    assert fast.with_overrides(budget=64).methods.es.describe("images") == \
        "ES (quadratic local stage, then a global (1+8) ES, 64 evaluations)"
    assert "local stage: 500 evaluations per layer" in describe_es(
        autoencoder.PROFILES["fast"].with_overrides(es=autoencoder.TASK.first_es["fast"]).as_dict(), "images", "MSE")
    assert first.methods.es.budgets_text() == "400 local evaluations per layer + 64 global evaluations"
    # the text says the ES started from each peer only where the profile runs it
    assert '"ES from ...")' in describe_es(d, "images", "cross-entropy")
    assert "ES from" not in describe_es(fast.with_overrides(es_from_peers=False).as_dict(), "images", "cross-entropy")
    per_tensor = fast.with_overrides(granularity="per_tensor", extra_granularities=("per_channel",)).as_dict()
    assert describe_es(per_tensor, "images", "cross-entropy").startswith(
        "Every method keeps RTN's per-tensor grid (one scale per layer).")


def test_study_options_are_typed_on_the_task():
    fast = detection.PROFILES["fast"]
    assert set(detection.TASK.study_options) <= {f.name for f in fields(fast.options)}
    assert detection.TASK.without_studies(fast).options.compare_budget == 0
    assert classification.TASK.study_options == () and classification.TASK.without_studies(fast) is fast
    # the options are the task's own dataclass: a context refuses another kind
    assert isinstance(autoencoder.PROFILES["fast"].options, autoencoder.AutoencoderOptions)
    with pytest.raises(ValueError, match="must be AutoencoderOptions"):
        Context(autoencoder.TASK, autoencoder.PROFILES["fast"].with_overrides(options=detection.DetectionOptions()))
    with pytest.raises(ValueError, match="must be None"):
        Context(classification.TASK, classification.PROFILES["fast"].with_overrides(options=fast.options))


def test_a_profile_has_three_parts_and_overrides_find_each_fields_part():
    fast = classification.PROFILES["fast"]
    assert isinstance(fast.data, DataSpec) and isinstance(fast.grid, CellGrid) and isinstance(fast.methods, MethodSpec)
    changed = fast.with_overrides(bits=[2, 3], search_size=512, es_from_peers=False, granularity="per_tensor",
                                  extra_granularities=())
    assert changed.grid.bits == (2, 3) and changed.grid.granularity == "per_tensor"
    assert changed.data == replace(fast.data, search_size=512) and changed.methods.peers == fast.methods.peers
    assert not changed.methods.es_from_peers and changed.grid.seeds == fast.grid.seeds
    assert fast.with_overrides(data=DataSpec("digits")).data.dataset == "digits"
    # one flat dict per profile, every part's fields once (the results.json header and a cell's settings)
    d = changed.as_dict()
    assert list(d) == list(FLAT_ORDER) and d["search_size"] == 512 and d["bits"] == (2, 3) and d["options"] == {}
    assert detection.PROFILES["fast"].as_dict()["options"] == {"compare_budget": 12, "compare_model": "det_vgg_small",
                                                             "compare_seeds": (0, 1, 2)}
    with pytest.raises(ValueError, match="repeats the profile's granularity"):
        fast.with_overrides(granularity="per_tensor")   # per_tensor is already an extra grid of the fast profile
    with pytest.raises(ValueError, match="must be a DataSpec"):
        replace(fast, data={"dataset": "digits"})


def test_layer_roles_and_the_batch_norms_folded_into_shortcuts():
    model = build_model("resnet_small").eval()
    pairs = folded_pairs(model)
    assert pairs["stages.1.0.shortcut.1"] == "stages.1.0.shortcut.0" and pairs["stem.1"] == "stem.0"
    assert len(pairs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert [layer_role(n, "fc") for n in ("stem.0", "stages.0.0.conv1", "stages.2.0.shortcut.0", "fc")] == \
        ["stem", "block conv", "shortcut", "classifier"]


def test_the_tuning_grid_is_every_combination_with_numbers_parsed():
    from conftest import load_script
    tune = load_script("tune_peers")
    assert tune.parse_grid("lr=1e-3,1e-2; reduction=sum_channels,mean") == [
        {"lr": 1e-3, "reduction": "sum_channels"}, {"lr": 1e-3, "reduction": "mean"},
        {"lr": 1e-2, "reduction": "sum_channels"}, {"lr": 1e-2, "reduction": "mean"}]
    assert tune.parse_grid("steps=250,1000") == [{"steps": 250}, {"steps": 1000}] and tune.parse_grid("") == [{}]
    assert tune.VALIDATION == slice(1024, 2048)   # the slice the ES's settings were chosen on (README)
    from qevo_lite.es.pipeline import EvolutionConfig
    changed = tune.with_changes(EvolutionConfig(), {"local.weighting": "fisher", "local.samples": 192})
    assert changed.local.weighting == "fisher" and changed.local.samples == 192
    assert changed.global_stage == EvolutionConfig().global_stage


def test_demo_profiles_run_every_method_once_at_the_headline_width():
    from qevo_lite.methods import AdaRoundConfig, get_method
    for task, bits in ((classification, 2), (detection, 2), (autoencoder, 3)):
        demo, fast = task.PROFILES["demo"], task.PROFILES["fast"]
        assert demo.name == "demo" and demo.grid.bits == (bits,) and demo.grid.seeds == (0,) and not demo.methods.es_from_peers
        assert [get_method(c).name for c in demo.methods.peers] == ["gptq", "adaround", "brecq"]
        assert demo.methods.peers == task.TASK.tuned_peers == task.TUNED_PEERS
        # the same ES, but the autoencoder's demo leaves out the gradient stage (its 45 s; the demo is minutes)
        assert demo.methods.es == replace(fast.methods.es, gradient_stage=GradientStage())
        assert demo.data == fast.data and set(demo.grid.models) <= set(fast.grid.models)
        assert task.TASK.first_es["demo"] == task.TASK.first_es["fast"]
    # the gradient stage runs where it earned its time on held-out data (the README): the autoencoder only
    assert autoencoder.PROFILES["fast"].methods.es.gradient_stage == GradientStage(budget=200)
    assert autoencoder.PROFILES["full"].methods.es.gradient_stage.budget == 200
    for task in (classification, detection):
        assert not task.PROFILES["fast"].methods.es.gradient_stage.active
    assert detection.PROFILES["demo"].options.compare_budget == 0            # no fitness study in the demo
    # every fast profile (the README's 3-seed tables) runs its task's peers at the settings chosen on the validation
    # slice (docs/tuning.md), block reconstruction included
    for task in (classification, detection, autoencoder):
        assert task.PROFILES["fast"].methods.peers == task.TASK.tuned_peers
    assert AdaRoundConfig(lr=0.1, reduction="mean") in classification.PROFILES["fast"].methods.peers
    # detection's fast profile (notebook 05, the README's 3-seed table) runs the peers validated on its own slice,
    # block reconstruction with the Fisher weighting among them, and no "ES from <peer>" runs
    det_fast = detection.PROFILES["fast"]
    assert det_fast.methods.peers == detection.TASK.tuned_peers and not det_fast.methods.es_from_peers
    assert [get_method(c).name for c in det_fast.methods.peers] == ["gptq", "adaround", "brecq"]
    assert det_fast.methods.peers[2].fisher and det_fast.methods.peers[1].lr == 0.1
    # the ES's local fitness as validated per task (docs/tuning.md, "The ES's local fitness"): Fisher-weighted per
    # output position on the detectors, on every search canvas; the plain output error elsewhere
    for name in ("fast", "full"):
        assert detection.PROFILES[name].methods.es.local.weighting == "fisher"
    assert det_fast.methods.es.local.samples == det_fast.data.search_size
    for task in (classification, autoencoder):
        assert all(p.methods.es.local.weighting == "output" for p in task.PROFILES.values())
    assert "Fisher-weighted" in det_fast.methods.es.describe("") and "Fisher" not in classification.PROFILES["fast"].methods.es.describe("")
    assert "weighted by the squared gradient of the task loss" in describe_es(det_fast.as_dict(), "canvases", "loss")


def test_peer_descriptions_say_how_many_search_images_the_peers_read():
    # the detectors' search split (192 canvases) is smaller than the peers' 1,024 asked-for images: a method reads
    # the split's first `samples` images, so results.md must name the 192 it ran on, not the 1,024 it asked for
    det = detection.PROFILES["fast"].as_dict()
    assert det["search_size"] < 1024
    text = describe_es(det, "canvases", "loss")
    assert f"GPTQ ({det['search_size']} search canvases" in text and "1,024" not in text
    cls = classification.PROFILES["fast"].as_dict()
    assert "GPTQ (1,024 search images" in describe_es(cls, "images", "cross-entropy")
