"""Tests of the ES study tools (qevo_lite.es.study), the ES figures (qevo_lite.viz.es_plots) and the
p/lambda explorer (qevo_lite.viz.widgets.es_explorer)."""
import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from qevo_lite import evaluate, quantize_model  # noqa: E402
from qevo_lite.viz import es_plots  # noqa: E402
from qevo_lite.es.engine import ESConfig, run_es  # noqa: E402
from qevo_lite.es.study import (RecordingEvaluator, compare_variants, final_metric, format_mean_std,  # noqa: E402
                                mean_std, offspring_best, population_best, summarize, time_evaluators)
from qevo_lite.viz.widgets import es_explorer  # noqa: E402
from qevo_lite.evaluators.base import Evaluation  # noqa: E402
from qevo_lite.evaluators.full import FullEvaluator
from qevo_lite.evaluators.incremental import IncrementalEvaluator
from qevo_lite.es.operators import layer_weights, mutate_residual, mutate_uniform  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def rtn2(tiny_vgg):
    return quantize_model(tiny_vgg, bits=2)


def make(tiny_vgg, rtn2, digits, cls=IncrementalEvaluator):
    """A fresh evaluator on 64 search images (the model is copied: evaluators overwrite its weights)."""
    import copy
    from qevo_lite.core.data import Split
    return cls(copy.deepcopy(tiny_vgg), rtn2, Split(digits.search.x[:64], digits.search.y[:64]))


def labelled(fig):
    assert isinstance(fig, Figure) and fig.axes
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    return ax


# ------------------------------------------------------------------ es_tools
def test_recording_evaluator_records_every_offspring_and_delegates(tiny_vgg, rtn2, digits):
    inner = make(tiny_vgg, rtn2, digits)
    rec = RecordingEvaluator(inner)
    assert rec.state is inner.state and rec.reference is inner.reference   # delegation
    res = run_es(rec, ESConfig(lam=3, max_generations=4, p=0.02, seed=1), progress=False)
    assert len(rec.records) == res.evaluations == 12
    assert rec.fitnesses == [ev.fitness for ev in rec.records]
    # the best recorded fitness is what the run returns as its best (or RTN if nothing improved)
    rtn_fitness = make(tiny_vgg, rtn2, digits).reference_eval.fitness
    assert res.best_eval.fitness == pytest.approx(min(rec.fitnesses + [rtn_fitness]))
    # the same run without the wrapper goes the same way
    plain = run_es(make(tiny_vgg, rtn2, digits), ESConfig(lam=3, max_generations=4, p=0.02, seed=1), progress=False)
    assert [h["best"] for h in plain.history] == pytest.approx([h["best"] for h in res.history])


def test_offspring_best_groups_by_generation():
    recs = [Evaluation(f) for f in (3.0, 1.0, 2.0, 5.0, 4.0, 6.0)]
    assert offspring_best(recs, 3) == [1.0, 4.0]
    recs[3:] = [Evaluation(9.0, complete=False)] * 3
    out = offspring_best(recs, 3)
    assert out[0] == 1.0 and math.isnan(out[1])
    with pytest.raises(ValueError, match="whole generations"):
        offspring_best(recs[:4], 3)


def test_population_best_plus_is_monotone_comma_without_elitism_is_offspring_best(tiny_vgg, rtn2, digits):
    cfgs = {"plus": ESConfig(lam=2, max_generations=10, p=0.05, seed=0),
            "comma": ESConfig(lam=2, max_generations=10, p=0.05, seed=0, selection="comma", elitism=False)}
    for name, cfg in cfgs.items():
        rec = RecordingEvaluator(make(tiny_vgg, rtn2, digits))
        res = run_es(rec, cfg, progress=False)
        trace = population_best(res.history, rec.records, cfg)
        assert len(trace) == res.generations
        if name == "plus":
            assert trace == [h["best"] for h in res.history]
            assert all(b <= a for a, b in zip(trace, trace[1:]))
        else:
            assert trace == offspring_best(rec.records, cfg.lam)
            assert all(t >= h["best"] - 1e-12 for t, h in zip(trace, res.history))  # never better than best-ever


def test_compare_variants_runs_every_variant_and_seed(tiny_vgg, rtn2, digits):
    base = ESConfig(lam=2, max_evaluations=6, p=0.02)
    results = compare_variants(lambda: make(tiny_vgg, rtn2, digits), base,
                               {"uniform": dict(mutation="uniform"), "residual": dict(mutation="residual")},
                               seeds=(0, 1), report=lambda m: evaluate(m, digits.test.subset(64)))
    assert list(results) == ["uniform", "residual"]
    for label, runs in results.items():
        assert len(runs) == 2 and all(r.evaluations == 6 for r in runs)
        assert all(0 <= final_metric(r) <= 1 for r in runs)
    # the seeds differ, the same seed repeats
    again = compare_variants(lambda: make(tiny_vgg, rtn2, digits), base, {"uniform": dict(mutation="uniform")},
                             seeds=(0,))
    assert all(torch.equal(again["uniform"][0].best[n], results["uniform"][0].best[n]) for n in rtn2.layers)
    with pytest.raises(ValueError, match="variants is empty"):
        compare_variants(lambda: None, base, {})
    with pytest.raises(ValueError, match="no reports"):
        final_metric(again["uniform"][0].__class__(again["uniform"][0].best, again["uniform"][0].best_eval))


def test_mean_std_summarize_and_format():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])

    class R:
        def __init__(self, f):
            self.f = f
    rows = summarize({"a": [R(1.0), R(3.0)], "b": [R(2.0)]}, {"loss": lambda r: r.f})
    assert rows == [{"variant": "a", "loss": pytest.approx((2.0, 2 ** 0.5))}, {"variant": "b", "loss": (2.0, 0.0)}]
    text = format_mean_std(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["variant", "loss"] and len(lines) == 3
    assert "2.000 +/- 1.414" in lines[1] and "2.000 +/- 0.000" in lines[2]


def test_time_evaluators_gives_same_fitness_for_naive_and_incremental(tiny_vgg, rtn2, digits):
    cfg = ESConfig(lam=3, max_generations=3, p=0.05, seed=2)
    out = time_evaluators({"naive": make(tiny_vgg, rtn2, digits, FullEvaluator),
                           "incremental": make(tiny_vgg, rtn2, digits)}, cfg)
    assert set(out) == {"naive", "incremental"}
    for v in out.values():
        assert v["evals_per_s"] > 0 and v["seconds"] > 0 and len(v["fitnesses"]) == 9
    assert out["naive"]["fitnesses"] == pytest.approx(out["incremental"]["fitnesses"], rel=1e-6)


# ------------------------------------------------------------------ es_plots
def test_plot_mutation_picks(rtn2):
    lq = rtn2.layers["features.7.0"]
    bshape = (-1, 1, 1, 1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    uni = mutate_uniform(lq.codes, lq.qmin, lq.qmax, 0.05, g())
    res = mutate_residual(lq.codes, lq.weight, lq.scale.reshape(bshape), lq.zero_point.reshape(bshape).float(),
                          lq.qmin, lq.qmax, 0.05, g())
    fig = es_plots.plot_mutation_picks(lq.residual(), {"uniform": uni != lq.codes, "residual": res != lq.codes})
    ax = labelled(fig)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("all weights") and any(s.startswith("residual (") for s in labels)
    with pytest.raises(ValueError, match="entries"):
        es_plots.plot_mutation_picks(lq.residual(), {"bad": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="picks is empty"):
        es_plots.plot_mutation_picks(lq.residual(), {})


def test_plot_layer_choice_draws_one_bar_per_layer_and_rule(rtn2):
    probs = {r: layer_weights(rtn2, r) for r in ("uniform", "size")}
    ax = labelled(es_plots.plot_layer_choice(probs))
    assert len(ax.patches) == 2 * len(rtn2.layers)
    heights = sorted(p.get_height() for p in ax.patches[len(rtn2.layers):])
    assert heights == pytest.approx(sorted(probs["size"].values()))
    with pytest.raises(ValueError, match="other layers"):
        es_plots.plot_layer_choice({"a": {"x": 1.0}, "b": {"y": 1.0}})


def test_plot_traces_step_size_and_search_vs_heldout():
    ax = labelled(es_plots.plot_traces({"a": [3, 2, 1], "b": [3, 3, 2]}, title="t"))
    assert [list(l.get_ydata()) for l in ax.get_lines()] == [[3, 2, 1], [3, 3, 2]]
    hist = [{"generation": i + 1, "p": 0.01 * 1.22 ** i, "accepted": i % 2 == 0} for i in range(4)]
    ax = labelled(es_plots.plot_step_size({"run": hist}))
    assert ax.get_yscale() == "log"
    assert list(ax.get_lines()[1].get_xdata()) == [1, 3]          # markers on successful generations
    reports = [{"evaluations": e, "search": 0.5 + e / 100, "test": 0.5 + e / 200} for e in (0, 10, 20)]
    ax = labelled(es_plots.plot_search_vs_heldout({"128": reports}))
    assert [list(l.get_ydata()) for l in ax.get_lines()] == [pytest.approx([50, 60, 70]), pytest.approx([50, 55, 60])]
    with pytest.raises(ValueError, match="no reports"):
        es_plots.plot_search_vs_heldout({"x": []})


def test_plot_comparison_mean_and_band(tiny_vgg, rtn2, digits):
    base = ESConfig(lam=2, max_evaluations=6, p=0.02)
    results = compare_variants(lambda: make(tiny_vgg, rtn2, digits), base, {"u": {}}, seeds=(0, 1))
    ax = labelled(es_plots.plot_comparison(results))
    mean = ax.get_lines()[0].get_ydata()
    expected = [(a["best"] + b["best"]) / 2 for a, b in zip(results["u"][0].history, results["u"][1].history)]
    assert list(mean) == pytest.approx(expected)
    assert list(ax.get_lines()[0].get_xdata()) == [2, 4, 6]


def test_plot_accuracy_bars_with_error_bars():
    ax = es_plots.plot_accuracy_bars({"A": {"search": [0.6, 0.8], "test": 0.5}, "B": {"search": 0.9, "test": 0.7}},
                                     baseline=0.4, title="bars").axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([70, 90, 50, 70])
    assert ax.get_ylim()[0] <= 40 <= ax.get_ylim()[1]      # the baseline line is in view
    assert ax.get_xlabel() and ax.get_ylabel()


# ------------------------------------------------------------------ widgets.es_explorer
def test_es_explorer_static_and_widget_share_runs(tiny_vgg, rtn2, digits):
    ev = make(tiny_vgg, rtn2, digits)
    start = rtn2.codes()
    cache = {}
    fig = es_explorer(ev, start=start, p=0.002, lam=4, max_evaluations=8, cache=cache, interactive=False)
    ax = labelled(fig)
    assert list(cache) == [(0.002, 4)] and cache[(0.002, 4)].evaluations == 8
    assert cache[(0.002, 4)].p == 0.002                       # p fixed: no 1/5 rule in the explorer
    assert ax.get_lines()[-1].get_ydata()[-1] == pytest.approx(cache[(0.002, 4)].best_eval.fitness)
    first = cache[(0.002, 4)]
    box = es_explorer(ev, start=start, p=0.002, lam=4, max_evaluations=8, cache=cache, interactive=True)
    import ipywidgets
    assert isinstance(box, ipywidgets.VBox)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["p", "lambda"] and sliders[0].value == 0.002
    assert cache[(0.002, 4)] is first                         # reused, not run again
    # another setting starts from the same RTN codes (not from the previous run's best)
    es_explorer(ev, start=start, p=0.02, lam=2, max_evaluations=8, cache=cache, interactive=False)
    fresh = run_es(make(tiny_vgg, rtn2, digits), ESConfig(p=0.02, lam=2, max_evaluations=8, mutation="residual",
                                                           adapt="none", seed=0), progress=False)
    assert [h["best"] for h in cache[(0.02, 2)].history] == pytest.approx([h["best"] for h in fresh.history])
    with pytest.raises(ValueError, match="choices"):
        es_explorer(ev, p=0.003, interactive=False)
    with pytest.raises(ValueError, match="lam"):
        es_explorer(ev, lam=0, interactive=False)
