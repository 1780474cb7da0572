"""``rate_accuracy.png``: every codec's curve on a log-scale bpp axis, labelled, with the
accuracy levels (80/90/95 % of the uncompressed metric) as dashed lines; one PNG per metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_summary"]

_STYLE = {
    "vcm": ("C3", "o", 2.4),
    "jpeg": ("C0", "s", 1.4),
    "webp": ("C2", "^", 1.4),
    "avif": ("C1", "D", 1.4),
    "jxl": ("C4", "v", 1.4),
}


def plot_summary(summary: dict[str, Any], path: Path, metric: str | None = None) -> None:
    """Draw the curves of a summary dict for ``metric`` (default: the primary one, stored as
    ``metric`` in the points); baselines' legend entries carry vcm's BD-rate and its bpp ratio
    at the top accuracy level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name_of = metric or summary["metric"]
    key = "metric" if name_of == summary["metric"] else name_of
    rep = summary.get("by_metric", {}).get(name_of, {})
    bd = rep.get("bd_rate_vs", summary.get("bd_rate_vs", {}))
    ratios = rep.get("rate_ratio_vs", {})
    top = max(rep.get("targets", {}), key=float, default=None)
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for i, (name, pts) in enumerate(summary["curves"].items()):
        pts = [p for p in pts if p["bpp"] > 0]
        if not pts:
            continue
        color, marker, lw = _STYLE.get(name, (f"C{5 + i % 5}", "x", 1.4))
        label = name if name != "vcm" else f"vcm ({summary.get('preset', 'default')})"
        if bd.get(name) is not None:
            label += f"  (vcm BD-rate {bd[name]:+.1f} %"
            r = ratios.get(name, {}).get(top) if top else None
            label += f", bpp x{r:.2f} at {float(top):.0%})" if r is not None else ")"
        ax.plot(
            [p["bpp"] for p in pts],
            [p[key] for p in pts],
            marker=marker,
            color=color,
            lw=lw,
            ms=5,
            label=label,
        )
        if name == "vcm":
            for p in pts:
                ax.annotate(
                    p["setting"].replace("layers=", "L"),
                    (p["bpp"], p[key]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=color,
                )
    ref = rep.get("original", summary.get("original", {}).get("metric"))
    if ref is not None and summary["task"] != "quality":
        ax.axhline(ref, color="0.3", ls="-", lw=0.8, label=f"uncompressed ({ref:.3g})")
    for level, target in rep.get("targets", {}).items():
        ax.axhline(target, color="0.45", ls="--", lw=0.9)
        ax.annotate(
            f"{float(level):.0%} ({target:.3g})",
            (0, target),
            xycoords=("axes fraction", "data"),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
        )
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log scale)")
    higher = rep.get("higher_is_better", summary["higher_is_better"])
    ax.set_ylabel(f"{name_of} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(
        f"{summary['task']}: {name_of} vs rate — "
        f"{Path(summary.get('data', '')).name} ({summary.get('num_images', '?')} images)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
