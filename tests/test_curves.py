"""Budget curves: runs grouped into points, and target (i) read off the curves."""
import pytest

from qevo_lite.experiment.curves import curve_points, curve_targets, curve_targets_markdown
from qevo_lite.experiment.task import Metric
from qevo_lite.viz import MethodPoint

ACC = Metric("accuracy", "accuracy (%)")
MSE = Metric("mse", "MSE", higher_is_better=False, scale=1.0, digits=4)


def _run(method, budget, seed, seconds, value, key="accuracy", name="steps"):
    return {"method": method, "budget_name": name, "budget": budget, "seed": seed, "seconds": seconds,
            "test": {key: value}}


def test_runs_become_one_point_per_method_and_budget_with_seed_mean_and_std():
    runs = [_run("adaround", 250, s, 8.0 + s, v) for s, v in enumerate((0.90, 0.91, 0.92))]
    runs += [_run("es", 256, 0, 5.0, 0.905, name="images")]
    pts = curve_points(runs, ACC)
    assert [(p.label, p.budget, p.seeds, p.kind) for p in pts] == [("AdaRound", "250", 3, "peer"),
                                                                    ("ES", "256", 1, "es")]
    assert pts[0].value == pytest.approx(0.91) and pts[0].std == pytest.approx(0.01)
    assert pts[0].seconds == pytest.approx(9.0) and pts[1].std == 0.0
    assert pts[0].unit == "Adam steps per layer" and pts[1].unit == "search images"


def _pt(method, budget, seconds, value, std=0.002):
    return MethodPoint(method, seconds, value, std, "es" if method == "ES" else "peer", budget=budget)


def test_each_peer_budget_is_met_only_by_an_es_point_as_good_in_half_the_time():
    pts = [_pt("AdaRound", "250", 10.0, 0.900), _pt("AdaRound", "1,000", 40.0, 0.906),
           _pt("AdaRound", "4,000", 160.0, 0.910),
           _pt("ES", "64", 4.0, 0.895), _pt("ES", "256", 5.0, 0.904), _pt("ES", "1,024", 25.0, 0.907)]
    t = curve_targets(pts, ACC)
    by = {b["budget"]: b for b in t["budgets"]}
    assert by["250"]["es_budget"] == "256" and by["250"]["time_ratio"] == pytest.approx(0.5) and by["250"]["met"]
    assert by["1,000"]["es_budget"] == "1,024" and by["1,000"]["time_ratio"] == pytest.approx(25 / 40)
    assert not by["1,000"]["met"]                                                   # as good, but not in half
    assert by["4,000"]["es_budget"] is None and not by["4,000"]["met"]               # no ES point reaches 91.0
    assert t["best"]["peer"] == "AdaRound" and t["best"]["margin"] == pytest.approx(-0.003) and not t["best"]["met"]
    lines = curve_targets_markdown(t, ACC)
    assert lines[2].startswith("| AdaRound | 250") and "50%" in lines[2] and lines[2].endswith("| yes |")
    assert "not met" in lines[-1]


def test_lower_is_better_metrics_reverse_reaching_and_the_margin():
    pts = [_pt("BRECQ", "250", 30.0, 0.105, 0.001), _pt("ES", "256", 10.0, 0.100, 0.001),
           _pt("ES", "64", 5.0, 0.110, 0.001)]
    t = curve_targets(pts, MSE)
    assert t["budgets"][0]["es_budget"] == "256" and t["budgets"][0]["met"]            # 10 s <= 15 s, MSE lower
    assert t["best"]["margin"] == pytest.approx(0.005) and t["best"]["met"]
    with pytest.raises(ValueError, match="ES"):
        curve_targets([p for p in pts if p.label != "ES"], MSE)
