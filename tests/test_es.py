import pytest
import torch
from torch import nn

from qevo_lite import quantize_model, fold_batchnorm, evaluate
from qevo_lite.es.engine import ESConfig, run_es
from qevo_lite.evaluators.full import FullEvaluator
from qevo_lite.evaluators.incremental import IncrementalEvaluator
from qevo_lite.evaluators.layerwise import LayerwiseEvaluator, capture_layer_io
from qevo_lite.es.stages import run_layerwise
from qevo_lite.es.operators import crossover_uniform, mutate, mutate_residual, mutate_uniform, pick_layer, layer_weights
from qevo_lite.quant.sensitivity import layer_sensitivity


@pytest.fixture(scope="module")
def rtn(tiny_vgg):
    return quantize_model(tiny_vgg, bits=3)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ operators
def test_uniform_mutation_moves_one_step_within_grid(rtn):
    codes = rtn.layers["features.7.0"].codes
    new = mutate_uniform(codes, -4, 3, 0.05, gen())
    diff = (new.int() - codes.int())
    moved = diff != 0
    assert 0.02 < moved.float().mean() < 0.08           # about p of the weights
    assert diff.abs().max() == 1                         # one least-significant bit
    assert new.min() >= -4 and new.max() <= 3
    assert torch.equal(codes, rtn.layers["features.7.0"].codes)  # parent untouched
    assert torch.equal(new, mutate_uniform(codes, -4, 3, 0.05, gen()))  # seeded


def test_codes_of_any_memory_layout_can_be_mutated_evolved_and_flipped(tiny_vgg, rtn, digits):
    """Codes rounded from a channels_last weight are not contiguous; every operator must accept them
    (they used to raise 'view size is not compatible')."""
    from qevo_lite.quant.flips import apply_flips
    layout = {n: lq.codes.to(memory_format=torch.channels_last) if lq.codes.dim() == 4 else lq.codes
              for n, lq in rtn.layers.items()}
    name = "features.7.0"
    assert not layout[name].is_contiguous()
    for new in (mutate_uniform(layout[name], -4, 3, 0.05, gen()),
                mutate(layout, rtn, name, "residual", 0.05, gen())[name]):
        assert new.shape == layout[name].shape and (new != layout[name]).any()
    assert torch.equal(mutate_uniform(layout[name], -4, 3, 0.05, gen()), mutate_uniform(rtn.layers[name].codes, -4, 3,
                                                                                        0.05, gen()))
    state = rtn.with_codes(layout)
    res = run_es(IncrementalEvaluator(tiny_vgg, state, digits.search), ESConfig(lam=2, max_evaluations=4),
                 progress=False)
    assert res.evaluations == 4
    lq = rtn.layers[name]
    target = lq.codes.reshape(-1).int() + torch.sign(lq.residual().reshape(-1)).int()
    i = int(((target >= lq.qmin) & (target <= lq.qmax) & (target != lq.codes.reshape(-1).int())).nonzero()[0])
    flipped = apply_flips(state, [(name, i)])
    assert int((flipped.layers[name].codes != rtn.layers[name].codes).sum()) == 1


def test_uniform_mutation_clamps_at_grid_edges():
    codes = torch.full((1000,), 3, dtype=torch.int16)
    new = mutate_uniform(codes, -4, 3, 0.5, gen())
    assert new.max() == 3 and set(new.unique().tolist()) <= {2, 3}


def test_residual_mutation_prefers_boundary_weights_and_moves_to_other_neighbour(rtn):
    lq = rtn.layers["features.7.0"]
    step = lq.scale.reshape(-1, 1, 1, 1)
    zp = lq.zero_point.reshape(-1, 1, 1, 1).float()
    new = mutate_residual(lq.codes, lq.weight, step, zp, lq.qmin, lq.qmax, 0.01, gen())
    moved = new != lq.codes
    resid = lq.residual()
    assert resid[moved].abs().mean() > 0.4 > resid.abs().mean()   # picked near the boundary
    # each moved weight goes to the grid point on the other side of its float value
    assert torch.all(torch.sign((new - lq.codes)[moved].float()) == torch.sign(resid[moved]))


def test_layer_choice_rules(rtn):
    names = list(rtn.layers)
    w = layer_weights(rtn, "size")
    assert max(w, key=w.get) == "features.7.0" and abs(sum(w.values()) - 1) < 1e-6
    assert layer_weights(rtn, "uniform") == pytest.approx({n: 1 / len(names) for n in names})
    order = ["classifier", "features.0.0"]
    picks = [pick_layer(names, [], "sensitivity", g_, gen(), order, 2) for g_ in range(6)]
    assert picks == ["classifier"] * 2 + ["features.0.0"] * 2 + ["classifier"] * 2
    with pytest.raises(ValueError):
        layer_weights(rtn, "random")


def test_crossover_takes_each_position_from_a_parent(rtn):
    a = mutate(rtn.codes(), rtn, "features.7.0", "uniform", 0.2, gen(1))
    b = mutate(rtn.codes(), rtn, "features.7.0", "uniform", 0.2, gen(2))
    c = crossover_uniform(a, b, gen(3))
    ca, cb, cc = a["features.7.0"], b["features.7.0"], c["features.7.0"]
    assert torch.all((cc == ca) | (cc == cb))
    differ = ca != cb
    assert 0.3 < (cc[differ] == ca[differ]).float().mean() < 0.7
    assert c["features.0.0"] is a["features.0.0"]       # untouched layers shared, not copied


# ------------------------------------------------------------------ evaluators
def test_incremental_equals_full_evaluation(tiny_vgg, rtn, digits):
    full = FullEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search, chunk_size=64)
    inc = IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search, chunk_size=64)
    assert inc.incremental
    parent = rtn.codes()
    for i, layer in enumerate(["features.7.0", "features.3.0", "classifier", "features.0.0"]):
        child = mutate(parent, rtn, layer, "uniform", 0.05, gen(i))
        ef, ei = full.evaluate(child), inc.evaluate(child)
        assert ef.fitness == pytest.approx(ei.fitness, rel=1e-6, abs=1e-7)
        assert torch.allclose(ef.losses, ei.losses, atol=1e-6)
        full.set_reference(child, ef)
        inc.set_reference(child, ei)
        parent = child
    # the cached reference weights are exactly the decoded codes
    with inc.applied(parent) as m:
        q = rtn.with_codes(parent).to_model(fold_batchnorm(tiny_vgg))
        assert evaluate(m, digits.search)["loss"] == pytest.approx(evaluate(q, digits.search)["loss"], rel=1e-5)


def test_evaluation_leaves_model_weights_unchanged(tiny_vgg, rtn, digits):
    inc = IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search)
    before = {n: p.detach().clone() for n, p in inc.model.named_parameters()}
    inc.evaluate(mutate(rtn.codes(), rtn, "features.4.0", "uniform", 0.1, gen()))
    for n, p in inc.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_early_rejection_stops_clear_losers(tiny_vgg, rtn, digits):
    inc = IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search, chunk_size=32)
    awful = mutate(rtn.codes(), rtn, "features.0.0", "uniform", 1.0, gen())  # every first-layer weight moved
    quick = inc.evaluate(awful, early_reject=True)
    slow = inc.evaluate(awful)
    assert slow.complete and slow.fitness > inc.reference_eval.fitness
    assert not quick.complete and quick.samples < slow.samples


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        return self.b(h) if h.sum() >= 0 else self.b(-h)


def test_untraceable_model_falls_back_to_full_evaluation(digits):
    from qevo_lite.core.data import Split
    small = Split(torch.nn.functional.avg_pool2d(digits.search.x, 3, 3, 1)[:, :, :8, :8], digits.search.y)
    model = Untraceable().eval()
    state = quantize_model(model, bits=4)
    with pytest.warns(UserWarning, match="falls back to full evaluation"):
        inc = IncrementalEvaluator(model, state, small)
    assert not inc.incremental
    child = mutate(state.codes(), state, "a", "uniform", 0.1, gen())
    assert inc.evaluate(child).fitness == pytest.approx(FullEvaluator(Untraceable().eval().requires_grad_(False)
                                                                      .load_state_dict(model.state_dict()) and model,
                                                                      state, small).evaluate(child).fitness)


@pytest.mark.parametrize("layer", ["features.0.0", "features.4.0", "classifier"])
def test_layerwise_sparse_fitness_equals_dense(tiny_vgg, rtn, digits, layer):
    q = rtn.to_model(tiny_vgg)
    x, y = capture_layer_io(q, tiny_vgg, layer, digits.search.x[:32])
    ev = LayerwiseEvaluator(q.get_submodule(layer), layer, rtn, x, y)
    child = mutate(rtn.codes(), rtn, layer, "uniform", 0.1, gen())
    mod = q.get_submodule(layer)
    with torch.no_grad():
        dense = (torch.nn.functional.conv2d(x, rtn.with_codes(child).layers[layer].dequantize(), mod.bias,
                                            mod.stride, mod.padding) if isinstance(mod, nn.Conv2d)
                 else torch.nn.functional.linear(x, rtn.with_codes(child).layers[layer].dequantize(), mod.bias))
    assert ev.evaluate(child).fitness == pytest.approx(((dense - y) ** 2).mean().item(), rel=1e-4)
    ev.set_reference(child)
    assert ev.reference_eval.fitness == pytest.approx(((dense - y) ** 2).mean().item(), rel=1e-4)


def test_layerwise_grouped_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4)
    state = quantize_model(nn.Sequential(conv), bits=3)
    x = torch.randn(5, 8, 9, 9)
    y = conv(x).detach()
    ev = LayerwiseEvaluator(conv, "0", state, x, y)
    child = mutate(state.codes(), state, "0", "uniform", 0.3, gen())
    dense = torch.nn.functional.conv2d(x, state.with_codes(child).layers["0"].dequantize(), conv.bias, 2, 1, 1, 4)
    assert ev.evaluate(child).fitness == pytest.approx(((dense - y) ** 2).mean().item(), rel=1e-4)


# ------------------------------------------------------------------ the run loop
def small_config(**kw):
    base = dict(lam=4, max_generations=12, p=0.02, seed=3)
    base.update(kw)
    return ESConfig(**base)


@pytest.mark.parametrize("kw", [dict(), dict(selection="comma", mu=2, lam=4), dict(mu=3, lam=6),
                                dict(adapt="none"), dict(mutation="residual"), dict(layer_choice="uniform")],
                         ids=["1+4", "2,4", "3+6", "no-adapt", "residual", "uniform-layer"])
def test_selection_schemes_run_and_never_lose_the_best(tiny_vgg, rtn, digits, kw):
    ev = IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search)
    start = ev.reference_eval.fitness
    res = run_es(ev, small_config(**kw), progress=False)
    assert res.generations == 12 and res.evaluations == 12 * res.history[0]["evaluations"]
    bests = [h["best"] for h in res.history]
    assert all(b2 <= b1 for b1, b2 in zip(bests, bests[1:]))   # elitist: the best never gets worse
    assert res.best_eval.fitness <= start
    assert res.best_eval.fitness < start or kw.get("selection") == "comma"


def test_plus_selection_improves_search_fitness(tiny_vgg, digits):
    state = quantize_model(tiny_vgg, bits=2)
    ev = IncrementalEvaluator(fold_batchnorm(tiny_vgg), state, digits.search)
    res = run_es(ev, small_config(max_generations=30, lam=6), progress=False)
    assert res.best_eval.fitness < ev.__class__(fold_batchnorm(tiny_vgg), state, digits.search).reference_eval.fitness
    assert sum(h["accepted"] for h in res.history) >= 3


def test_one_fifth_rule_counts_children_not_generations(tiny_vgg, digits):
    """Rechenberg's rule per mutation: after each window, p grows when more than 1/5 of the window's children
    beat their parent, shrinks when fewer do; a generation with a winning child is not a success by itself."""
    state = quantize_model(tiny_vgg, bits=2)
    ev = IncrementalEvaluator(fold_batchnorm(tiny_vgg), state, digits.search)
    res = run_es(ev, small_config(max_generations=20, lam=6, adapt_window=2, p=0.01), progress=False)
    ps = [0.01] + [h["p"] for h in res.history]
    rates = []
    for end in range(2, 21, 2):
        window = res.history[end - 2:end]
        assert all(h["successes"] >= h["accepted"] for h in window)   # an accepted generation has >= 1 winner
        rate = sum(h["successes"] for h in window) / 12
        rates.append(rate)
        before, after = ps[end - 2], ps[end]
        assert after == pytest.approx(before * (1.22 if rate > 0.2 else 0.82 if rate < 0.2 else 1.0))
    generation_rates = [sum(h["accepted"] for h in res.history[e - 2:e]) / 2 for e in range(2, 21, 2)]
    assert rates != generation_rates                                 # the two readings differ on this run


def test_same_seed_same_trajectory_and_full_equals_incremental(tiny_vgg, rtn, digits):
    runs = [run_es(cls(fold_batchnorm(tiny_vgg), rtn, digits.search), small_config(), progress=False)
            for cls in (FullEvaluator, IncrementalEvaluator, IncrementalEvaluator)]
    for r in runs[1:]:
        assert [h["best"] for h in r.history] == pytest.approx([h["best"] for h in runs[0].history], rel=1e-6)
        assert all(torch.equal(r.best[n], runs[0].best[n]) for n in r.best)
    other = run_es(IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search), small_config(seed=4),
                   progress=False)
    assert any(not torch.equal(other.best[n], runs[0].best[n]) for n in other.best)


def test_resume_equals_uninterrupted(tiny_vgg, rtn, digits, tmp_path):
    make = lambda: IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search)  # noqa: E731
    whole = run_es(make(), small_config(max_generations=16), progress=False)
    ck = tmp_path / "run.pt"
    first = run_es(make(), small_config(max_generations=16, max_evaluations=8 * 4), checkpoint=ck,
                   checkpoint_every=3, progress=False)
    assert first.generations == 8 and ck.exists()
    # resuming needs the same settings: a budget change is a different run
    with pytest.raises(ValueError, match="other settings"):
        run_es(make(), small_config(max_generations=16), checkpoint=ck, progress=False)
    import qevo_lite.es.engine as es_mod
    saved = torch.load(ck, weights_only=False)
    saved["config"] = es_mod.asdict(small_config(max_generations=16))
    torch.save(saved, ck)
    resumed = run_es(make(), small_config(max_generations=16), checkpoint=ck, progress=False)
    assert resumed.generations == 16 and resumed.evaluations == whole.evaluations
    assert all(torch.equal(resumed.best[n], whole.best[n]) for n in whole.best)
    assert [h["best"] for h in resumed.history] == pytest.approx([h["best"] for h in whole.history])


def test_reports_use_the_callback_not_selection(tiny_vgg, rtn, digits):
    ev = IncrementalEvaluator(fold_batchnorm(tiny_vgg), rtn, digits.search)
    seen = []
    res = run_es(ev, small_config(report_every=4), report=lambda m: seen.append(1) or evaluate(m, digits.test),
                 progress=False)
    assert [r["generation"] for r in res.reports] == [0, 4, 8, 12] and len(seen) == 4
    assert all(0 <= r["accuracy"] <= 1 for r in res.reports)


@pytest.mark.parametrize("kw,match", [(dict(p=0.0), "p must"), (dict(p=1.5), "p must"), (dict(lam=0), "lam"),
                                      (dict(selection="comma", mu=5, lam=4), "mu <= lambda"),
                                      (dict(max_generations=None), "Empty budget"),
                                      (dict(mutation="gauss"), "mutation"), (dict(selection="best"), "selection"),
                                      (dict(selection="comma", early_reject=True), "plus selection")])
def test_invalid_settings_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        small_config(**kw)


def test_layerwise_run_and_sensitivity(tiny_vgg, digits):
    state = quantize_model(tiny_vgg, bits=2)
    codes, log = run_layerwise(tiny_vgg, state, digits.search, small_config(max_generations=8), samples=64,
                               progress=False)
    assert [entry["layer"] for entry in log] == list(state.layers)
    assert all(e["after"] <= e["before"] for e in log)
    assert sum(state.moved(state.with_codes(codes)).values()) > 0
    sens = layer_sensitivity(tiny_vgg, state, digits.search)
    assert set(sens) == set(state.layers)
    assert list(sens.values()) == sorted(sens.values(), reverse=True)


def test_evaluators_leave_the_callers_model_alone(tiny_vgg, rtn, digits):
    before = {n: p.detach().clone() for n, p in tiny_vgg.named_parameters()}
    for cls in (FullEvaluator, IncrementalEvaluator):
        ev = cls(tiny_vgg, rtn, digits.search)
        ev.set_reference(mutate(rtn.codes(), rtn, "features.4.0", "uniform", 0.1, gen()))
    for n, p in tiny_vgg.named_parameters():
        assert torch.equal(p, before[n]), n


class OddConvs(nn.Module):
    """Strided, dilated, grouped and padded convs, a 1x1 shortcut sharing their input, a residual add and a
    Linear on a 3-D input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.s = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 6, (3, 1), padding=(1, 0), bias=False)
        self.t = nn.Linear(14, 5)       # digits are 28x28: 14x14 after the stride-2 conv
        self.head = nn.Linear(6 * 14 * 5, 10)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = self.s(h) + torch.relu(self.b(h))  # two convs with different padding read the same input
        h = self.t(self.c(h))          # Linear over the last (width) dimension
        return self.head(h.flatten(1))


@pytest.mark.parametrize("share", [0.02, 0.2])
def test_sparse_layer_update_equals_full_evaluation(digits, share):
    """The sparse update of one layer's output (strided/dilated/grouped/padded convs, a Linear on a
    3-D input) gives the fitness of a full evaluation; sparse_update=False is bit-identical."""
    torch.manual_seed(0)
    model = OddConvs().eval()
    state = quantize_model(model, bits=3)
    full = FullEvaluator(model, state, digits.search, chunk_size=64)
    fast = IncrementalEvaluator(model, state, digits.search, chunk_size=64)
    exact = IncrementalEvaluator(model, state, digits.search, chunk_size=64, sparse_update=False)
    assert set(fast._sparse_layers) == set(state.layers) and not exact._sparse_layers
    parent = state.codes()
    for i, layer in enumerate(["b", "s", "a", "c", "t", "s", "head", "b"]):
        child = mutate(parent, state, layer, "uniform", share, gen(i))
        ef, es, ee = full.evaluate(child), fast.evaluate(child), exact.evaluate(child)
        assert torch.allclose(ef.losses, es.losses, rtol=1e-5, atol=1e-6), layer
        assert torch.equal(ef.losses, ee.losses), layer
        for ev, e in ((full, ef), (fast, es), (exact, ee)):
            ev.set_reference(child, e)
        parent = child
    # evaluating never changed the model's weights: they decode the reference
    with full.applied(parent) as m_full:
        for name in state.layers:
            assert torch.equal(fast.model.get_submodule(name).weight, m_full.get_submodule(name).weight)
