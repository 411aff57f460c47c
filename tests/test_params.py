"""load_params: params.yaml as the one source of defaults, overlays, key=value overrides, and
ParamsError messages naming file, key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT, make_params
from howlow.params import Params, ParamsError, load_params

DEFAULTS = ROOT / "params.yaml"


@pytest.fixture
def params_file(tmp_path, monkeypatch):
    """Write a params file in tmp_path and return its (relative) path."""
    monkeypatch.chdir(tmp_path)

    def write(text: str = "", name: str = "params.yaml") -> Path:
        path = Path(name)
        path.write_text(text)
        return path

    return write


def error(path, overrides=()) -> str:
    """The message of loading `path` as an overlay on the project's params.yaml."""
    with pytest.raises(ParamsError) as exc:
        load_params([DEFAULTS, path], overrides)
    return str(exc.value)


def test_params_yaml_holds_every_default_and_the_schema_none():
    """params.yaml alone is a complete set; the schema requires every key (no second recipe)."""
    p = load_params(DEFAULTS)
    assert p == make_params()
    assert p.oracle.strategy == "error_center" and p.data.layout == "synthetic"
    assert p.dataset_name == "synthetic"

    def required(model) -> bool:
        return all(
            f.is_required()
            and (not isinstance(f.annotation, type) or not issubclass(f.annotation, Params) or required(f.annotation))
            for f in model.model_fields.values()
        )

    for group in Params.model_fields.values():
        assert required(group.annotation), group


def test_a_missing_key_is_named(params_file):
    tree = yaml.safe_load(DEFAULTS.read_text())
    del tree["oracle"]["lr"]
    with pytest.raises(ParamsError) as exc:
        load_params(params_file(yaml.safe_dump(tree), "full.yaml"))
    message = str(exc.value)
    assert message.startswith("full.yaml: invalid params") and "  oracle.lr: missing" in message


def test_an_empty_overlay_changes_nothing(params_file):
    assert load_params([DEFAULTS, params_file("")]) == load_params(DEFAULTS)


def test_file_values_are_read(params_file):
    """Values in the overlay (grouped per stage, `validate` by its alias) replace the defaults; others stay."""
    p = load_params(
        [
            DEFAULTS,
            params_file("oracle:\n  target_accuracy: 0.9\n  strategy: random\nvalidate:\n  max_void_fraction: 0.2\n"),
        ]
    )
    assert p.oracle.target_accuracy == 0.9 and p.oracle.strategy == "random"
    assert p.validate_.max_void_fraction == 0.2
    assert p.oracle.pixels_per_round == make_params().oracle.pixels_per_round
    assert p.to_dict()["validate"]["max_void_fraction"] == 0.2


def test_overrides(params_file):
    """key=value overrides parse YAML values: float, bool, list and nested groups, over the file's values."""
    path = [DEFAULTS, params_file("oracle:\n  target_accuracy: 0.9\n")]
    p = load_params(
        path,
        [
            "oracle.target_accuracy=0.95",
            "oracle.coords=false",
            "oracle.scales=[1, 3.5]",
            "data.synthetic.n_train=3",
            "train.label_sources=[full, sparse]",
            "validate.min_class_pixels=7",
        ],
    )
    assert p.oracle.target_accuracy == 0.95 and isinstance(p.oracle.target_accuracy, float)
    assert p.oracle.coords is False
    assert p.oracle.scales == [1.0, 3.5]
    assert p.data.synthetic.n_train == 3 and p.data.synthetic.n_val == make_params().data.synthetic.n_val
    assert p.train.label_sources == ["full", "sparse"]
    assert p.validate_.min_class_pixels == 7
    # the last override of a key wins; the file itself is not changed
    assert load_params(path, ["oracle.seed=1", "oracle.seed=2"]).oracle.seed == 2
    assert load_params(path).oracle.target_accuracy == 0.9


@pytest.mark.parametrize(
    "text, overrides, key, rule",
    [
        ("oracle:\n  foo: 1\n", [], "oracle.foo", "unknown key"),
        ("", ["oracle.foo=1"], "oracle.foo", "unknown key"),
        ("colour: red\n", [], "colour", "unknown key"),
        (
            "oracle:\n  strategy: nearest\n",
            [],
            "oracle.strategy",
            "'random', 'random_error', 'error_center', 'margin', 'entropy' or 'pixelpick'",
        ),
        ("", ["oracle.target_accuracy=1.5"], "oracle.target_accuracy", "less than or equal to 1"),
        ("oracle:\n  pixels_per_round: -3\n", [], "oracle.pixels_per_round", "greater than or equal to 1"),
        ("", ["oracle.scales=[1, -2]"], "oracle", "oracle.scales must all be > 0"),
        ("", ["oracle.fourier=13"], "oracle.fourier", "less than or equal to 12"),
        ("", ["oracle.grid=[8,0]"], "oracle", "between 1 and 256"),
        ("", ["oracle.model=unet"], "oracle.model", "unknown key"),
        ("", ["oracle.superpixels=[100]"], "oracle.superpixels", "unknown key"),
        ("", ["oracle.ensemble=0"], "oracle.ensemble", "greater than or equal to 1"),
        ("", ["oracle.geodesic=1"], "oracle.geodesic", "less than 1"),
        ("data:\n  layout: segnet\n", [], "data", "data.source 'synthetic' goes with data.layout 'synthetic'"),
        ("", ["data.source=synthetic", "data.layout=segnet"], "data", "goes with data.layout"),
        ("", ["data.source=camvid"], "data", "goes with data.layout"),
        # strict types: a YAML bool is not a number, a quoted number is not a number
        ("", ["oracle.pixels_per_round=true"], "oracle.pixels_per_round", "Input should be a valid integer"),
        ("", ['train.epochs="5"'], "train.epochs", "Input should be a valid integer"),
        ("", ["oracle.coords=1"], "oracle.coords", "Input should be a valid boolean"),
        ("", ["orchestration.cron=not a cron"], "orchestration.cron", "a cron expression has 5 fields"),
        ("", ["orchestration.cron=0 25 * * *"], "orchestration.cron", "hour '25': '25' is not a value from 0 to 23"),
    ],
)
def test_invalid_values_name_file_key_and_rule(params_file, text, overrides, key, rule):
    """Schema violations: one ParamsError naming the params file, the dotted key and the broken rule."""
    message = error(params_file(text, "my_params.yaml"), overrides)
    assert message.startswith(f"{DEFAULTS} + my_params.yaml: invalid params")
    assert f"  {key}: " in message
    assert rule in message


def test_bad_value_shows_input(params_file):
    """The offending value is quoted in the message."""
    message = error(params_file("oracle:\n  target_accuracy: 1.5\n"))
    assert "oracle.target_accuracy" in message and "(got 1.5)" in message


def test_several_errors_reported_together(params_file):
    """Every invalid key is listed, not just the first."""
    message = error(params_file("oracle:\n  target_accuracy: 2\n  pixels_per_round: 0\n  foo: 1\n"))
    for key in ("oracle.target_accuracy", "oracle.pixels_per_round", "oracle.foo"):
        assert key in message


@pytest.mark.parametrize(
    "override, rule",
    [
        ("oracle.target_accuracy", "expected key=value"),
        ("=0.5", "expected key=value"),
        ("oracle.target_accuracy.x=1", "'target_accuracy' is not a group"),
        ("oracle.scales=[1, 2", "not valid YAML"),
    ],
)
def test_bad_override_syntax(params_file, override, rule):
    """A malformed override is a ParamsError quoting the override and the rule."""
    message = error(params_file("oracle:\n  target_accuracy: 0.9\n"), [override])
    assert repr(override) in message and rule in message


def test_bad_override_names_file(params_file):
    """Override errors name the params file they were applied to, like every other ParamsError."""
    message = error(params_file("", "my_params.yaml"), ["oracle.target_accuracy"])
    assert "my_params.yaml" in message


def test_missing_file(params_file):
    """A missing params file is a ParamsError naming it."""
    message = error(Path("nope/params.yaml"))
    assert "nope/params.yaml" in message and "not found" in message


@pytest.mark.parametrize(
    "text, rule",
    [
        ("oracle:\n  target_accuracy: [0.9\n", "not valid YAML"),
        ("oracle: {a: 1\n", "not valid YAML"),
        ("- oracle\n- data\n", "top level must be a mapping"),
    ],
)
def test_invalid_yaml(params_file, text, rule):
    """Unparseable YAML, or YAML that is not a mapping of groups, is a ParamsError naming the file."""
    message = error(params_file(text, "bad.yaml"))
    assert message.startswith("bad.yaml: ") and rule in message


def test_params_are_frozen(params_file):
    """Loaded params cannot be mutated by a stage."""
    p = load_params([DEFAULTS, params_file("")])
    with pytest.raises(ValidationError, match="frozen"):
        p.oracle.target_accuracy = 0.5  # type: ignore[misc]


def test_errors_say_which_layer_set_the_key(params_file):
    """With an overlay, a bad value is traced to the file (or override) that set it."""
    message = error(params_file("oracle:\n  target_accuracy: 1.5\n", "study.yaml"))
    assert "oracle.target_accuracy: " in message and "[study.yaml]" in message
    message = error(params_file("", "study.yaml"), ["oracle.fourier=13"])
    assert "[override oracle.fourier=13]" in message


GOOD_CRONS = [
    "0 3 * * *",
    "*/15 * * * *",
    "0 3 * * mon-fri",
    "0 0 1 jan,jul *",
    "5 4 * * sun",
    "0 22 * * 1-5/2",
    "@daily",
    "@hourly",
    "0 3 * * 7",
]
BAD_CRONS = [
    "not a cron",
    "60 * * * *",
    "0 3 * *",
    "1-2-3 * * * *",
    "*/0 * * * *",
    "0 3 32 * *",
    "0 3 * 13 *",
    "0 3 * * 8",
    "0 3 * * funday",
    "a b c d e",
    "",
]


@pytest.mark.parametrize("cron", GOOD_CRONS + BAD_CRONS)
def test_cron_rule_is_prefects_on_standard_cron(cron):
    """Loading params refuses a cron string that Prefect's schedule would refuse later, in `howlow
    serve`; the standard five-field cron Prefect takes is taken. (Prefect's croniter also takes
    extensions such as a seconds field or L and #; params refuses them: the rule is standard cron.)"""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError as PrefectError

    from howlow.params import cron_problem

    try:
        CronSchedule(cron=cron)
        prefect_ok = True
    except PrefectError:
        prefect_ok = False
    assert prefect_ok == (cron in GOOD_CRONS)
    assert (cron_problem(cron) is None) == prefect_ok, cron_problem(cron)


def test_write_into_sets_keys_and_keeps_the_rest_of_the_file(tmp_path):
    """What a flow run with overrides writes where DVC reads params: the values it ran with, every
    other line (comments, quoting, flow-style lists) as it was."""
    from howlow.params import differences, write_into

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    overrides = ["oracle.target_accuracy=0.95", "oracle.scales=[1.0, 2.0]", "study.oracle_scale=0.5"]
    run, base = load_params(path, overrides), load_params(path)
    changes = differences(run, base)
    assert changes == {"oracle.target_accuracy": 0.95, "oracle.scales": [1.0, 2.0], "study.oracle_scale": 0.5}
    write_into(path, changes)
    assert load_params(path) == run
    before, after = (ROOT / "params.yaml").read_text().splitlines(), path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 3
    assert all("#" in b for _, b in changed)  # each changed line kept its comment
    assert any(b.lstrip().startswith("scales: [1.0, 2.0]") for _, b in changed)
