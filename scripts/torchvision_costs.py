"""Time and peak memory of each rounding method on torchvision models at 224 x 224 (``qv.quantize``).

Each (model, method) runs in its own process, so its peak resident memory (``ru_maxrss`` of that process,
model and images included) is its own; the time is ``qv.quantize``'s (RTN's scale-rule choice + the method, without the report's evaluations).
Untrained weights with batch-norm statistics from the images (offline); generated smooth random images unless
``--data`` names an ImageFolder. The output error to the float model is reported on the calibration images and on
as many held-out ones.

    python scripts/torchvision_costs.py --models resnet18,mobilenet_v2 --methods rtn,gptq,adaround,es --images 16

``--stream``: the images come as a DataLoader (32 a batch) over a dataset that makes each image when asked, so
no calibration tensor exists and ``qv.quantize`` streams them (batch-norm statistics then come from the first
32 images); ``--budget 0`` leaves out the ES's global stage, which holds its images in memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


class GeneratedImages:
    """Image ``i`` (3, side, side) made on request: 8 x 8 noise from seed ``i``, upsampled (a torch Dataset)."""

    def __init__(self, n: int, side: int, first: int = 0):
        self.n, self.side, self.first = n, side, first

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch
        g = torch.Generator().manual_seed(self.first + i)
        noise = torch.randn(1, 3, 8, 8, generator=g)
        return torch.nn.functional.interpolate(noise, size=self.side, mode="bilinear")[0]


def child(model_name: str, method: str, images: int, side: int, threads: int, steps: int, generations: int,
          data: str | None, stream: bool = False, budget: int = 8) -> dict:
    """One measurement, in this process."""
    import torch
    from torch.utils.data import DataLoader
    import qevo_lite as qv
    from qevo_lite.torchvision_models import batchnorm_statistics_from, image_folder, torchvision_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision_model(model_name)
    if stream:
        x = torch.stack([GeneratedImages(32, side)[i] for i in range(32)])
    elif data:
        folder = image_folder(data, side, limit=2 * images)
        x = torch.stack([folder[i][0] for i in range(len(folder))])
    else:   # smooth random fields: 8 x 8 noise upsampled, the scale of normalised photos
        x = torch.nn.functional.interpolate(torch.randn(2 * images, 3, 8, 8), size=side, mode="bilinear")
    batchnorm_statistics_from(model, x[:images])
    fit, held_out = x[:images], x[images:]
    if stream:
        fit = DataLoader(GeneratedImages(images, side), batch_size=32)
        held_out = DataLoader(GeneratedImages(images, side, first=images), batch_size=32)
    config = {"rtn": "rtn", "gptq": qv.methods.GPTQConfig(samples=images, damp=0.01),
              "adaround": qv.methods.AdaRoundConfig(steps=steps, lr=0.1, reduction="mean"),
              "es": qv.methods.EvolutionConfig(qv.methods.QuadraticLocal(samples=images, generations=generations),
                                               qv.methods.GlobalStage(budget=budget))}[method]
    t0 = time.perf_counter()
    _, report = qv.quantize(model, fit, bits=4, method=config, test=held_out, samples=images, budget=budget,
                            progress=False)
    return {"model": model_name, "method": method, "images": images, "side": side, "threads": threads,
            "seconds_total": time.perf_counter() - t0, "seconds_method": report.seconds,
            "weights": report.weights, "fit_mse": report.search["loss"], "held_out_mse": report.test["loss"],
            "rtn_fit_mse": report.rtn_search["loss"], "rtn_held_out_mse": report.rtn_test["loss"],
            "adaround_steps": steps if method == "adaround" else None,
            "es_generations": generations if method == "es" else None, "streamed": stream, "es_budget": budget,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}   # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--methods", default="rtn,gptq,adaround,es")
    ap.add_argument("--images", type=int, default=16, help="calibration images (as many again held out)")
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="AdaRound's Adam steps per layer")
    ap.add_argument("--generations", type=int, default=40, help="the ES local stage's generations per layer")
    ap.add_argument("--data", default=None, help="an ImageFolder instead of generated images")
    ap.add_argument("--stream", action="store_true", help="images from a DataLoader made on request (streamed)")
    ap.add_argument("--budget", type=int, default=8, help="the ES global stage's evaluations (0: none)")
    ap.add_argument("--out", default="results/torchvision_costs.jsonl")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.models, args.methods, args.images, args.side, args.threads, args.steps,
                               args.generations, args.data, args.stream, args.budget)))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print("| model | method | weights | seconds | peak memory (GiB) | MSE to FP32, calibration | held-out | RTN held-out |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--child", "--models", model, "--methods", method, "--images",
                   str(args.images), "--side", str(args.side), "--threads", str(args.threads), "--steps",
                   str(args.steps), "--generations", str(args.generations), "--budget", str(args.budget)]
            cmd += (["--data", args.data] if args.data else []) + (["--stream"] if args.stream else [])
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                print(f"| {model} | {method} | failed: {run.stderr.strip().splitlines()[-1][:120]} |", flush=True)
                continue
            row = json.loads(run.stdout.strip().splitlines()[-1])
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"| {model} | {method} | {row['weights']:,} | {row['seconds_method']:.0f} | {row['peak_rss_gib']:.2f} | "
                  f"{row['fit_mse']:.3g} | {row['held_out_mse']:.3g} | {row['rtn_held_out_mse']:.3g} |", flush=True)


if __name__ == "__main__":
    main()
