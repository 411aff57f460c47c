"""The README's current answers are the numbers of the report JSON each row names."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from howlow.studies.common import paired_difference

README = (ROOT / "README.md").read_text()
FLAT = " ".join(README.split())  # prose may wrap anywhere: texts are matched with whitespace collapsed


def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def budget(path: str) -> dict:
    """The first rule's row of a budget report: mean and std over seeds."""
    return load(path)["table"][0]


def seeds_of(rows: list[dict], source: str, target: float | None) -> list[float]:
    picked = sorted((r for r in rows if r["source"] == source and r["target"] == target), key=lambda r: r["seed"])
    return [r["miou"] for r in picked]


def interval(d: dict) -> str:
    return f"{d['mean']:+.3f} val mIoU, 95 % interval [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def bound(x: float) -> str:
    """An interval's end to 3 decimals, or 4 where 3 would print a resolved end as 0.000."""
    return f"{x:+.3f}" if abs(x) >= 0.0005 else f"{x:+.4f}"


def budget_row(agg: dict, paired: list[dict], target: float) -> list[str]:
    """The README's row of one Oracle target of a data-set study: each source's val mIoU as a
    share of full, and every paired difference, `**resolved**` exactly where its 95 % interval
    excludes 0 over 5 seeds, or over fewer where the sources are more than 5 % of full apart (the
    README claims an ordering nowhere else)."""
    a = {s: agg[s, target] for s in ("pseudo", "sparse", "random", "random_pseudo")}
    assert len({round(x["annotated_pct"], 6) for x in a.values()}) == 1  # equal budgets
    n = {x["seeds"] for x in a.values()}
    seeds = (
        f"{(k := n.pop())} seed{'s' if k > 1 else ''} each"
        if len(n) == 1
        else ", ".join(f"{s} {x['seeds']}" for s, x in a.items()) + " seeds"
    )
    diffs = []
    for d in (d for d in paired if d["target"] == target):
        if d["ci95"] is None:  # one seed: a difference, no interval
            diffs.append(f"{d['comparison']} {d['mean']:+.3f} ({d['n']} seed, no interval)")
            continue
        lo, hi = d["ci95"]
        resolved = ""
        if lo > 0 or hi < 0:  # the rule: 5 seeds wherever two sources are within 5 % of full
            close = abs(d["mean"]) < 0.05 * agg["full", None]["miou_mean"]
            resolved = " **resolved**" if d["n"] >= 5 or not close else " (excludes 0, but under 5 seeds: interim)"
        diffs.append(f"{d['comparison']} {d['mean']:+.3f} [{bound(lo)}, {bound(hi)}] ({d['n']} seeds){resolved}")
    pct = {s: f"{x['pct_of_full_mean']:.1f} %" for s, x in a.items()}
    return [
        f"Oracle target {target:g} ({a['pseudo']['annotated_pct']:.3f} % of the pixels annotated)",
        f"pseudo-labels {a['pseudo']['miou_mean']:.3f}, {pct['pseudo']} of full; the clicks alone (sparse) "
        f"{pct['sparse']}, random pixels {pct['random']}, random-click pseudo-labels {pct['random_pseudo']} "
        f"({seeds}). Paired val mIoU differences, 95 % interval: " + "; ".join(diffs),
    ]


def study_rows(rep: dict) -> list[str]:
    """The README's rows of a data-set study: `full` over its seeds, one row per Oracle target, and how
    many of its trainings are done."""
    agg = {(a["source"], a["target"]): a for a in rep["aggregate"]}
    full = agg["full", None]
    assert min(full["per_class_iou_mean"].values()) > 0  # "every class has IoU > 0"
    out = [f"**{full['miou_mean']:.3f} ± {full['miou_std']:.3f} val mIoU** ({full['seeds']} seeds)"]
    targets = sorted({t for (src, t) in agg if src == "pseudo"}, reverse=True)
    assert 0.95 in targets
    out += [text for t in targets for text in budget_row(agg, rep["paired"], t)]
    rows_missing = [m for m in rep["missing"] if not m.endswith("-x2")]  # the 2x checks are counted apart
    done, planned = len(rep["rows"]), len(rep["rows"]) + len(rows_missing)
    out.append(f"under way: {done} of its {planned} trainings" if rows_missing else f"all {done} of its trainings")
    return out


def dubai_prose(rep: dict) -> list[str]:
    """The README's prose on the finished Dubai study: which comparisons its intervals resolve."""
    pct = {(a["source"], a["target"]): a["pct_of_full_mean"] for a in rep["aggregate"]}
    budget_pct = {a["target"]: a["annotated_pct"] for a in rep["aggregate"] if a["source"] == "pseudo"}
    ci = {(d["target"], d["comparison"]): d["ci95"] for d in rep["paired"]}
    targets = sorted(t for s, t in pct if s == "pseudo")
    assert not rep["missing"]
    for versus in ("random", "sparse", "full"):  # "beat ... at every budget, each beyond its interval"
        assert all(ci[t, f"pseudo - {versus}"][0] > 0 for t in targets)
    low, *rest = targets
    assert ci[low, "pseudo - random_pseudo"][0] > 0  # beaten only at the lowest budget
    assert all(ci[t, "pseudo - random_pseudo"][0] < 0 < ci[t, "pseudo - random_pseudo"][1] for t in rest)
    assert low == 0.9 and all(pct["pseudo", t] >= 100 for t in targets)  # "match full labels at every budget"

    def span(source: str) -> str:
        values = [pct[source, t] for t in targets]
        return f"{min(values):.0f}-{max(values):.0f} % of full"

    above = [d["mean"] for d in rep["paired"] if d["comparison"] == "pseudo - full"]
    above_pct = [pct["pseudo", t] - 100 for t in targets]
    return [
        f"down to {budget_pct[low]:.3f} % of the pixels ({pct['pseudo', low]:.1f} % of full)",
        f"random pixels ({span('random')}) and the clicks alone ({span('sparse')})",
        f"beaten only at {budget_pct[low]:.3f} % ({pct['random_pseudo', low]:.1f} % of full)",
        " and ".join(f"{pct['random_pseudo', t]:.1f} %" for t in rest) + "; both intervals hold 0",
        f"above full labels by {min(above):+.3f} to {max(above):+.3f} val mIoU "
        f"({min(above_pct):.1f}-{max(above_pct):.1f} % of full)",
        f"goal holds at {budget_pct[low]:.3f} %",
    ]


def schedule_prose(rep: dict) -> list[str]:
    """The README's twice-the-schedule checks of the budget sources, as the report pairs them."""
    return [
        f"`{x['source']}` from {x['miou']:.3f} to {x['miou_x2']:.3f} ({x['change_pct']:+.1f} %)"
        for x in rep["schedule_checks"]
        if x["source"] != "full"
    ]


def claims() -> list[tuple[str, str]]:
    """(source JSON, the text the README must hold), each text formatted from its JSON."""
    out = []
    path = "reports/oracle_budget/camvid-val30-vote.json"
    t = budget(path)
    assert t["reached_fraction"]["mean"] == 1.0
    out.append(
        (
            path,
            f"**{t['revealed_pct']['mean']:.3f} ± {t['revealed_pct']['std']:.3f} %** "
            f"({t['revealed_px']['mean']:.0f} px), every frame reaches 98 %",
        )
    )
    assert set(load(path)["setup"]["seeds"]) == {0, 1, 2} and load(path)["setup"]["images"] == 30
    path = "reports/oracle_budget/camvid-val101-vote.json"
    t = budget(path)
    assert t["reached_fraction"]["mean"] == 1.0 and load(path)["setup"]["images"] == 101
    out.append((path, f"{t['revealed_pct']['mean']:.3f} % ({t['revealed_px']['mean']:.0f} px), every frame"))
    path = "reports/oracle_budget/dubai_aerial-vote-val9.json"
    t = budget(path)
    out.append(
        (
            path,
            f"{t['revealed_pct']['mean']:.3f} ± {t['revealed_pct']['std']:.3f} % "
            f"({t['revealed_px']['mean']:,.0f} px), capped at 1 %; "
            f"{100 * t['reached_fraction']['mean']:.0f} % of tiles reach 98 %",
        )
    )
    path = "studies/dataset_camvid/results/budget.json"
    b = load(path)
    assert b["annotated"] == b["train_images"] == 367 and b["tuned_on"] == ["0016E5"]

    def per_frame(h: dict, target: str, unit: str = "frames") -> str:
        return (
            f"{h['mean_pct']:.3f} % ({h['mean_px']:,.0f} px, median {h['median_pct']:.3f} %), "
            f"{100 * h['reached']:.0f} % of {unit} reach {100 * float(target):.0f} %"
        )

    for target in ("0.98", "0.95", "0.9"):
        out.append((path, per_frame(b["targets"][target]["held_out"], target)))
    held = b["targets"]["0.98"]["by_sequence"]
    frames = ", ".join(f"{s} {held[s]['frames']}" for s in b["held_out"])
    out.append((path, f"{b['targets']['0.98']['held_out']['frames']} train frames of held-out sequences ({frames})"))
    out.append((path, per_frame(held["0016E5"], "0.98") + f" | {held['0016E5']['frames']} train frames of 0016E5"))
    # the prose below the table: per sequence, and against the val figure the recipe was tuned on
    val = budget("reports/oracle_budget/camvid-val101-vote.json")["revealed_pct"]["mean"]
    out.append((path, f"0001TP {held['0001TP']['mean_pct']:.3f} %, 0006R0 {held['0006R0']['mean_pct']:.3f} %"))
    out.append((path, f"98 % needs {b['targets']['0.98']['held_out']['mean_pct'] / val:.1f}x that"))
    out.append((path, f"need {held['0016E5']['mean_pct'] / val:.1f}x the val figure"))
    out.append((path, f"{100 * (1 - held['0006R0']['reached']):.0f} %\n  of the frames hit the 1 % cap"))
    out.append((path, f"We get there for 95 % ({b['targets']['0.95']['held_out']['mean_pct']:.3f} % on the held-out"))
    path = "studies/dataset_dubai/results/budget.json"
    b = load(path)
    assert b["annotated"] == b["train_images"] == 126 and b["tuned_on"] == []
    dubai = {t: b["targets"][t]["held_out"] for t in ("0.98", "0.95", "0.9")}
    out += [(path, per_frame(h, target, "tiles")) for target, h in dubai.items()]
    out.append((path, f"all {dubai['0.98']['frames']} train tiles (t1-t8), one Oracle run each"))
    val = budget("reports/oracle_budget/dubai_aerial-vote-val9.json")["revealed_pct"]["mean"]
    high, mid, low = (dubai[t]["mean_pct"] for t in ("0.98", "0.95", "0.9"))
    out.append((path, f"{high:.3f} % of a train tile for 98 % ({high / val:.1f}x"))
    assert abs(1 - dubai["0.98"]["reached"] - 0.25) < 0.02  # "a quarter of the tiles stop at the 1 % cap"
    group = b["targets"]["0.98"]["by_sequence"]
    out.append((path, f"t5 and t6 need {group['t5']['mean_pct']:.3f} % and {group['t6']['mean_pct']:.3f} %"))
    t4 = group["t4"]
    assert round(t4["reached"] * t4["frames"]) == 1
    out.append((path, f"t4\n  {t4['mean_pct']:.3f} %, where 1 tile in {t4['frames']} reaches 98 %"))
    out.append((path, f"On Dubai's native tiles only for 90 % ({low:.3f} %); 95 % needs {mid:.3f} %"))
    path = "eval/metrics.json"
    m = load(path)
    d = m["dataset"]
    out.append(
        (
            path,
            f"{m['oracle']['mean_revealed_pct']:.3f} % ({m['oracle']['mean_revealed_px']:.1f} px) per "
            f"image; val mIoU pseudo {d['pseudo']['miou']:.3f}, full {d['full']['miou']:.3f}, "
            f"sparse {d['sparse']['miou']:.3f}, random {d['random']['miou']:.3f}",
        )
    )
    path = "studies/dataset_camvid/results/report.json"
    rep = load(path)
    assert len(rep["frames"]["train"]) == 367 and len(rep["frames"]["val"]) == 101
    out += [(path, text) for text in study_rows(rep)]
    out += [(path, text) for text in schedule_prose(rep)]
    x = {c["source"]: c for c in rep["schedule_checks"]}
    rel = x["full"]["change_pct"]
    out.append((path, f"moves `full` from {x['full']['miou']:.3f} to {x['full']['miou_x2']:.3f} ({rel:+.1f} %,"))
    assert abs(rel) < 2 and not x["pseudo"]["converged"] and not x["random"]["converged"]
    before, after = (x["pseudo"][k] - x["random"][k] for k in ("miou", "miou_x2"))
    out.append((path, f"pseudo - random {before:+.3f} at 30 epochs, {after:+.3f} at 60"))
    out.append((path, f"reach {100 * x['pseudo']['miou_x2'] / x['full']['miou_x2']:.0f} % of\n  full labels"))
    sq = rep["sparse_quality"]  # the prose on why the clicks alone get worse from 0.95 to 0.98
    out.append((path, f"at the training scale {100 * (1 - sq['0.98']['agreement']):.0f} % of the pixels they label"))
    out.append((path, f"downscaled truth ({100 * (1 - sq['0.95']['agreement']):.0f} % at 0.95)"))
    path = "studies/dataset_dubai/results/report.json"
    rep = load(path)
    assert len(rep["frames"]["train"]) == 126 and len(rep["frames"]["val"]) == 36
    out += [(path, text) for text in study_rows(rep)]
    out += [(path, text) for text in dubai_prose(rep)]
    out += [(path, text) for text in schedule_prose(rep)]
    x = {c["source"]: c for c in rep["schedule_checks"]}  # "these had converged. Only the clicks alone gain more"
    assert all(x[s]["converged"] for s in ("full", "pseudo", "random_pseudo", "random"))
    assert not x["sparse"]["converged"]
    c = rep["convergence"]
    rel = 100 * (c["miou_x2"] / c["miou"] - 1)
    assert rel < 2
    out.append((path, f"moves `full` from {c['miou']:.3f} to {c['miou_x2']:.3f} (+{rel:.1f} %, under the 2 % rule)"))
    path = "reports/dataset_level/camvid-vote.json"
    rows = load(path)["rows"]
    pseudo = seeds_of(rows, "pseudo", 0.95)
    budget_pct = next(
        a["annotated_pct"] for a in load(path)["aggregate"] if a["source"] == "pseudo" and a["target"] == 0.95
    )
    out.append((path, f"pseudo-labels at {budget_pct:.3f} % vs random pixels"))
    out.append((path, interval(paired_difference(pseudo, seeds_of(rows, "random", 0.95)))))
    out.append(
        (
            path,
            interval(paired_difference(pseudo, seeds_of(rows, "full", None)))
            + f" (full: {sum(seeds_of(rows, 'full', None)) / 3:.3f})",
        )
    )
    return out


@pytest.mark.parametrize("source, text", claims())
def test_readme_number_matches_its_report(source, text):
    assert source in README
    assert " ".join(text.split()) in FLAT, f"README should say {text!r} (from {source})"
