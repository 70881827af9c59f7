"""The local evaluators' benchmark scores identical candidate sets: the quadratic form, the sparse output
patch and the dense layer re-run agree on every change of error (the rates it prints are measured, not
asserted)."""
from qevo_lite.bench import LOCAL_VARIANTS, bench_local, format_bench_local


def test_local_evaluators_agree_on_identical_candidates():
    r = bench_local("vgg_small", bits=2, samples=16, candidates=300, slow_candidates=12)
    assert set(r["variants"]) == set(LOCAL_VARIANTS)
    assert all(d <= 1e-5 for d in r["max_rel_diff"].values()), r["max_rel_diff"]
    assert all(v["evals_per_s"] > 0 for v in r["variants"].values())
    assert "quadratic form (H, G)" in format_bench_local([r])
