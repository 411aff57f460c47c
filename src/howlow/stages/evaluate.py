"""Stage `evaluate`: val-split metrics per label source, plot data for `dvc plots`, and figures.

Outputs in `eval/`:
  metrics.json                    the headline numbers (DVC metrics): oracle budget, pseudo-label
                                  quality, each source's val mIoU and annotated %
  details.json                    the rest of the same tree: medians, pixel accuracy, per-class IoU,
                                  share of full (howlow.names: one name per number)
  plots/miou_by_source.csv        val mIoU and annotation % per label source
  plots/oracle_curves.csv         (written by the oracle stage) revealed % vs accuracy per image
  figures/budget_curves.png       accuracy against revealed % for every image
  figures/miou_by_source.png      val mIoU per label source, with its annotation cost
  figures/oracle_<id>.png         image | ground truth | revealed pixels | pseudo-label
"""

from __future__ import annotations

import logging

from ..data import load_prepared
from ..io import read_csv, read_json, write_csv, write_json
from ..layout import Layout
from ..names import split
from ..params import Params
from ..plots import budget_figure, oracle_figure, sources_figure
from ..segmentation.train import evaluate_source
from .oracle import annotated_ids, use_runtime

log = logging.getLogger(__name__)


def run(params: Params, layout: Layout) -> dict:
    use_runtime(params)
    prepared = load_prepared(layout.prepared)
    totals = read_json(layout.oracle / "totals.json")
    pseudo = read_json(layout.pseudo / "metrics.json")
    dataset, rows = {}, []
    for source in params.train.label_sources:
        info = read_json(layout.models / f"{source}.json")
        m = evaluate_source(prepared, layout.models / f"{source}.pt")
        m.update(annotated_pixels=info["annotated_pixels"], annotated_pct=info["annotated_pct"])
        dataset[source] = m
        rows.append(
            {
                "source": source,
                "miou": round(m["miou"], 5),
                "pixel_accuracy": round(m["pixel_accuracy"], 5),
                "annotated_pct": round(info["annotated_pct"], 5),
            }
        )
        log.info(
            "%s: val mIoU %.4f, pixel accuracy %.4f, %.3f %% annotated",
            source,
            m["miou"],
            m["pixel_accuracy"],
            info["annotated_pct"],
        )
    if "full" in dataset:
        for m in dataset.values():
            m["miou_pct_of_full"] = 100.0 * m["miou"] / dataset["full"]["miou"] if dataset["full"]["miou"] else None
    metrics = {
        "oracle": totals,
        "pseudolabel": {"mean_accuracy": pseudo["mean_accuracy"], "mean_miou": pseudo["mean_miou"]},
        "dataset": dataset,
    }
    write_csv(layout.plots / "miou_by_source.csv", rows)
    budget_figure(
        read_csv(layout.plots / "oracle_curves.csv"),
        params.oracle.target_accuracy,
        layout.figures / "budget_curves.png",
    )
    sources_figure(rows, layout.figures / "miou_by_source.png")
    oracle_ids = set(annotated_ids(layout))
    for row in [r for r in prepared.split("train") if r["id"] in oracle_ids][: params.evaluate.n_figures]:
        oracle_figure(prepared, row, layout.oracle, layout.pseudo, layout.figures / f"oracle_{row['id']}.png")
    headline, details = split(metrics)
    write_json(layout.eval / "details.json", details)
    write_json(layout.eval / "metrics.json", headline)
    return metrics
