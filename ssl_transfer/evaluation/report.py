"""Evaluation results as a printed table, eval.json, report.md and a label-efficiency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _n(n: int | None) -> str:
    return "all" if n is None else str(n)


def summary_table(result: dict[str, Any]) -> str:
    """Markdown table: protocol x labels per class, top-1 mean ± std over seeds (in %)."""
    budgets = sorted({r["labels_per_class"] for r in result["summary"]}, key=lambda n: float("inf") if n is None else n)
    protocols = list(dict.fromkeys(r["protocol"] for r in result["summary"]))
    cell = {(r["protocol"], r["labels_per_class"]): r for r in result["summary"]}
    lines = [
        "| protocol | " + " | ".join(f"{_n(n)} / class" for n in budgets) + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for p in protocols:
        vals = []
        for n in budgets:
            c = cell.get((p, n))
            vals.append(
                "-" if c is None else f"{100 * c['mean']:.2f}" + (f" ± {100 * c['std']:.2f}" if c["seeds"] > 1 else "")
            )
        lines.append(f"| {p} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot_label_efficiency(result: dict[str, Any], path: Path) -> Path | None:
    """Top-1 against labels per class (log x), one line per protocol with ± std bands; None if one budget."""
    pts = [r for r in result["summary"] if r["labels_per_class"] is not None]
    if len({r["labels_per_class"] for r in pts}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p in dict.fromkeys(r["protocol"] for r in pts):
        rs = sorted((r for r in pts if r["protocol"] == p), key=lambda r: r["labels_per_class"])
        x = [r["labels_per_class"] for r in rs]
        m = [100 * r["mean"] for r in rs]
        s = [100 * r["std"] for r in rs]
        ax.plot(x, m, "o-", label=p)
        ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def linear_notes(rows: list[dict[str, Any]]) -> str:
    """One line per linear-probe fit: the chosen L2 penalty, the range searched, whether it was extended."""
    out = []
    for r in rows:
        lo, hi = r["l2_range"]
        note = (
            f"- {_n(r['labels_per_class'])} / class, seed {r['seed']}: l2 {r['l2']:.0e} chosen in [{lo:.0e}, {hi:.0e}]"
        )
        if r.get("range_extended"):
            edge = "lower" if r["range_extended"] == "down" else "upper"
            note += f"; the first range's best was at its {edge} edge, so it was extended {r['range_extended']} once"
        if r.get("at_edge"):
            note += "; still at an edge of the extended range"
        out.append(note + f" ({r['solver']}, {r['seconds']:.1f} s)")
    return "\n".join(out)


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    """eval.json (everything), report.md (table, transfer details, plot) and label_efficiency.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2, default=str))
    plot = plot_label_efficiency(result, out_dir / "label_efficiency.png")
    t = result["transfer"]
    md = [
        f"# Evaluation of `{result['encoder']}` on {result['data']['source']}",
        "",
        f"Top-1 test accuracy (%), mean ± std over seeds {result['settings']['seeds']}; kNN "
        f"k={result['settings']['knn']['k']}, "
        f"T={result['settings']['knn']['temperature']}.",
        "",
        summary_table(result),
        "",
        "## Input adaptation",
        "",
        f"- encoder input {t['encoder_input']}, data {t['data_input']}; resize: {t['resize'] or 'none'}; channels: "
        f"{t['channels']}",
        f"- normalisation from {t['normalisation']['from']}: mean {t['normalisation']['mean']}, std "
        f"{t['normalisation']['std']}",
    ]
    linear = [r for r in result["rows"] if r["protocol"] == "linear"]
    if linear:
        md += ["", "## Linear probe", "", linear_notes(linear)]
    if plot:
        md += ["", "![label efficiency](label_efficiency.png)"]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
