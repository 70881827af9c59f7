"""Short training loops for the pretrained models (the fast profile trains in about a minute on 2 cores)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .evaluate import evaluate, to_fast_layout


def train_loop(model: nn.Module, train: Split, loss_fn, epochs: int = 3, batch_size: int = 128,
               lr: float = 3e-3, weight_decay: float = 5e-4, seed: int = 0, device: torch.device | str = "cpu",
               progress: bool = True, fast_layout: bool = False, after_epoch=None) -> list[dict]:
    """Train ``model`` in place with AdamW and a one-cycle schedule: the loop every task shares.

    ``loss_fn(outputs, x, y) -> scalar`` gives the batch loss (e.g. cross-entropy on the labels ``y``,
    or a reconstruction MSE against the inputs ``x``). ``fast_layout``: feed channels_last batches.
    ``after_epoch(record)`` may add numbers to each epoch's record. Returns one dict per epoch:
    ``epoch``, ``loss`` (mean training loss) and ``seconds``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    if fast_layout:
        to_fast_layout(model)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    history, bar = [], tqdm(total=steps, desc=f"training {type(model).__name__}", disable=not progress)
    for epoch in range(epochs):
        t0, total, count = time.perf_counter(), 0.0, 0
        model.train()
        for idx in torch.randperm(len(train), generator=g).split(batch_size):
            x, y = train.x[idx].to(device), train.y[idx].to(device)
            if fast_layout:
                x = to_fast_layout(x)
            loss = loss_fn(model(x), x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.4f}")
        record = {"epoch": epoch + 1, "loss": total / count, "seconds": time.perf_counter() - t0}
        if after_epoch is not None:
            after_epoch(record)
        history.append(record)
    bar.close()
    return history


def train_classifier(model: nn.Module, train: Split, epochs: int = 3, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, val: Split | None = None,
                     device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """Train ``model`` in place on cross-entropy (:func:`train_loop`, weight decay 5e-4).

    Returns a history: one dict per epoch with ``loss`` (mean training cross-entropy),
    ``seconds`` and, when ``val`` is given, ``val_accuracy``.
    """
    def validate(record):
        record["val_accuracy"] = evaluate(model, val)["accuracy"]

    return train_loop(model, train, lambda out, x, y: F.cross_entropy(out, y), epochs, batch_size, lr,
                      seed=seed, device=device, progress=progress, after_epoch=validate if val is not None else None)
