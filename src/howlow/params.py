"""The params schema: it validates, it holds no defaults. params.yaml is the one source of defaults.

Every stage entry point takes a `Params` object; the CLI and the Prefect flow build it with
`load_params(paths, overrides)`: the files deep-merged in order (a study's small overlay on the
project's params.yaml), then `key.sub=value` overrides (values parsed as YAML). A key missing from
all files, an unknown key or a value breaking its rule stops with the file, the key and the rule.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """Invalid params file or override; the message names the file, the key and the rule."""


class _Group(BaseModel):
    # strict: YAML's `true` is not an int, nor `"5"` a number (a lax schema would run with them)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _distinct(key: str, values: list) -> None:
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{key} must be a non-empty list without repeats")


class SyntheticParams(_Group):
    n_train: int = Field(ge=1)
    n_val: int = Field(ge=1)
    height: int = Field(ge=32)
    width: int = Field(ge=32)


class DataParams(_Group):
    # "synthetic" builds the embedded default; anything else is a folder (relative to the repo root).
    source: str
    layout: Literal["synthetic", "segnet", "images_labels"]
    void_id: int = Field(ge=0, le=255)
    scale: float = Field(gt=0, le=4)
    max_train: int = Field(ge=0, description="0 = all images")
    max_val: int = Field(ge=0, description="0 = all images")
    seed: int
    synthetic: SyntheticParams

    @model_validator(mode="after")
    def _source_matches_layout(self):
        if (self.source == "synthetic") != (self.layout == "synthetic"):
            raise ValueError("data.source 'synthetic' goes with data.layout 'synthetic' (and only it)")
        return self


class ValidateParams(_Group):
    max_void_fraction: float = Field(ge=0, le=1)
    # Every class of classes.json must occur in at least this many training pixels.
    min_class_pixels: int = Field(ge=0)


Strategy = Literal["random", "random_error", "error_center", "margin", "entropy", "pixelpick"]


class OracleParams(_Group):
    strategy: Strategy
    target_accuracy: float = Field(gt=0, le=1)
    max_fraction: float = Field(gt=0, le=1)
    initial_pixels: int = Field(ge=1)
    pixels_per_round: int = Field(ge=1)
    steps_per_round: int = Field(ge=1)
    lr: float = Field(gt=0)
    # the per-image network: a per-pixel MLP on the cues below (howlow.oracle.networks)
    width: int = Field(ge=4, description="hidden units")
    depth: int = Field(ge=1, le=6, description="hidden layers")
    # Input cues computed from the image itself: RGB, Gaussian-blurred RGB and local contrast at
    # these scales (pixels), and x/y coordinates.
    scales: list[float]
    coords: bool
    # sin/cos of x and y at this many octaves (periods of 1, 1/2, 1/4, ... of the image's extent):
    # position at high frequency, so a click can fix a small region without moving the rest
    fourier: int = Field(ge=0, le=12)
    # learnable position embeddings (grid_dim numbers per node) on lattices of n x n cells spanning the
    # image, one per entry, read by bilinear interpolation: local position, a click moves only its cells
    grid: list[int]
    grid_dim: int = Field(ge=1, le=64)
    # networks per image, trained on the same revealed pixels from different initial weights; the
    # Oracle scores (and pseudolabel uses) their mean softmax. Costs `ensemble` times the compute.
    ensemble: int = Field(ge=1, le=16)
    # weight w of the geodesic click vote (howlow.oracle.geodesic): each pixel also gets the class of its
    # nearest revealed pixel, reached along the image at a cost of `geodesic_edge` per unit of colour
    # gradient; the prediction is (1 - w) softmax + w vote, so the vote decides where the network is unsure
    geodesic: float = Field(ge=0, lt=1)
    geodesic_edge: float = Field(gt=0)
    warm_start: bool  # keep training the same network across rounds (else restart each round)
    # reveal max(pixels_per_round, round_growth x revealed so far) per round: fewer rounds on big images
    round_growth: float = Field(ge=0, le=1)
    seed: int
    max_images: int = Field(ge=0, description="0 = every training image")

    @model_validator(mode="after")
    def _positive_scales(self):
        if any(s <= 0 for s in self.scales):
            raise ValueError("oracle.scales must all be > 0")
        if any(not 1 <= n <= 256 for n in self.grid):
            raise ValueError("oracle.grid must all be between 1 and 256 (cells across each side)")
        return self


LabelSource = Literal["full", "pseudo", "confident", "sparse", "random", "random_pseudo"]


class TrainParams(_Group):
    label_sources: list[LabelSource]
    model: Literal["unet", "lraspp"]
    width: int = Field(ge=4)
    depth: int = Field(ge=1, le=6)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    # training crop [height, width]; [] = the smallest training image (rounded down to a multiple of 8)
    crop: list[int]
    lr: float = Field(gt=0)
    augment: bool  # a random crop and a horizontal flip; off: a plain crop
    # the crop's zoom: RandomResizedCrop's area range [min, max]; [] = crops at the image's own scale
    zoom: list[float]
    norm: Literal["group", "batch"]  # the U-Net blocks' normalisation
    # per-class loss weights from each source's own labels: none, or median_frequency (SegNet's
    # balancing: rare classes such as poles and signs weigh more)
    class_weights: Literal["none", "median_frequency"]
    seed: int
    # label source `confident`: pseudo-labels whose per-image network confidence (max softmax) is at
    # least this; the other pixels are left unlabelled
    confidence: float = Field(ge=0, le=1)
    # score the val split every this many epochs for the learning curve in models/<source>.json;
    # 0 = only after the last epoch
    eval_every: int = Field(ge=0)

    @model_validator(mode="after")
    def _sources_unique(self):
        _distinct("train.label_sources", self.label_sources)
        if self.crop and (len(self.crop) != 2 or min(self.crop) < 8):
            raise ValueError("train.crop must be [] or [height, width], each >= 8")
        if self.zoom and (len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1] <= 1):
            raise ValueError("train.zoom must be [] or [min, max] with 0 < min <= max <= 1")
        return self


class StudyParams(_Group):
    """A data-set level study (studies/dataset_*/): label sources compared over budgets and seeds."""

    targets: list[float]  # Oracle targets, i.e. annotation budgets
    seeds: list[int]  # data-set training seeds
    label_sources: list[LabelSource]
    # also train `full` on the first seed for twice the epochs: the report shows whether the
    # schedule has converged (mIoU barely moves) or not
    convergence_check: bool
    # with convergence_check, also each label source at this Oracle target (one of `targets`): its
    # own schedule may converge later than full labels'; null = `full` only
    convergence_target: float | None
    # resolution (data.scale factor) the Oracle annotates at; null = data.scale. The data-set networks
    # always train and are scored at data.scale: e.g. annotate CamVid at native resolution (1.0), where
    # the budget in % means what the paper means, and train at 0.25 where a CPU can
    oracle_scale: float | None = Field(gt=0, le=1)
    # sequences (file-name prefixes) whose frames the Oracle's recipe was tuned on; the reports give
    # the budget of every other sequence as the held-out figure
    tuned_on: list[str]

    @model_validator(mode="after")
    def _valid(self):
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise ValueError("study.targets must be a non-empty list of accuracies in (0, 1]")
        _distinct("study.seeds", self.seeds)
        _distinct("study.label_sources", self.label_sources)
        if self.convergence_target is not None and self.convergence_target not in self.targets:
            raise ValueError(f"study.convergence_target must be null or one of study.targets {self.targets}")
        return self


class BudgetParams(_Group):
    """A per-image budget study (studies/budget_*/): selection rules over seeds."""

    strategies: list[Strategy]
    seeds: list[int]
    split: Literal["train", "val"]
    images: int = Field(ge=0, description="the first N images of the split; 0 = all")
    training_order: bool  # also train on the revealed pixels in reveal order / all at once / shuffled

    @model_validator(mode="after")
    def _valid(self):
        _distinct("budget.strategies", self.strategies)
        _distinct("budget.seeds", self.seeds)
        return self


class EvaluateParams(_Group):
    n_figures: int = Field(ge=0)


class TrackingParams(_Group):
    experiment: str
    # Empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project folder.
    tracking_uri: str
    compare_all: bool


_CRON_FIELDS = (  # name, lowest, highest, names for the values (cron's own spelling)
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def cron_problem(text: str) -> str | None:
    """Why `text` is not a five-field cron expression (as Prefect's CronSchedule takes), or None."""
    if text.strip().lower() in _CRON_MACROS:
        return None
    fields = text.split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for item in value.split(","):
            span, _, step = item.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return f"{name} {item!r}: the step after / must be a positive number"
            ends = [] if span == "*" else span.split("-")
            if len(ends) > 2 or (span != "*" and not all(ends)):
                return f"{name} {item!r}: expected *, a value or a range a-b"
            for end in ends:
                v = names.index(end.lower()) + low if end.lower() in names else int(end) if end.isdigit() else None
                if v is None or not low <= v <= high:
                    return f"{name} {item!r}: {end!r} is not a value from {low} to {high}"
    return None


class OrchestrationParams(_Group):
    cron: str
    deployment: str
    # Address of an existing Dask scheduler (tcp://host:8786) for the per-image Oracle runs;
    # empty: $HOWLOW_DASK_ADDRESS, else threads on this machine (one per core).
    dask_address: str

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, cron: str) -> str:
        if (problem := cron_problem(cron)) is not None:
            raise ValueError(problem)
        return cron


class RuntimeParams(_Group):
    # How the work runs, never what it computes: results do not depend on these.
    threads: int = Field(ge=0, description="torch intra-op threads; 0 = all cores")
    oracle_batch: int = Field(ge=1, description="per-image Oracle networks trained at once")
    select_workers: int = Field(ge=1, description="threads scoring slots and picking pixels (GPU: many)")
    device: Literal["cpu", "cuda"]
    shard: list[int] = Field(description="[k, n]: the k-th of n processes sharing a study's per-image work")

    @field_validator("shard")
    @classmethod
    def _shard(cls, shard: list[int]) -> list[int]:
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError("expected [k, n] with 0 <= k < n, e.g. [0, 2] and [1, 2] for two processes")
        return shard


class LabelStudioParams(_Group):
    """A person as the Oracle in Label Studio (howlow.labelstudio): the backend and the import."""

    host: str = Field(min_length=1)  # the backend listens here; 127.0.0.1: this machine only
    port: int = Field(ge=1, le=65535)
    studio_port: int = Field(ge=1, le=65535, description="howlow label-studio-up: Label Studio's port")
    # training steps per interactive update (one click, one update): the Oracle's steps_per_round
    # for a person; howlow label-studio-import replays the clicks with the same steps
    steps_per_update: int = Field(ge=1)
    cache_tasks: int = Field(ge=1, description="tasks whose network stays in memory")
    threads: int = Field(ge=1, description="torch threads of the backend")
    max_request_bytes: int = Field(ge=1024)
    max_image_pixels: int = Field(ge=1)
    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT (relative to the project folder): a task's image URL
    # /data/local-files/?d=<path> names <document_root>/<path>
    document_root: str
    storage_roots: list[str]  # the only folders (relative to the project folder) task images are read from
    config: str  # where howlow label-studio-config writes the labelling config
    export: str  # the Label Studio JSON export howlow label-studio-import reads

    @model_validator(mode="after")
    def _valid(self):
        if not self.storage_roots:
            raise ValueError("labelstudio.storage_roots must name at least one folder")
        return self


class Params(_Group):
    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    oracle: OracleParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    study: StudyParams
    budget: BudgetParams
    orchestration: OrchestrationParams
    runtime: RuntimeParams
    labelstudio: LabelStudioParams

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @property
    def dataset_name(self) -> str:
        return "synthetic" if self.data.layout == "synthetic" else Path(self.data.source).name

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True, mode="json")


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 0.95, true, [a, b] work)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"override {override!r}: expected key=value, e.g. oracle.target_accuracy=0.95")
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"override {override!r}: {part!r} is not a group")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"override {override!r}: value is not valid YAML ({exc})") from exc


def _where(key: tuple, sources: list[tuple[str, dict]]) -> str:
    """The last source that set `key` (a file, or an override), for the error message."""
    for name, tree in reversed(sources):
        node = tree
        for part in key:
            if not isinstance(node, dict) or str(part) not in node:
                break
            node = node[str(part)]
        else:
            return name
    return ""


def _format_error(source: str, exc: ValidationError, sources: list[tuple[str, dict]]) -> str:
    lines = [f"{source}: invalid params"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = _where(tuple(err["loc"]), sources) if len(sources) > 1 else ""
        at = f" [{where}]" if where else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            lines.append(f"  {key}: missing (every key needs a value; params.yaml holds the defaults)")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{at}")
        else:
            lines.append(f"  {key}: {msg} (got {err.get('input')!r}){at}")
    return "\n".join(lines)


def merge(base: dict, overlay: dict) -> dict:
    """`overlay` deep-merged onto `base` (groups merge key by key; anything else is replaced)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_tree(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: top level must be a mapping of stage groups")
    return tree


def load_params(
    paths: str | Path | list[str | Path] | tuple[str | Path, ...] = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
) -> Params:
    """Params from one file or several (later files overlay earlier ones), then `overrides`."""
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    tree: dict = {}
    sources: list[tuple[str, dict]] = []
    for file in files:
        layer = read_tree(file)
        sources.append((str(file), layer))
        tree = merge(tree, layer)
    path = " + ".join(str(f) for f in files)  # how errors name the source
    for override in overrides:
        try:
            apply_override(tree, override)
            apply_override(layer := {}, override)
            sources.append((f"override {override}", layer))
        except ParamsError as exc:
            raise ParamsError(f"{path}: {exc}") from None
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise ParamsError(_format_error(path, exc, sources)) from None


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """A nested params tree as {dotted key: value}."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(params: Params, base: Params) -> dict[str, object]:
    """The dotted keys whose value in `params` differs from `base`, with `params`'s values."""
    mine, theirs = flatten(params.to_dict()), flatten(base.to_dict())
    return {key: value for key, value in mine.items() if theirs[key] != value}


def write_into(path: Path, values: dict[str, object]) -> None:
    """Set dotted keys in a params file in place, keeping its comments and order, as `dvc exp run -S`
    does: where DVC reads params, the file then holds the values a run used."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    from .io import atomic_write_bytes

    rt = YAML()  # round-trip: comments, order and quoting survive
    rt.preserve_quotes, rt.width = True, 4096
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    tree = rt.load(Path(path).read_text())
    for key, value in values.items():
        *groups, leaf = key.split(".")
        node = tree
        for group in groups:
            node = node[group]
        if isinstance(value, list):  # [a, b] on one line, as params.yaml writes lists
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[leaf] = value
    out = io.StringIO()
    rt.dump(tree, out)
    atomic_write_bytes(Path(path), out.getvalue().encode())


def comments(path: Path) -> dict[str, str]:
    """Each dotted key's end-of-line comment in a params file: what the key means."""
    from ruamel.yaml import YAML

    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            token = (node.ca.items.get(key) or [None, None, None])[2]
            # a comment token also holds the comment lines below it (they belong to the next key)
            out[f"{prefix}{key}"] = token.value.split("\n")[0].lstrip("# ").strip() if token is not None else ""
            if hasattr(value, "items"):
                walk(value, f"{prefix}{key}.")

    walk(YAML().load(Path(path).read_text()), "")
    return out


def describe(params: Params, groups: tuple[str, ...] | None = None) -> list[str]:
    """One line per key (of `groups`, else all): the key, its value and its meaning (the comment in
    the project's params.yaml, which a study's overlay need not repeat)."""
    from .layout import project_root

    defaults = project_root() / "params.yaml"
    notes = comments(defaults) if defaults.is_file() else {}
    leaves = {k: v for k, v in flatten(params.to_dict()).items() if groups is None or k.split(".")[0] in groups}
    width = max(len(k) for k in leaves)
    return [f"{key:<{width}}  {json.dumps(value):<24}  {notes.get(key, '')}".rstrip() for key, value in leaves.items()]


def show(params: Params, layout=None) -> dict:
    """`howlow params`: every key, its value (params files and overrides applied) and its meaning."""
    lines = describe(params)
    print("\n".join(lines))
    return {"keys": len(lines)}
