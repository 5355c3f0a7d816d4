"""Human-facing reports of cache statistics: percentile table and timeline plot."""

from __future__ import annotations

from typing import Dict, List

from ..runtime import CacheStats

PERCENTILES = (0, 25, 50, 75, 95, 100)


def _percentile(sorted_values: List[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def residual_diff_table(stats: CacheStats, threshold: float) -> str:
    """Markdown: per branch, diff percentiles, steps cached, and the threshold in use."""
    head = "| branch | steps with a diff | cached | " + " | ".join(
        "max" if q == 100 else f"P{q}" for q in PERCENTILES
    ) + " |"
    lines = [f"residual diff percentiles (threshold {threshold:g})", "", head, "|" + "---|" * (len(PERCENTILES) + 3)]
    for name, branch in stats.branches.items():
        values = sorted(branch.residual_diffs.values())
        cells = [f"{_percentile(values, q):.4f}" for q in PERCENTILES] if values else ["-"] * len(PERCENTILES)
        lines.append(f"| {name} | {len(values)} | {len(branch.cached_steps)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sessions(sessions: Dict[str, object], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # optional extra
        raise ImportError("dit_fx.plot_timeline needs matplotlib: pip install 'dit_fx[plot]'") from exc
    # One panel per cache context: per transformer, and per block list where lists have their own.
    panels = [
        (name if scope is None else f"{name} / {scope}", stats, session.config_of(scope).residual_diff_threshold)
        for name, session in sessions.items()
        for scope, stats in _by_scope(session.stats()).items()
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, (name, stats, threshold) in zip(axes[:, 0], panels):
        for branch_name, branch in stats.branches.items():
            steps = sorted(branch.residual_diffs)
            line = ax.plot(steps, [branch.residual_diffs[s] for s in steps], marker="o", ms=3, label=f"{branch_name} diff")
            cached = [s for s in branch.cached_steps if s in branch.residual_diffs]
            ax.scatter(cached, [branch.residual_diffs[s] for s in cached], s=60, facecolors="none",
                       edgecolors=line[0].get_color(), label=f"{branch_name} cached ({len(branch.cached_steps)})")
        ax.axhline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_title(f"{name}: {stats.executed_steps} steps, generation {stats.generation}")
        ax.set_xlabel("step")
        ax.set_ylabel("relative L1 diff of the Fn residual")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _by_scope(stats) -> Dict[object, CacheStats]:
    return stats if isinstance(stats, dict) else {None: stats}
