"""GPU check of the engine (run on a CUDA machine): device placement, evaluator equivalence on the GPU,
evaluations/s of naive vs incremental evaluation and of chunk sizes, layer-wise ES, and a full-profile
model (VGG-11 on 3x32x32 inputs) in the incremental evaluator; ``qv.quantize`` with every method from a
DataLoader with the model on the GPU.

    python scripts/gpu_check.py [DIR_WITH_FASHION_MNIST_GZ]

Prints a report; exits non-zero if a check fails.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import qevo_lite.core.data as data  # noqa: E402
from qevo_lite import fold_batchnorm, load_pretrained, load_splits, quantize_model, build_model, evaluate  # noqa: E402
from qevo_lite.quant.rtn import best_rtn  # noqa: E402
from qevo_lite.core.data import Split  # noqa: E402
from qevo_lite.es.engine import ESConfig, run_es  # noqa: E402
from qevo_lite.evaluators.full import FullEvaluator  # noqa: E402
from qevo_lite.evaluators.incremental import IncrementalEvaluator  # noqa: E402
from qevo_lite.es.stages import run_layerwise  # noqa: E402

assert torch.cuda.is_available(), "no CUDA device"
dev = torch.device("cuda")
print(torch.__version__, torch.cuda.get_device_name(0))
if len(sys.argv) > 1:
    data.DEBIAN_FASHION_MNIST = Path(sys.argv[1])
splits = load_splits("fashion_mnist", search_size=2048)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


for arch in ("vgg_small", "resnet_small"):
    model, entry = load_pretrained(arch, train_if_missing=False)
    fmodel = fold_batchnorm(model).to(dev)
    fp32 = evaluate(fmodel, splits.test)["accuracy"]
    check(abs(fp32 - entry["fp32_test_accuracy"]) < 2e-3, f"{arch}: FP32 test accuracy on GPU {fp32:.4f} "
          f"matches the manifest's {entry['fp32_test_accuracy']}")
    rtn = best_rtn(fmodel, splits.search, 2)
    check(all(lq.codes.device.type == "cpu" for lq in rtn.state.layers.values()), f"{arch}: codes stay on the CPU")
    runs = {}
    for name, cls, chunk, early in (("naive/256", FullEvaluator, 256, False), ("incremental/256", IncrementalEvaluator, 256, False),
                                    ("naive/2048", FullEvaluator, 2048, False), ("incremental/2048", IncrementalEvaluator, 2048, False),
                                    ("incremental+ER/256", IncrementalEvaluator, 256, True)):
        ev = cls(fold_batchnorm(model).to(dev), rtn.state, splits.search, chunk_size=chunk)
        check(all(p.device.type == "cuda" for p in ev.model.parameters()), f"{arch} {name}: model on the GPU")
        cfg = ESConfig(max_generations=20, lam=8, seed=0, early_reject=early)
        run_es(ev, ESConfig(max_generations=1, lam=2, seed=1), progress=False)  # warm-up
        ev = cls(fold_batchnorm(model).to(dev), rtn.state, splits.search, chunk_size=chunk)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = run_es(ev, cfg, progress=False)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        runs[name] = res
        print(f"     {arch} {name:>20}: {res.evaluations / dt:7.1f} evals/s, best search loss {res.best_eval.fitness:.4f}")
    for chunk in ("256", "2048"):
        a, b = runs[f"naive/{chunk}"], runs[f"incremental/{chunk}"]
        same = all(torch.equal(a.best[n], b.best[n]) for n in a.best) and \
            [h["accepted"] for h in a.history] == [h["accepted"] for h in b.history]
        check(same, f"{arch}: naive and incremental give the same trajectory on the GPU (chunk {chunk})")
    t0 = time.perf_counter()
    codes, log = run_layerwise(fmodel, rtn.state, splits.search, ESConfig(max_evaluations=400, lam=8, p=0.002),
                               samples=256, progress=False)
    dt = time.perf_counter() - t0
    acc = evaluate(rtn.state.with_codes(codes).to_model(fmodel), splits.test)["accuracy"]
    rtn_acc = evaluate(rtn.state.to_model(fmodel), splits.test)["accuracy"]
    print(f"     {arch}: layer-wise ES on the GPU, {sum(l['evaluations'] for l in log)} evals in {dt:.1f} s; "
          f"test accuracy RTN {rtn_acc:.4f} -> {acc:.4f}")
    check(acc > rtn_acc, f"{arch}: layer-wise ES beats RTN on held-out data on the GPU")

# qv.quantize with the model on the GPU and the data as a DataLoader (streamed): every method runs there and
# beats RTN on held-out images
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
import qevo_lite as qv  # noqa: E402
model, _ = load_pretrained("vgg_small", train_if_missing=False)
loader = DataLoader(TensorDataset(splits.search.x[:512], splits.search.y[:512]), batch_size=64)
held_out = (splits.test.x[:2000], splits.test.y[:2000])
for method in qv.methods.method_names():
    if method == "rtn":
        continue
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    _, report = qv.quantize(model.to(dev), loader, bits=2, method=method, test=held_out, samples=256, progress=False)
    print(f"     qv.quantize vgg_small W2 {method} on the GPU from a DataLoader: {time.perf_counter() - t0:.1f} s, "
          f"held-out accuracy RTN {report.rtn_test['accuracy']:.4f} -> {report.test['accuracy']:.4f}, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    check(report.test["accuracy"] > report.rtn_test["accuracy"], f"qv.quantize {method} on the GPU beats RTN")

# full-profile model: VGG-11 on 3x32x32 (random weights and images: placement, memory and speed only)
torch.manual_seed(0)
vgg11 = fold_batchnorm(build_model("vgg11", 3, 10).eval()).to(dev)
state = quantize_model(vgg11, bits=4)
fake = Split(torch.randn(2048, 3, 32, 32), torch.randint(0, 10, (2048,)))
for name, cls in (("naive", FullEvaluator), ("incremental", IncrementalEvaluator)):
    ev = cls(vgg11, state, fake, chunk_size=512)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = run_es(ev, ESConfig(max_generations=10, lam=8, seed=0), progress=False)
    torch.cuda.synchronize()
    print(f"     vgg11 {name}: {res.evaluations / (time.perf_counter() - t0):.1f} evals/s, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
print("FAILED: " + "; ".join(failures) if failures else "all GPU checks passed")
sys.exit(1 if failures else 0)
