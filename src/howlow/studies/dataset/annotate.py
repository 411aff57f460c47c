"""The Oracle's stages of a data-set study: the pipeline's own prepare, oracle and pseudolabel
functions, run on the study's folders (`howlow study-prepare-oracle`, `study-oracle`, `study-pseudolabel`).

`oracle.target_accuracy` names the target (dvc.yaml sets it from the matrix); its outputs go to
targets/<t>/data/oracle, targets/<t>/data/pseudo and targets/<t>/eval/plots.
"""

from __future__ import annotations

from ...layout import Layout
from ...params import Params, ParamsError
from ...stages import oracle as oracle_stage
from ...stages import prepare as prepare_stage
from ...stages import pseudolabel as pseudolabel_stage
from . import StudyLayout, oracle_images, oracle_scale_differs, target_layout


def prepare_oracle(params: Params, layout: Layout) -> dict:
    """The data set at `study.oracle_scale` into data/prepared_oracle."""
    if not oracle_scale_differs(params):
        raise ParamsError(
            f"study.oracle_scale: {params.study.oracle_scale} is the training scale (or null): "
            "the Oracle reads data/prepared; remove stage prepare_oracle from dvc.yaml"
        )
    scaled = params.model_copy(update={"data": params.data.model_copy(update={"scale": params.study.oracle_scale})})
    return prepare_stage.run(scaled, StudyLayout(layout.root, oracle_images(params, layout.root)))


def _target(params: Params) -> float:
    target = params.oracle.target_accuracy
    if target not in params.study.targets:
        raise ParamsError(f"oracle.target_accuracy: {target} is not one of study.targets {params.study.targets}")
    return target


def oracle(params: Params, layout: Layout) -> dict:
    return oracle_stage.run(params, target_layout(params, layout.root, _target(params)))


def pseudolabel(params: Params, layout: Layout) -> dict:
    return pseudolabel_stage.run(params, target_layout(params, layout.root, _target(params)))
