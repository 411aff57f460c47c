"""The data-set level study, a DVC pipeline in `studies/<name>/` (reports/dataset_level.md says how to run one).

Do per-image networks' pseudo-labels train a data-set network as well as full labels, and better
than the clicks alone (`sparse`) or as many random pixels (`random`)? A study folder holds
`params.yaml` (a small overlay on the project's params.yaml) and `dvc.yaml`:

    prepare                  the data set at the training scale: data/prepared (howlow.stages.prepare)
    prepare_oracle           only when `study.oracle_scale` differs from `data.scale`: the same images
                             at the Oracle's scale, data/prepared_oracle (`howlow study-prepare-oracle`)
    annotate                 ONE Oracle run per training image to the highest target; every lower
                             target is a prefix of its clicks: annotations/<id>.json, kept in git
                             (`howlow study-annotate`)
    budget                   the per-image budget per target, overall, per sequence and on the
                             held-out sequences (not in `study.tuned_on`): results/budget.{json,md}
    propagate                per-image networks replay the clicks (and as many random clicks, the
                             control `random_pseudo`) and label their images at each target's round:
                             targets/<t>/data/{pseudo,random_pseudo}/ (`howlow study-propagate`);
                             their accuracy, results/pseudo_quality.json
    full@<seed>              the reference: full labels of every training image, per seed in `study.seeds`
    train@<source>-<t>-<seed>
                             one data-set network per label source of `study.label_sources`, target
                             and seed, trained with the same recipe `train.*` and scored on the whole
                             val split: rows/<source>-<t>-<seed>.json, the network in
                             networks/<source>-<t>-<seed>/ (`howlow study-train`)
    convergence              `full` on the first seed for twice the epochs: rows/full-x2.json
    report                   mean ± std over seeds, % of full, paired differences, the budget, the
                             learning curve: results/
    track                    every row as one MLflow run in experiment `<tracking.experiment>-<folder>`

`howlow study-evaluate data.source=<folder>` scores the trained rows on any other labelled folder
(results/external/). The annotations are the study's product: on a fresh clone, `dvc repro` rebuilds
the pseudo-labels and every training from them without running the Oracle again.

One row per DVC stage, so DVC's lock skips finished rows when a seed, a target or a source is added.
What a later session needs is in git: the annotations, each row's scores and learning curve
(rows/<name>.json, `cache: false`) and results/. The pseudo-labels (targets/) and the networks
(networks/) are in DVC's cache only, so a fresh clone lacks them: `dvc repro --allow-missing` skips
the stages whose only change is that (reports/dataset_level.md). The modules here only read and
write files: the Oracle is howlow.oracle, the data-set network howlow.segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...layout import Layout
from ...params import Params, ParamsError


@dataclass(frozen=True)
class StudyLayout(Layout):
    """A folder of the study (targets/<t>/ or the study itself) whose stages read the prepared data
    set in `images`: the pipeline's stage functions run unchanged on it."""

    images: Path = Path("data/prepared")

    @property
    def prepared(self) -> Path:
        return self.images


def target_name(target: float) -> str:
    """A target as DVC writes a matrix item in stage names and paths: 0.9 -> '0.9', 1.0 -> '1.0'."""
    return str(float(target))


def row_name(source: str, target: float | None, seed: int) -> str:
    """rows/<name>.json: `full-<seed>` (no budget) or `<source>-<target>-<seed>`, as dvc.yaml's keys."""
    if source == "full":
        return f"full-{seed}"
    assert target is not None, f"label source {source!r} needs a budget target"
    return f"{source}-{target_name(target)}-{seed}"


CONVERGENCE = "full-x2"


def training_images(root: Path) -> Path:
    return root / "data" / "prepared"


def oracle_scale_differs(params: Params) -> bool:
    return params.study.oracle_scale is not None and params.study.oracle_scale != params.data.scale


def oracle_images(params: Params, root: Path) -> Path:
    """The prepared images the Oracle annotates: at `study.oracle_scale` when it differs."""
    return root / "data" / "prepared_oracle" if oracle_scale_differs(params) else training_images(root)


def target_layout(params: Params, root: Path, target: float, images: Path | None = None) -> StudyLayout:
    """targets/<t>/: data/oracle and data/pseudo of one Oracle target, reading `images`
    (default: the Oracle's)."""
    return StudyLayout(root / "targets" / target_name(target), images or oracle_images(params, root))


def study_name(root: Path) -> str:
    """The study's folder name: it names the report and the MLflow experiment."""
    return Path(root).resolve().name


def rows_dir(root: Path) -> Path:
    """rows/<name>.json: a row's scores and learning curve, kept in git (the next session's record)."""
    return root / "rows"


def row_path(root: Path, name: str) -> Path:
    return rows_dir(root) / f"{name}.json"


def networks_dir(root: Path) -> Path:
    """networks/<name>/: a row's trained network and checkpoint (DVC cache; a fresh clone lacks them)."""
    return root / "networks"


def results_dir(root: Path) -> Path:
    return root / "results"


def budget_sources(params: Params) -> list[str]:
    """`study.label_sources`: the sources compared with `full` at each budget. `full` itself is
    trained once per seed by its own stages, so it must not be listed."""
    if "full" in params.study.label_sources:
        raise ParamsError(
            "study.label_sources: remove 'full': it is the reference, trained once per seed "
            "by the stages full@<seed>; list the sources compared with it"
        )
    return list(params.study.label_sources)
