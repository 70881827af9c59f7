"""The nearest-rounding (RTN) baseline: try every scale rule, keep the best one *on the search split*.

The ES is always compared with the strongest plain rounding, so the baseline's scale
rule is chosen by search-split loss (never by test accuracy); the test numbers are
reported next to it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.data import Split
from ..core.evaluate import evaluate
from .grid import SCALE_RULES, QuantConfig, QuantState, quantize_model


@dataclass
class RTNResult:
    """The chosen baseline: its state and config, plus every rule's search-split score."""

    state: QuantState
    config: QuantConfig
    scores: dict  # rule -> {"loss": ..., "accuracy": ...} on the search split


def best_rtn(model: nn.Module, search: Split, bits: int, granularity: str = "per_channel",
             scheme: str = "symmetric", rules=SCALE_RULES, score=None) -> RTNResult:
    """Quantize the (BN-folded) ``model`` with each scale rule and keep the lowest search-split loss.

    ``score``: ``(model, split) -> float`` loss for models that are not classifiers (e.g. a
    reconstruction MSE or a detection loss); default: the classification cross-entropy and accuracy
    of :func:`qevo_lite.core.evaluate.evaluate`. ``scores`` holds ``{rule: {"loss": ..., ...}}``."""
    best, scores = None, {}
    for rule in rules:
        cfg = QuantConfig(bits, scheme, granularity, rule)
        state = quantize_model(model, cfg)
        qmodel = state.to_model(model)
        scores[rule] = evaluate(qmodel, search) if score is None else {"loss": float(score(qmodel, search))}
        if best is None or scores[rule]["loss"] < scores[best[1].scale_rule]["loss"]:
            best = (state, cfg)
    return RTNResult(best[0], best[1], scores)


def rtn_table(model: nn.Module, search: Split, test: Split, bits_list=(2, 3, 4, 5, 6, 8),
              granularities=("per_channel", "per_tensor"), rules=SCALE_RULES) -> list[dict]:
    """Rows ``{bits, granularity, scale_rule, search_accuracy, test_accuracy, chosen}`` for every combination;
    ``chosen`` marks the rule that :func:`best_rtn` would pick (by search loss)."""
    rows = []
    for g in granularities:
        for bits in bits_list:
            choice = None
            for rule in rules:
                cfg = QuantConfig(bits, "symmetric", g, rule)
                qmodel = quantize_model(model, cfg).to_model(model)
                s, t = evaluate(qmodel, search), evaluate(qmodel, test)
                rows.append({"bits": bits, "granularity": g, "scale_rule": rule, "search_loss": s["loss"],
                             "search_accuracy": s["accuracy"], "test_accuracy": t["accuracy"], "chosen": False})
                if choice is None or s["loss"] < choice["search_loss"]:
                    choice = rows[-1]
            choice["chosen"] = True
    return rows
