"""Figures of the evaluation (matplotlib, Agg backend: no display needed).

    from pgrpo.stages.evaluation.plots import plot_group_rewards, plot_final_rewards
    plot_group_rewards({"pgrpo": rows, "grpo": rows2}, {"mainstream": 150, "emoji_fan": 45},
                       "reports/figures/group_rewards.png", smooth_window=3)
    plot_final_rewards({"base": {"mainstream": {"reward": .4, "ci_low": .3, "ci_high": .5}}, ...},
                       {"mainstream": 150, ...}, "reports/figures/final_rewards.png")

`rows` are metrics.jsonl rows of a training run (pgrpo.core.metric_log.read_metrics);
each group's curve is its `train/reward/<group>` key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless machines, DVC / Prefect workers
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from pgrpo.stages.evaluation.curves import JUDGE_CURVE_KEY, curve_key, reward_curve, running_mean

BASE_COLOR = "0.55"


def _sizes(groups: Mapping[str, int] | Sequence[str]) -> dict[str, int | None]:
    return dict(groups) if isinstance(groups, Mapping) else dict.fromkeys(groups)


def _title(group: str, size: int | None) -> str:
    return group if size is None else f"{group} ({size} users)"


def algorithm_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per name in the given order; 'base' is always grey."""
    palette = plt.get_cmap("tab10").colors
    out, k = {}, 0
    for n in names:
        if n == "base":
            out[n] = BASE_COLOR
        else:
            out[n] = palette[k % len(palette)]
            k += 1
    return out


def _grid(n: int, max_cols: int = 3, size: tuple[float, float] = (4.6, 3.3)):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows + 0.6),
                             squeeze=False, sharex=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def plot_group_rewards(curves: Mapping[str, Sequence[Mapping]],
                       groups: Mapping[str, int] | Sequence[str],
                       out_png: str | Path, smooth_window: int = 3,
                       ylabel: str | None = None, ylabel_note: str = "") -> Path:
    """One subplot per group, one line per algorithm: the running mean (solid) over the raw
    per-step reward (faint dots): the judge on validation prompts where the run logged it
    (pgrpo.stages.evaluation.judge_curve), else the training batch reward. Steps without the group are skipped.
    Without `ylabel` the axis names the sources drawn, then `ylabel_note` (", mean over runs")."""
    keys = {alg: curve_key(rows) for alg, rows in curves.items()}
    if ylabel is None:
        sources = {"judge (validation)" if k == JUDGE_CURVE_KEY else "training batch"
                   for k in keys.values()}
        ylabel = f"reward: {' / '.join(sorted(sources)) or 'training batch'}{ylabel_note}"
    sizes = _sizes(groups)
    colors = algorithm_colors(list(curves))
    fig, axes = _grid(max(len(sizes), 1))
    cols = min(len(sizes), 3)
    for k, (ax, (group, size)) in enumerate(zip(axes, sizes.items())):
        empty = True
        for alg, rows in curves.items():
            steps, values = reward_curve(rows, group, keys[alg])
            if not steps:
                continue
            empty, c = False, colors[alg]
            ax.plot(steps, values, "o", color=c, alpha=0.25, markersize=3, linewidth=0)
            # A marker on the mean too when there are few points: one point draws no line.
            ax.plot(steps, running_mean(values, smooth_window), "-", color=c, linewidth=1.8,
                    label=alg, marker="o" if len(steps) < 5 else None, markersize=4)
        if empty:
            ax.text(0.5, 0.5, "no training batch\nheld this group", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.set_title(_title(group, size), fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("training step")
        if k % cols == 0:
            ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelbottom=True)  # sharex hides inner tick labels otherwise
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper right", ncol=len(labels), frameon=False, fontsize=10)
    fig.suptitle(f"Per-group reward during training (lines: running mean over {smooth_window} "
                 "steps; dots: per-step batch means)", fontsize=11, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return _save(fig, out_png)


def plot_final_rewards(results: Mapping[str, Mapping[str, Mapping]],
                       groups: Mapping[str, int] | Sequence[str],
                       out_png: str | Path, ylabel: str = "judge reward",
                       title: str = "Per-group reward of the final policies (95% bootstrap CI)",
                       ) -> Path:
    """Grouped bars: one cluster per group, one bar per policy (base first, grey), error
    bars from ci_low / ci_high. results[policy][group] = {"reward", "ci_low", "ci_high"};
    a missing or None reward leaves a gap."""
    sizes = _sizes(groups)
    names = list(results)
    colors = algorithm_colors(names)
    n_groups, n_pol = len(sizes), max(len(names), 1)
    width = 0.8 / n_pol
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 + n_groups * (0.5 + 0.32 * n_pol)), 4.2))
    for k, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(sizes):
            r = results[name].get(g) or {}
            if r.get("reward") is None:
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(r["reward"])
            lo.append(r["reward"] - (r["ci_low"] if r.get("ci_low") is not None else r["reward"]))
            hi.append((r["ci_high"] if r.get("ci_high") is not None else r["reward"]) - r["reward"])
        ax.bar(xs, ys, width * 0.92, color=colors[name], label=name, yerr=[lo, hi], capsize=2.5,
               error_kw={"elinewidth": 1, "ecolor": "0.2"})
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_xticks(range(n_groups))
    ax.set_xticklabels([_title(g, s).replace(" (", "\n(") for g, s in sizes.items()], fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: inside, it would cover bars of either sign.
    ax.legend(frameon=False, fontsize=9, ncol=min(n_pol, 6), loc="upper center",
              bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    # format= explicitly: atomic temp names do not end in .png.
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)
    return out


def plot_differences(differences: Mapping[str, Mapping[str, Mapping]],
                     groups: Mapping[str, int] | Sequence[str], out_png: str | Path,
                     xlabel: str = "difference in judge reward",
                     title: str = "Paired per-group differences (mean over runs, 95% t-interval)",
                     ) -> Path:
    """One row per group, one marker per difference ("pgrpo - grpo", ...) with its interval;
    a dashed line at 0. differences[name][group] = {"mean", "ci_low", "ci_high"}."""
    sizes = _sizes(groups)
    names = list(differences)
    colors = algorithm_colors([n.split(" - ")[0] for n in names])
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.5 * len(sizes) * max(1, len(names)) ** 0.5))
    step = 0.7 / max(len(names), 1)
    for k, name in enumerate(names):
        ys, xs, lo, hi = [], [], [], []
        for i, g in enumerate(sizes):
            d = differences[name].get(g) or {}
            if d.get("mean") is None:
                continue
            ys.append(i - 0.35 + step * (k + 0.5))
            xs.append(d["mean"])
            lo.append(d["mean"] - (d["ci_low"] if d.get("ci_low") is not None else d["mean"]))
            hi.append((d["ci_high"] if d.get("ci_high") is not None else d["mean"]) - d["mean"])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colors[name.split(" - ")[0]],
                    capsize=3, label=name, markersize=5)
    ax.axvline(0, color="0.3", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(sizes)))
    ax.set_yticklabels([_title(g, s) for g, s in sizes.items()], fontsize=9)
    ax.invert_yaxis()  # the majority (listed first) on top
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="best", framealpha=0.85)
    fig.tight_layout()
    return _save(fig, out_png)
