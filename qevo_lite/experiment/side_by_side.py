"""The rounding methods side by side, for the experiment notebooks (03-06): the package's default ES (the
quadratic local stage alone) next to the rounding peers (GPTQ, AdaRound, block reconstruction)
and the ES started from each peer's codes, on the data, models and RTN baselines of a context that has already run.

It is the same pipeline as ``qevo reproduce`` (:func:`~qevo_lite.experiment.cell_grid.run_grid`) with the task's
default profile's ES settings, cut to a few bit widths and seeds so that a notebook stays within minutes.
"""
from __future__ import annotations

from ..methods import get_method
from ..viz.experiment_plots import plot_methods_vs_time
from .context import Context
from .cell_grid import run_grid
from .records import method_outcomes, method_points
from .summary import markdown_table, peer_targets, peer_targets_markdown


def run_side_by_side(ctx: Context, bits, seeds=None, archs=None, base=None, peers=None, es_from_peers=None,
                     progress: bool = True) -> dict:
    """RTN, the rounding peers, the ES from RTN and (``es_from_peers``) the ES from each peer's codes at ``bits``
    (a sequence of bit widths) for ``archs`` (default: the profile's models) and ``seeds`` (default: ``ctx``'s).

    The ES and the peers take the settings of ``base`` (default: the task's profile of the same name in
    ``ctx.task.profiles``), so a notebook that walked a variant of the ES (e.g. its sampled local stage) shows
    here what ``qevo reproduce`` and the README report. ``peers``: names of ``base``'s peers to run, in
    this order (e.g. ``("gptq", "brecq")``; default: all of ``base``'s), at ``base``'s settings, or a registered
    method's config, run as given (e.g. a peer at another budget: ``replace(config, steps=250)``);
    ``es_from_peers``: default ``base``'s. Peers run only where the ES runs and RTN costs at least the task's
    ``hurt`` on the search split. Task studies (detection's fitness comparison) are left out
    (:meth:`Task.without_studies`). Returns :func:`~qevo_lite.experiment.cell_grid.run_grid`'s results
    (``summary`` rows carry the peers' columns). ValueError for a name that is not one of ``base``'s peers or a
    config of no registered method."""
    default = base if base is not None else ctx.task.profiles[ctx.profile.name]
    chosen = default.methods.peers
    if peers is not None:
        known = {get_method(c).name: c for c in chosen}
        unknown = [n for n in peers if isinstance(n, str) and n not in known]
        if unknown:
            raise ValueError(f"{unknown} not among the profile's peers {list(known)}; pick from those or pass a "
                             f"method's config.")
        chosen = tuple(known[p] if isinstance(p, str) else p for p in peers)
        for config in chosen:
            get_method(config)      # a config of no registered method: ValueError here, not mid-grid
    prof = ctx.task.without_studies(default.with_overrides(
        bits=tuple(bits), seeds=tuple(seeds) if seeds is not None else ctx.profile.grid.seeds, peers=chosen,
        es_from_peers=es_from_peers))
    return run_grid(ctx.with_profile(prof), archs=archs, progress=progress)


def side_by_side_markdown(results: dict, task) -> str:
    """The results table (one line per method, held-out metrics and wall time) and the peers issue's targets
    (i)-(iii) per (model, bits), as Markdown."""
    lines = [markdown_table(results["summary"], task), ""]
    lines += peer_targets_markdown(peer_targets(results["summary"], task), task) or [
        "- RTN costs less than the task's threshold on the search split here, so the peers did not run."]
    return "\n".join(lines)


def print_side_by_side(results: dict, task) -> None:
    """Each method's held-out headline metric (seed mean ± std) and wall time from the RTN state, as text."""
    head = task.metrics[0]
    for r in results["summary"]:
        if not r.get("peers"):
            continue
        print(f"{r['arch']} W{r['bits']}, held-out {head.label} (seeds {list(r['seeds'])}), wall time from RTN:")
        for p in method_points(r, head):
            print(f"  {p.label:18s} {head.fmt(p.value, p.std):>16s} {p.seconds:7.1f} s")


def plot_side_by_side(results: dict, task, ax=None):
    """Held-out headline metric against wall time for every method at the lowest bit width with peers (first
    model that has them), with the Pareto front."""
    head = task.metrics[0]
    rows = [r for r in results["summary"] if r.get("peers")]
    if not rows:
        raise ValueError("No row with peers: RTN did not cost enough on the search split at these bit widths.")
    r = min(rows, key=lambda r: r["bits"])
    return plot_methods_vs_time(method_points(r, head), head, f"{r['arch']} W{r['bits']}: held-out {head.label} "
                                f"vs wall time", ax=ax)


def check_side_by_side(results: dict, task, tolerance: float, behind: tuple = ()) -> list[dict]:
    """Assert what the notebooks say about the side-by-side run, for every (model, bits) with peers: the ES from
    RTN (``"es"``) and the ES from each peer's codes (``"es_<peer>"``) are not behind that peer by more than the
    allowance, the larger of the two seed stds or ``tolerance`` (in the headline metric's own unit, e.g. 0.01 =
    one accuracy point; it covers another CPU's rounding and a single seed), except the ``(method, peer)``
    pairs of ``behind`` (e.g. ``("es", "brecq")``), which the notebook says trail that peer: they must then be
    behind it by more than the allowance. Returns :func:`peer_targets`."""
    head = task.metrics[0]
    for r in results["summary"]:
        found = {o.prefix: o for o in method_outcomes(r)}
        for peer in r.get("peers", []):
            allowed = max(found["es"].std(head) or 0.0, found[peer].std(head) or 0.0, tolerance)
            for mine in [m for m in ("es", f"es_{peer}") if m in found]:
                margin = head.improvement(found[mine].value(head), found[peer].value(head))
                if (mine, peer) in behind:
                    assert margin < -allowed, (r["arch"], r["bits"], mine, "is not behind", peer, margin, allowed)
                else:
                    assert margin >= -allowed, (r["arch"], r["bits"], mine, peer, margin, allowed)
    return peer_targets(results["summary"], task)
