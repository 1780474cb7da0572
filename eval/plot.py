"""``rate_accuracy.png``: every codec's curve on a log-scale bpp axis, labelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_summary"]

_STYLE = {"vcm": ("C3", "o", 2.4), "jpeg": ("C0", "s", 1.4), "webp": ("C2", "^", 1.4),
          "avif": ("C1", "D", 1.4), "jxl": ("C4", "v", 1.4)}


def plot_summary(summary: dict[str, Any], path: Path) -> None:
    """Draw the curves of a summary dict; baselines' legend entries carry vcm's BD-rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    bd = summary.get("bd_rate_vs", {})
    for i, (name, pts) in enumerate(summary["curves"].items()):
        pts = [p for p in pts if p["bpp"] > 0]
        if not pts:
            continue
        color, marker, lw = _STYLE.get(name, (f"C{5 + i % 5}", "x", 1.4))
        label = name if name != "vcm" else f"vcm ({summary.get('preset', 'default')})"
        if bd.get(name) is not None:
            label += f"  (vcm BD-rate {bd[name]:+.1f} %)"
        ax.plot([p["bpp"] for p in pts], [p["metric"] for p in pts], marker=marker, color=color,
                lw=lw, ms=5, label=label)
        if name == "vcm":
            for p in pts:
                ax.annotate(p["setting"].replace("layers=", "L"), (p["bpp"], p["metric"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ref = summary.get("original", {}).get("metric")
    if ref is not None and summary["task"] != "quality":
        ax.axhline(ref, color="0.4", ls="--", lw=1, label=f"uncompressed ({ref:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log scale)")
    better = "higher" if summary["higher_is_better"] else "lower"
    ax.set_ylabel(f"{summary['metric']} ({better} is better)")
    ax.set_title(f"{summary['task']}: {summary['metric']} vs rate — "
                 f"{Path(summary.get('data', '')).name} ({summary.get('num_images', '?')} images)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
