import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from qevo_lite import QuantConfig, evaluate, quantize_model  # noqa: E402
from qevo_lite.quant.flips import apply_flips, boundary_candidates, random_boundary_flips  # noqa: E402
from qevo_lite.viz.quant_plots import (grid_levels, plot_rtn_vs_bits, plot_flip_experiment,  # noqa: E402
                             plot_residuals, plot_weight_histogram)
from qevo_lite.viz.widgets import bit_width_explorer  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labelled(fig):
    assert isinstance(fig, Figure) and fig.axes
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    return ax


def fake_rows():
    rows = []
    for g in ("per_channel", "per_tensor"):
        for bits in (2, 4, 8):
            for i, rule in enumerate(("maxabs_full", "maxabs_narrow", "mse")):
                rows.append({"bits": bits, "granularity": g, "scale_rule": rule, "search_loss": 1.0 - bits / 10,
                             "search_accuracy": 0.5 + bits / 20, "test_accuracy": 0.4 + bits / 20 + i / 100,
                             "chosen": i == 0})
    return rows


def test_accuracy_vs_bits(tmp_path):
    path = tmp_path / "figs" / "acc.png"
    fig = plot_rtn_vs_bits(fake_rows(), fp32_accuracy=0.9, title="demo", path=path)
    ax = labelled(fig)
    assert ax.get_title() == "demo" and "bit" in ax.get_xlabel() and "%" in ax.get_ylabel()
    lines = ax.get_lines()
    assert len(lines) == 6 + 1  # one per (granularity, rule) + FP32
    fp32 = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(fp32) == 1 and fp32[0].get_ydata()[0] == pytest.approx(90.0)
    first = lines[0]
    assert list(first.get_xdata()) == [2, 4, 8] and first.get_ydata()[0] == pytest.approx(50.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_rtn_vs_bits([])


def test_weight_histogram_draws_every_grid_level(tiny_vgg):
    lq = quantize_model(tiny_vgg, bits=3, granularity="per_tensor").layers["features.3.0"]
    ax = labelled(plot_weight_histogram(lq))
    vlines = [ln for ln in ax.get_lines()]
    assert len(vlines) == lq.qmax - lq.qmin + 1 == 8
    assert sorted(ln.get_xdata()[0] for ln in vlines) == pytest.approx(grid_levels(lq).tolist())

    pc = quantize_model(tiny_vgg, bits=2, granularity="per_channel", scale_rule="maxabs_narrow").layers["features.3.0"]
    fig, axes = plt.subplots(1, 2)
    assert plot_weight_histogram(pc, ax=axes[1], channel=5) is fig
    levels = grid_levels(pc, channel=5)
    assert levels.tolist() == pytest.approx([-float(pc.scale[5]), 0.0, float(pc.scale[5])])
    assert len(axes[1].get_lines()) == 3 and axes[1].get_xlabel()
    with pytest.raises(ValueError, match="channel"):
        plot_weight_histogram(pc, channel=pc.codes.shape[0])


def test_residuals_and_flip_plots(tiny_vgg, tmp_path):
    state = quantize_model(tiny_vgg, bits=4)
    ax = labelled(plot_residuals(state, path=tmp_path / "r.png"))
    assert "step" in ax.get_xlabel()
    counts = sum(p.get_height() for p in ax.patches)
    assert counts == state.num_weights  # every weight of every layer is in the histogram
    assert (tmp_path / "r.png").exists()

    deltas = torch.tensor([0.0, 0.01, -0.02, 0.01, 0.0])
    ax = labelled(plot_flip_experiment(deltas, n_flips=4))
    assert sum(p.get_height() for p in ax.patches) == 5
    assert "percentage points" in ax.get_xlabel()


def test_bit_width_explorer_static_and_interactive(tiny_vgg, digits):
    fig = bit_width_explorer(tiny_vgg, digits.search, bits=3, n_eval=64, interactive=False)
    ax = labelled(fig)
    assert "W3 symmetric per-channel maxabs_full" in ax.get_title()
    # without a Jupyter kernel the default is the static figure too
    assert isinstance(bit_width_explorer(tiny_vgg, digits.search, n_eval=64), Figure)

    import ipywidgets as widgets
    box = bit_width_explorer(tiny_vgg, digits.search, bits=4, n_eval=64, interactive=True)
    assert isinstance(box, widgets.VBox)
    slider, gran, rule = box.children[0].children
    assert isinstance(slider, widgets.IntSlider) and (slider.min, slider.max, slider.value) == (2, 8, 4)
    assert isinstance(gran, widgets.Dropdown) and isinstance(rule, widgets.Dropdown)
    assert set(rule.options) == {"maxabs_full", "maxabs_narrow", "mse"}
    with pytest.raises(ValueError):
        bit_width_explorer(tiny_vgg, digits.search, bits=9, interactive=False)


def test_boundary_candidates_are_near_the_boundary_and_movable(tiny_vgg):
    state = quantize_model(tiny_vgg, bits=2)  # maxabs_full clips: some moves would leave the grid
    for name, idx, target in boundary_candidates(state, near=0.1):
        lq = state.layers[name]
        r = lq.residual().reshape(-1)[idx]
        assert torch.all((r.abs() - 0.5).abs() <= 0.1 + 1e-6)
        assert torch.all((target >= lq.qmin) & (target <= lq.qmax))
        assert torch.all((target.int() - lq.codes.reshape(-1)[idx].int()).abs() == 1)


def test_random_boundary_flips_deterministic_exact_and_restoring(tiny_vgg, digits):
    state = quantize_model(tiny_vgg, QuantConfig(3))
    before = {k: v.clone() for k, v in tiny_vgg.state_dict().items()}
    codes_before = {n: lq.codes.clone() for n, lq in state.layers.items()}
    kwargs = dict(n_trials=6, n_flips=5, seed=7, subset=128)
    d1, flips = random_boundary_flips(tiny_vgg, state, digits.search, return_flips=True, **kwargs)
    d2 = random_boundary_flips(tiny_vgg, state, digits.search, **kwargs)
    assert torch.equal(d1, d2) and d1.shape == (6,)
    _, other = random_boundary_flips(tiny_vgg, state, digits.search, return_flips=True, **{**kwargs, "seed": 8})
    assert other != flips
    # the float model and the state are exactly as they were
    assert all(torch.equal(before[k], v) for k, v in tiny_vgg.state_dict().items())
    assert all(torch.equal(codes_before[n], lq.codes) for n, lq in state.layers.items())
    # each trial is undone before the next: rebuilding any trial from scratch gives the same change
    subset = digits.search.subset(128)
    base = evaluate(state.to_model(tiny_vgg), subset)["accuracy"]
    for t in (0, 5):
        assert len(set(flips[t])) == 5
        trial = state.clone()
        for name, i in flips[t]:
            lq = trial.layers[name]
            lq.codes.view(-1)[i] += int(torch.sign(lq.residual().reshape(-1)[i]))
        assert sum(trial.moved(state).values()) == 5
        assert trial.moved(apply_flips(state, flips[t])) == {n: 0 for n in state.layers}
        acc = evaluate(trial.to_model(tiny_vgg), subset)["accuracy"]
        assert d1[t].item() == pytest.approx(acc - base, abs=1e-6)
    with pytest.raises(ValueError, match="fewer than n_flips"):
        random_boundary_flips(tiny_vgg, state, digits.search, n_trials=1, n_flips=10**7)


def test_methods_vs_time_draws_every_method_and_the_pareto_front():
    from qevo_lite.experiment.task import Metric
    from qevo_lite.experiment.records import method_points
    from qevo_lite.viz.experiment_plots import plot_methods_vs_time
    row = {"es_run": True, "peers": ["gptq", "adaround"], "rtn_rule": "mse", "local_evaluations": 100,
           "global_evaluations": 64, "moved_share": 0.01, "es_gptq_moved_share": 0.02, "es_adaround_moved_share": 0.02,
           "rtn_test_accuracy": 0.5, "es_test_accuracy": 0.8, "es_test_accuracy_std": 0.01, "wall_seconds": 10.0,
           "gptq_seconds": 5.0, "gptq_test_accuracy": 0.7, "es_gptq_seconds": 10.0, "es_gptq_test_accuracy": 0.78,
           "adaround_seconds": 60.0, "adaround_test_accuracy": 0.85, "es_adaround_seconds": 10.0,
           "es_adaround_test_accuracy": 0.86}
    pts = method_points(row, Metric("accuracy", "accuracy (%)"))
    assert [p.label for p in pts] == ["RTN", "ES from RTN", "GPTQ", "ES from GPTQ", "AdaRound", "ES from AdaRound"]
    assert pts[3].seconds == 15.0                       # a peer's ES is timed from RTN: peer + ES
    fig = plot_methods_vs_time(pts, Metric("accuracy", "accuracy (%)"), "t")
    ax = fig.axes[0]
    front = ax.lines[-1]                                    # the step line: RTN, GPTQ, ES from RTN, AdaRound, ES from AdaRound
    assert list(front.get_ydata()) == pytest.approx([50, 70, 80, 85, 86])
    assert {t.get_text() for t in ax.texts} == {p.label for p in pts}
    plt.close(fig)


def test_methods_vs_time_puts_an_error_that_rounding_multiplies_on_a_log_scale():
    from qevo_lite.experiment.task import Metric
    from qevo_lite.viz.experiment_plots import MethodPoint, plot_methods_vs_time
    mse = Metric("mse", "MSE", higher_is_better=False, scale=1.0, digits=4)
    pts = [MethodPoint("RTN", 0.0, 1.52, kind="rtn"), MethodPoint("BRECQ", 24.0, 0.1069, 0.0005),
           MethodPoint("ES from RTN", 52.0, 0.1202, 0.0003, "es"), MethodPoint("ES from GPTQ", 56.0, 0.1212, kind="es")]
    fig = plot_methods_vs_time(pts, mse, "t")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    offsets = {t.get_text(): t.xyann[1] for t in ax.texts}
    assert offsets["ES from RTN"] != offsets["ES from GPTQ"]           # close on the log axis: stacked apart
    plt.close(fig)
    fig = plot_methods_vs_time(pts[1:], mse, "t")                       # no RTN: a narrow range stays linear
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)


def test_budget_curves_draw_one_line_per_method_through_its_budgets():
    from qevo_lite.experiment.task import Metric
    from qevo_lite.viz.experiment_plots import MethodPoint, plot_budget_curves
    pts = [MethodPoint("AdaRound", s, v, 0.01, budget=f"{b} steps") for b, s, v in ((250, 9.0, 0.88),
                                                                                  (1000, 35.0, 0.90), (4000, 140.0, 0.905))]
    pts += [MethodPoint("ES", s, v, None, "es", budget=f"{g:,}", unit="search images")
            for g, s, v in ((256, 6.0, 0.89), (1024, 12.0, 0.906))]
    fig = plot_budget_curves(pts, Metric("accuracy", "accuracy (%)"), 0.914, "t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    curves = [l for l in ax.lines if len(l.get_xdata()) > 1 and l.get_linestyle() == "-"]
    assert sorted(len(l.get_xdata()) for l in curves) == [2, 3]         # one line per method, through its budgets
    assert [l.get_ydata()[0] for l in ax.lines if l.get_linestyle() == "--"] == pytest.approx([91.4])   # FP32
    assert {t.get_text() for t in ax.texts} == {p.budget for p in pts}
    assert [t.get_text() for t in ax.get_legend().get_texts()][1:] == ["AdaRound", "ES (search images)"]
    plt.close(fig)


def test_budget_curves_reach_10000_steps_in_the_full_profile_only():
    # issue 19: AdaRound and block reconstruction at 10k+ steps in the full profile (a GPU), three budgets each,
    # and no more images than the profile's search split holds
    from conftest import load_script
    from qevo_lite.tasks import get_profile
    bc = load_script("budget_curves")
    for profile, top in (("demo", 4000), ("full", 10000)):
        prof = get_profile("classification", profile)
        budgets = {}
        for name, field, budget, config in bc.configs(prof):
            budgets.setdefault(name, []).append(budget)
            assert getattr(config.local if name == "es" else config, "samples" if name == "es" else field) == budget
        assert all(len(v) == 3 for v in budgets.values()), budgets
        assert max(budgets["adaround"]) == max(budgets["brecq"]) == top
        assert max(budgets["gptq"]) <= prof.data.search_size and max(budgets["es"]) <= prof.data.search_size
