"""Seed summaries, the checks of the claims, and the Markdown tables of any task.

A *row* summarises one (arch, bits) over the seeds: the FP32 and RTN numbers (the same for every
seed) and the seed mean and sample std (``<key>_std``) of every ES number. ``noise`` is the
seed-to-seed std of the ES's held-out headline metric (the data split and RTN are fixed, so it
measures the ES's own randomness).
"""
from __future__ import annotations

from ..core.stats import mean_std
from ..methods import label_of
from ..viz.experiment_plots import MethodPoint
from .curves import curve_targets
from .records import Outcome, fp32_outcome, local_value, method_outcomes, rtn_outcomes

# cell keys that are the same for every seed of an (arch, bits) row
_FIXED_PREFIXES = ("fp32_", "rtn_")
# cell keys averaged over the seeds (and ``<peer>_`` for each peer the cell lists in ``peers``)
_ES_PREFIXES = ("es_", "local_", "gain_", "search_gain_")
_ES_KEYS = ("evaluations", "global_evaluations", "wall_seconds", "global_seconds")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarize_cells(cells: dict, task) -> list[dict]:
    """One row per (arch, bits), in the order the cells come (arch first), bits ascending."""
    groups: dict = {}
    for c in cells.values():
        if c.get("task") == task.name:
            groups.setdefault((c["arch"], c["bits"]), []).append(c)
    archs = list(dict.fromkeys(a for a, _ in groups))
    head = task.metrics[0].key
    rows = []
    for (arch, bits), cs in sorted(groups.items(), key=lambda kv: (archs.index(kv[0][0]), kv[0][1])):
        cs = sorted(cs, key=lambda c: c["seed"])
        c0 = cs[0]
        row = {k: v for k, v in c0.items() if k.startswith(_FIXED_PREFIXES) and (_number(v) or k.endswith("_rule"))}
        row.update(task=task.name, arch=arch, dataset=c0["dataset"], bits=bits, seeds=[c["seed"] for c in cs],
                   granularity=c0["settings"]["granularity"], es_run=all(c["es_run"] for c in cs))
        if not row["es_run"]:
            row["es_skipped_reason"] = c0.get("es_skipped_reason")
            rows.append(row)
            continue
        row["peers"] = list(c0.get("peers", []))
        row["second_stage"] = c0.get("second_stage", "global")
        prefixes = _ES_PREFIXES + tuple(f"{peer}_" for peer in row["peers"])
        keys = [k for k, v in c0.items() if _number(v) and (k.startswith(prefixes) or k in _ES_KEYS)]
        for k in keys:
            row[k], row[k + "_std"] = mean_std(c[k] for c in cs)
        row["moved_share"], row["moved_share_std"] = mean_std(c["moved"]["share"] for c in cs)
        gaps = [c["gap_recovered"] for c in cs if c["gap_recovered"] is not None]
        row["gap_recovered"], row["gap_recovered_std"] = mean_std(gaps) if gaps else (None, None)
        row["noise"] = row[f"es_test_{head}_std"]
        row["within_noise"] = row[f"gain_{head}"] >= -row["noise"]
        row["es_better_every_seed"] = all(c[f"gain_{head}"] > 0 for c in cs)
        rows.append(row)
    return rows


def rtn_cost(row: dict, task) -> float:
    """What RTN costs on the held-out headline metric (points, or percent for lower-is-better)."""
    m = task.metrics[0]
    return m.cost(row[f"rtn_test_{m.key}"], row[f"fp32_test_{m.key}"])


def checks(rows: list[dict], task, target: float = 0.5) -> dict:
    """The claims per architecture: at the lowest bit width where RTN costs at least ``task.hurt`` on the
    held-out headline metric and the ES ran, how much of the RTN->FP32 gap does the ES recover (seed
    mean; target ``target``)? At every bit width with an ES run, is the ES's held-out headline metric
    within noise of RTN's or better, and better in every seed?"""
    out = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        rs = [r for r in rows if r["arch"] == arch]
        lossy = [r for r in rs if r["es_run"] and rtn_cost(r, task) >= task.hurt]
        low = min(lossy, key=lambda r: r["bits"]) if lossy else None
        ran = [r for r in rs if r["es_run"]]
        out[arch] = {"target_bits": low["bits"] if low else None,
                     "rtn_cost": rtn_cost(low, task) if low else None,
                     "gap_recovered": low["gap_recovered"] if low else None,
                     "target": target,
                     "target_met": bool(low and low["gap_recovered"] is not None and low["gap_recovered"] >= target),
                     "es_within_noise_of_rtn_or_above": all(r["within_noise"] for r in ran),
                     "es_better_every_seed": all(r["es_better_every_seed"] for r in ran)}
    return out


def _row(cells: list) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[dict], task, timing: bool = True) -> str:
    """The held-out table: one line per (model, bits, method): FP32, RTN on each grid, the ES from RTN (local +
    global), and each rounding peer (GPTQ, AdaRound) followed by the ES started from its codes; mean ± std over
    the seeds. Wall time: end to end from the RTN state (an ES from a peer's codes includes the peer's time).
    ``timing=False`` leaves out the wall time (for outputs that must be deterministic)."""
    ms, head = task.metrics, task.metrics[0]
    cols = (["model", "bits", "method"] + [f"test {m.label}" for m in ms] + [f"search {head.label}",
            f"gain vs RTN ({head.cost_unit})", "gap recovered", "evaluations (local + global)"]
            + (["wall time (s)"] if timing else []) + ["weights moved", "seeds"])
    lines = [_row(cols), "|" + "---|" * len(cols)]
    blank = ["-"] * (3 + (1 if timing else 0))

    def fixed(r, o: Outcome, bits):
        return [r["arch"], bits, o.label] + [m.fmt(o.value(m)) for m in ms] + [head.fmt(o.value(head, "search"))] + \
            blank + ["-", "-"]

    for i, r in enumerate(rows):
        if i == 0 or rows[i - 1]["arch"] != r["arch"]:
            lines.append(_row(fixed(r, fp32_outcome(r), "32")))
        for o in rtn_outcomes(r):
            lines.append(_row(fixed(r, o, f"W{r['bits']}")))
        rtn = r[f"rtn_test_{head.key}"]
        fp32_gap = head.improvement(r[f"fp32_test_{head.key}"], rtn)
        for o in method_outcomes(r):
            lines.append(_row(_method_cells(r, o, ms, rtn, fp32_gap, timing)))
    return "\n".join(lines)


def _method_cells(r: dict, o: Outcome, ms, rtn: float, fp32_gap: float, timing: bool) -> list[str]:
    """The table cells of method ``o`` of row ``r`` (``rtn``: RTN's held-out headline metric; ``fp32_gap``: FP32's
    improvement over it)."""
    head = ms[0]
    mean, std = o.value(head), o.std(head)
    gain = head.improvement(mean, rtn)
    gain_txt = (f"{head.scale * gain:+.{head.digits}f}" + (f" ± {head.scale * std:.{head.digits}f}" if std else "")
                if head.higher_is_better else f"{100 * gain / rtn:+.1f}%")
    cells = [r["arch"], f"W{r['bits']}", o.label]
    cells += [m.fmt(o.value(m), o.std(m)) for m in ms]
    cells += [head.fmt(o.value(head, "search"), o.std(head, "search")), gain_txt,
              f"{100 * gain / fp32_gap:.0f}%" if fp32_gap > 0 else "-", o.evaluations or "-"]
    cells += [f"{o.seconds:.0f}"] if timing else []
    cells += [o.moved or "-", ",".join(str(s) for s in r["seeds"])]
    return cells


def peer_targets(rows: list[dict], task) -> list[dict]:
    """The peers issue's targets at every (model, bits) where RTN costs at least ``task.hurt`` and the ES and
    the peers ran: (i) read as on the budget curves (:func:`~qevo_lite.experiment.curves.curve_targets`, each
    method one point here): the ES from RTN reaches every peer's held-out headline metric in at most half that
    peer's wall time (``reaches``) and beats the best peer (``peer``: the one of best held-out headline metric) by
    more than the larger seed std (``beats``); ``met`` when both hold; (ii) the global stage adds a held-out gain
    beyond the seed std on top of the local stage (where the local stage's held-out number was measured and the global
    stage ran: ``global_off`` where it did not, the default); (iii) the
    ES from each peer's codes against that peer (where it ran; ``set_aside``: in how many seeds its
    ``gate_local`` set the local stage aside)."""
    head, out = task.metrics[0], []
    for r in rows:
        if not r["es_run"] or not r.get("peers") or rtn_cost(r, task) < task.hurt:
            continue
        found = {o.prefix: o for o in method_outcomes(r)}
        es = found["es"]
        best = max(r["peers"], key=lambda p: head.improvement(found[p].value(head), 0.0))
        peer = found[best]
        point = lambda o: MethodPoint(o.label, o.seconds, o.value(head), o.std(head) or 0.0, o.kind, budget="profile")
        read = curve_targets([point(es)] + [point(found[p]) for p in r["peers"]], head, es.label)
        local = local_value(r, head) if r.get("global_evaluations") else None   # no global stage: nothing to add
        one_seed = es.std(head) is None          # a single seed has no std: nothing to decide against
        reaches = all(b["met"] for b in read["budgets"])
        beats = read["best"]["met"]
        t = {"arch": r["arch"], "bits": r["bits"], "peer": best, "margin": read["best"]["margin"],
             "std": None if one_seed else read["best"]["std"], "time_ratio": es.seconds / peer.seconds,
             "reaches": reaches, "beats": None if one_seed else beats, "global_off": not r.get("global_evaluations"),
             "second": r.get("second_stage", "global"),
             "met": None if one_seed else reaches and beats,
             "global_gain": None if local is None else head.improvement(es.value(head), local),
             "peers": {p: head.improvement(found[f"es_{p}"].value(head), found[p].value(head))
                       for p in r["peers"] if f"es_{p}" in found},
             "set_aside": {p: round((1 - r[f"es_{p}_local_kept"]) * len(r["seeds"])) for p in r["peers"]
                           if r.get(f"es_{p}_local_kept") is not None}, "seeds": len(r["seeds"])}
        t["global_beyond_noise"] = None if local is None or one_seed else t["global_gain"] > es.std(head)
        out.append(t)
    return out


def peer_targets_markdown(targets: list[dict], task) -> list[str]:
    """:func:`peer_targets` as Markdown bullet lines (numbers in the headline metric's table units)."""
    head = task.metrics[0]
    unit = (lambda v: f"{head.scale * v:+.{head.digits}f}") if head.higher_is_better else \
        (lambda v: f"{head.scale * v:+.{head.digits + 2}f}")
    lines = []
    for t in targets:
        verdict = ("not decided (one seed)" if t["met"] is None else "met" if t["met"] else
                   f"not met (reaches every peer in at most half its time: {'yes' if t['reaches'] else 'no'}; "
                   f"beats the best by more than the std: {'yes' if t['beats'] else 'no'})")
        noise = ("one seed" if t["global_beyond_noise"] is None else
                 f"{'beyond' if t['global_beyond_noise'] else 'within'} the seed std")
        glob = "not measured" if t["global_gain"] is None else f"{unit(t['global_gain'])} ({noise})"
        glob = "off" if t["global_off"] else glob
        std = "one seed" if t["std"] is None else f"larger seed std {head.scale * t['std']:.{head.digits + 1}f}"
        aside = lambda p: (f" (local stage set aside in {t['set_aside'][p]} of {t['seeds']} seeds)"   # noqa: E731
                           if t.get("set_aside", {}).get(p) else "")
        peers = "".join(f"; ES from {label_of(p)} vs {label_of(p)} {unit(v)}{aside(p)}" for p, v in t["peers"].items())
        best = label_of(t["peer"])
        lines.append(f"- {t['arch']} W{t['bits']}: ES from RTN vs the best peer ({best}) {unit(t['margin'])} ({std}) "
                     f"in {100 * t['time_ratio']:.0f}% of {best}'s wall time: target (i) {verdict}; "
                     f"{t.get('second', 'global')} stage over local: {glob}{peers}.")
    return lines


def _amount(value: float, unit: str) -> str:
    return f"{value:.1f}%" if unit == "%" else f"{value:.1f} {unit}"


def checks_markdown(results: dict, task) -> list[str]:
    """The checks as Markdown bullet lines."""
    head, lines = task.metrics[0], []
    for arch, c in results["checks"].items():
        if c["target_bits"] is None:
            lines.append(f"- {arch}: RTN never costs {_amount(task.hurt, head.cost_unit)} of held-out {head.label} "
                         "at the bit widths where the ES ran.")
            continue
        lines.append(f"- {arch}: lowest bit width where RTN costs >= {_amount(task.hurt, head.cost_unit)} of held-out "
                     f"{head.label}: W{c['target_bits']} ({_amount(c['rtn_cost'], head.cost_unit)}); the ES recovers "
                     f"{100 * c['gap_recovered']:.0f}% of the RTN->FP32 gap (target {100 * c['target']:.0f}%: "
                     f"{'met' if c['target_met'] else 'not met'}); ES within seed noise of RTN or better at every "
                     f"ES bit width: {'yes' if c['es_within_noise_of_rtn_or_above'] else 'no'}; better in every "
                     f"seed: {'yes' if c['es_better_every_seed'] else 'no'}.")
    return lines


def results_markdown(results: dict, task, timing: bool = True) -> str:
    """The task's ``results.md`` section: heading, how the numbers were made, table, checks, the
    task's extra studies and the figures (links relative to the task's folder)."""
    p = results["profile"]
    lines = [f"## {task.title} (profile `{p['name']}`)", "", task.describe(results), "",
             markdown_table(results["summary"], task, timing), ""]
    lines += checks_markdown(results, task)
    targets = peer_targets(results["summary"], task)
    if targets:
        lines += ["", "Against the peers (positive = the ES is better; wall times end to end from the RTN state, "
                  "same machine and threads):", ""] + peer_targets_markdown(targets, task)
    lines += ["", "Noise: the seed-to-seed sample std of the ES's held-out result at that bit width (the data "
              "split and RTN are fixed, so it measures the ES's randomness).", ""]
    extra = task.extra_markdown(results)
    if extra:
        lines += [extra, ""]
    for f in results.get("figures", []):
        lines.append(f"![{f.removesuffix('.png').replace('_', ' ')}]({f})")
    return "\n".join(lines) + "\n"
