"""Every figure howlow draws, in one place (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .data import Prepared
from .io import atomic_write_bytes, read_json, read_label


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def palette(classes: list[dict]) -> np.ndarray:
    """(256, 3) colours: classes.json colours where given, grey-ish defaults else, void black."""
    pal = np.zeros((256, 3), np.uint8)
    fallback = pyplot().get_cmap("tab20")
    for c in classes:
        col = c.get("color", "")
        if isinstance(col, str) and col.startswith("#") and len(col) == 7:
            pal[c["id"]] = [int(col[i : i + 2], 16) for i in (1, 3, 5)]
        else:
            pal[c["id"]] = np.array(fallback(c["id"] % 20)[:3]) * 255
    return pal


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def oracle_figure(prepared: Prepared, row: dict, oracle_dir: Path, pseudo_dir: Path, path: Path) -> None:
    pal = palette(prepared.classes)
    image, truth = prepared.image(row), prepared.label(row)
    result = read_json(Path(oracle_dir) / f"{row['id']}.json")
    revealed = np.array(result["revealed"], np.int64).reshape(-1, 4)
    pseudo = read_label(Path(pseudo_dir) / f"{row['id']}.png")
    s = result["summary"]
    fig, axes = pyplot().subplots(1, 4, figsize=(16, 3.6))
    panels = [
        (image, "image"),
        (pal[truth], "ground truth"),
        (image // 2 + 64, f"revealed: {s['revealed']} px ({s['revealed_pct']:.3f} %)"),
        (pal[pseudo], f"pseudo-label: acc {s['accuracy']:.3f}"),
    ]
    for ax, (arr, title) in zip(axes, panels):
        ax.imshow(arr)
        ax.set_title(title)
        ax.axis("off")
    # revealed pixels as dots in their class colour, ringed in white so they show on any background
    axes[2].scatter(
        revealed[:, 1], revealed[:, 0], s=14, c=pal[revealed[:, 2]] / 255.0, edgecolors="white", linewidths=0.6
    )
    fig.suptitle(row["id"])
    save_figure(fig, path)


def budget_figure(curves: list[dict], target: float, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for image in dict.fromkeys(r["image"] for r in curves):
        pts = [r for r in curves if r["image"] == image]
        ax.plot([float(p["revealed_pct"]) for p in pts], [float(p["accuracy"]) for p in pts], alpha=0.6, lw=1)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("revealed pixels (% of image)")
    ax.set_ylabel("pixel accuracy (void excluded)")
    ax.set_title("Oracle budget curves, one line per image")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def sources_figure(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    names = [r["source"] for r in rows]
    bars = ax.bar(names, [r["miou"] for r in rows], color="tab:blue")
    for bar, r in zip(bars, rows):
        ax.annotate(
            f"{r['annotated_pct']:.3g} % labelled",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("val mIoU")
    ax.set_ylim(0, 1.05)
    ax.set_title("Data-set network by label source")
    save_figure(fig, path)


def budget_rules_figure(name: str, curves: list[dict], target: float, path: Path) -> None:
    """Mean accuracy against revealed % per rule (first seed), each image's curve held at its end."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for strategy in dict.fromkeys(c["strategy"] for c in curves):
        per_image: dict[str, list] = {}
        for c in curves:
            if c["strategy"] == strategy:
                per_image.setdefault(c["image"], []).append((c["revealed_pct"], c["accuracy"]))
        grid = np.linspace(0, max(x for pts in per_image.values() for x, _ in pts), 200)
        acc = np.mean([np.interp(grid, [x for x, _ in pts], [a for _, a in pts]) for pts in per_image.values()], 0)
        ax.plot(grid, acc, label=strategy)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("revealed pixels (% of image)")
    ax.set_ylabel("pixel accuracy (mean over images)")
    ax.set_title(f"{name}: Oracle budget curves by selection rule")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def dataset_level_figure(dataset: str, agg: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    budgeted = [s for s in dict.fromkeys(a["source"] for a in agg) if s != "full"]
    for source in dict.fromkeys(a["source"] for a in agg):
        pts = sorted((a for a in agg if a["source"] == source), key=lambda a: a["annotated_pct"])
        x = [a["annotated_pct"] for a in pts]
        if source == "full":
            m, s = pts[0]["miou_mean"], pts[0]["miou_std"]
            ax.axhline(m, color="k", lw=1.2, label=f"full ({x[0]:.0f} % labelled)")
            ax.axhspan(m - s, m + s, color="k", alpha=0.08)
            continue
        # the sources share each budget: drawn side by side (3 % apart on the log axis), not on top
        shift = 1.03 ** (budgeted.index(source) - (len(budgeted) - 1) / 2)
        ax.errorbar(
            [v * shift for v in x],
            [a["miou_mean"] for a in pts],
            yerr=[a["miou_std"] for a in pts],
            marker="o",
            capsize=3,
            label=source,
        )
    ax.set_xscale("log")
    # ticks at the budgets themselves (one budget alone would leave a log axis with only minor ticks)
    budgets = sorted({round(a["annotated_pct"], 3) for a in agg if a["source"] != "full"})
    if budgets:
        from matplotlib.ticker import NullFormatter

        ax.set_xlim(budgets[0] / 1.3, budgets[-1] * 1.3)
        ax.set_xticks(budgets, [f"{b:.3f}" for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("annotated training pixels (% of all, log scale; sources of one budget side by side)")
    ax.set_ylabel("val mIoU (mean ± std over seeds)")
    ax.set_title(f"{dataset}: data-set network by label source and budget")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def compare_figure(rows: list[dict], path: Path) -> None:
    """Left: the Oracle's budget by target. Right: each label source's data-set val mIoU against its
    annotated % (log x; one point per run), the comparison the project is about."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.5))
    for key in dict.fromkeys((r["dataset"], r["strategy"]) for r in rows):
        # a person's runs have no target (NaN): they are points on the right only
        pts = sorted(
            (r["target"], r["oracle.mean_revealed_pct"])
            for r in rows
            if (r["dataset"], r["strategy"]) == key and r["target"] == r["target"]
        )
        if not pts:
            continue
        xs, ys = zip(*pts)
        left.plot(xs, ys, "o-", label=f"{key[0]} / {key[1]}")
    left.set_xlabel("Oracle target pixel accuracy")
    left.set_ylabel("mean revealed pixels (% of image)")
    left.set_title("Annotation budget by target")
    left.legend(fontsize=8)
    sources = dict.fromkeys(
        k.split(".")[1]
        for r in rows
        for k, v in r.items()
        if k.startswith("dataset.") and k.endswith(".miou") and v is not None
    )
    for source in sources:
        miou, pct = f"dataset.{source}.miou", f"dataset.{source}.annotated_pct"
        pts = [(r[pct], r[miou]) for r in rows if r.get(miou) is not None]
        right.plot(*zip(*pts), "o", label=source)
    right.set_xscale("log")
    right.set_xlabel("annotated pixels (% of the training images, log)")
    right.set_ylabel("data-set network val mIoU")
    right.set_title("What each label source buys (one point per run)")
    right.grid(alpha=0.3, which="both")
    if sources:
        right.legend(fontsize=8)
    fig.suptitle("All pipeline runs in the MLflow experiment")
    save_figure(fig, path)


def learning_curve_figure(name: str, curves: dict[str, list[dict]], path: Path) -> None:
    """Val mIoU against training time, one line per training (history rows with `seconds`, `val_miou`)."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for label, hist in curves.items():
        pts = [(h["seconds"] / 60, h["val_miou"]) for h in hist if h.get("val_miou") is not None and h.get("seconds")]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, label=label)
    ax.set_xlabel("training time (minutes, this machine)")
    ax.set_ylabel("val mIoU")
    ax.set_title(f"{name}: learning curve of the data-set network")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
