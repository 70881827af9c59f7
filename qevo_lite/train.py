"""Short training loops for the pretrained models (the fast profile trains in about a minute on 2 cores)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .evaluate import evaluate


def train_classifier(model: nn.Module, train: Split, epochs: int = 3, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, val: Split | None = None,
                     device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """Train ``model`` in place with AdamW and a one-cycle schedule on cross-entropy.

    Returns a history: one dict per epoch with ``loss`` (mean training cross-entropy),
    ``seconds`` and, when ``val`` is given, ``val_accuracy``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    history, bar = [], tqdm(total=steps, desc=f"training {type(model).__name__}", disable=not progress)
    for epoch in range(epochs):
        t0, total, count = time.perf_counter(), 0.0, 0
        model.train()
        for idx in torch.randperm(len(train), generator=g).split(batch_size):
            x, y = train.x[idx].to(device), train.y[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.3f}")
        record = {"epoch": epoch + 1, "loss": total / count, "seconds": time.perf_counter() - t0}
        if val is not None:
            record["val_accuracy"] = evaluate(model, val)["accuracy"]
        history.append(record)
    bar.close()
    return history
