"""Markdown tables from one or more ``summary.json`` files (for READMEs and reports).

    python -m eval.report OUT_DIR [OUT_DIR ...]

Why: the numbers in a README must be copied from the harness, not retyped. BD-rates are
recomputed here from the curves alone (``eval.bd_rate``) and checked against the stored ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from eval.bd_rate import bd_rate

__all__ = ["bd_table", "curve_table", "main"]


def _load(path: Path) -> dict[str, Any]:
    p = path / "summary.json" if path.is_dir() else path
    return json.loads(p.read_text())


def _recomputed(s: dict[str, Any], name: str) -> float | None:
    v, b = s["curves"]["vcm"], s["curves"][name]
    return bd_rate([p["bpp"] for p in b], [p["metric"] for p in b],
                   [p["bpp"] for p in v], [p["metric"] for p in v], s["higher_is_better"])


def bd_table(summaries: list[dict[str, Any]]) -> str:
    """One row per summary: task, set, metric, uncompressed value, BD-rate vs each baseline."""
    names = ["jpeg", "webp", "avif", "jxl"]
    lines = ["| task | data (images) | metric | uncompressed | vcm range (bpp → metric) | "
             + " | ".join(f"BD-rate vs {n}" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * len(names)]
    for s in summaries:
        cells = []
        for n in names:
            v = s["bd_rate_vs"].get(n)
            if n in s["bd_rate_vs"] and "vcm" in s["curves"]:
                again = _recomputed(s, n)
                same = (v is None and again is None) or (
                    v is not None and again is not None and abs(v - again) < 1e-2)
                if not same:
                    raise SystemExit(f"BD-rate mismatch for {n}: stored {v}, recomputed {again}")
            cells.append("n/a" if v is None else f"{v:+.1f} %")
        vcm = s["curves"].get("vcm", [])
        rng = (f"{vcm[0]['bpp']:.3f} → {vcm[0]['metric']:.3f} … {vcm[-1]['bpp']:.2f} → "
               f"{vcm[-1]['metric']:.3f}") if vcm else "—"
        lines.append(f"| {s['task']} | {Path(s['data']).name} ({s['num_images']}) | "
                     f"{s['metric']} | {s['original']['metric']:.3f} | {rng} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(s: dict[str, Any]) -> str:
    """Every point of every curve of one summary."""
    lines = [f"**{s['task']} — {Path(s['data']).name}** ({s['metric']}, "
             f"{'higher' if s['higher_is_better'] else 'lower'} is better; "
             f"uncompressed {s['original']['metric']:.4f})", "",
             "| codec | points (setting: bpp → metric) |", "|---|---|"]
    for name, pts in s["curves"].items():
        lines.append(f"| {name} | " + ", ".join(
            f"{p['setting']}: {p['bpp']:.3f} → {p['metric']:.4f}" for p in pts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m eval.report OUT_DIR [OUT_DIR ...]", file=sys.stderr)
        return 2
    summaries = [_load(p) for p in paths]
    print(bd_table(summaries))
    for s in summaries:
        print()
        print(curve_table(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
