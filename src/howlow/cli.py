"""`howlow <command> [-p params.yaml [-p overlay.yaml]] [key=value ...]`: one command per pipeline stage,
plus the studies' and MLflow's commands.

DVC's stage commands and the Prefect flow call the same stage functions. Errors in params or data
print one clear message and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import itertools
import json
import os
import sys
from pathlib import Path

from . import __version__
from .console import setup_logging
from .io import DataError
from .layout import Layout
from .params import ParamsError, describe, load_params

# command -> ("module:function", help); imported on use so `howlow --help` is instant. Each function
# takes (params, layout).
COMMANDS = {
    "prepare": ("howlow.stages.prepare:run", "import the data set (or build the synthetic default) into data/prepared"),
    "validate": ("howlow.stages.validate:run", "Great Expectations checks; report in reports/validation"),
    "oracle": ("howlow.stages.oracle:run", "per-image Oracle: reveal pixels until the target accuracy"),
    "pseudolabel": ("howlow.stages.pseudolabel:run", "label every training pixel with its per-image network"),
    "train": ("howlow.stages.train:run", "train the data-set network for each label source"),
    "evaluate": ("howlow.stages.evaluate:run", "val-split metrics, plot data and figures in eval/"),
    "track": ("howlow.stages.track:run", "log the pipeline run to MLflow (parent run + one nested run per image)"),
    "compare": ("howlow.tracking:compare_command", "print the budget table of all MLflow runs and plot it"),
    "params": ("howlow.params:show", "list every params key with its value and meaning (after -p files and overrides)"),
    "budget-run": ("howlow.studies.budget.run:run", "budget study: one rule and seed (stage run@<rule>-<seed>)"),
    "budget-order": ("howlow.studies.budget.order:run", "budget study: the training-order experiment"),
    "budget-report": ("howlow.studies.budget.report:run", "budget study: mean ± std over seeds, paired differences"),
    "study-prepare-oracle": (
        "howlow.studies.dataset.annotate:prepare_oracle",
        "data-set study: the data set at study.oracle_scale (stage prepare_oracle)",
    ),
    "study-annotate": (
        "howlow.studies.dataset.annotate:annotate",
        "data-set study: the Oracle annotates every training image once, to the highest target (annotate)",
    ),
    "study-budget": (
        "howlow.studies.dataset.annotate:budget",
        "data-set study: the per-image budget per target and sequence, from the annotations there are (budget)",
    ),
    "study-propagate": (
        "howlow.studies.dataset.propagate:propagate",
        "data-set study: pseudo-labels per target from the clicks and from random clicks (propagate)",
    ),
    "study-train": (
        "howlow.studies.dataset.rows:train",
        "data-set study: train and score one row (full@<seed>, train@<source>-<t>-<seed>)",
    ),
    "study-convergence": (
        "howlow.studies.dataset.rows:convergence",
        "data-set study: full for twice the epochs (stage convergence)",
    ),
    "study-convergence-source": (
        "howlow.studies.dataset.convergence:run",
        "data-set study: a budget source at study.convergence_target, twice the epochs (convergence_sources)",
    ),
    "study-report": (
        "howlow.studies.dataset.report:run",
        "data-set study: mean ± std, share of full, paired differences",
    ),
    "study-evaluate": (
        "howlow.studies.dataset.external:run",
        "data-set study: score its trained networks on another labelled folder (data.source=...)",
    ),
    "study-track": ("howlow.studies.dataset.track:run", "data-set study: one MLflow run per row"),
    "label-studio-config": (
        "howlow.labelstudio.config:write_config",
        "write the Label Studio labelling config of data/prepared's classes (labelstudio.config)",
    ),
    "label-studio-backend": (
        "howlow.labelstudio.server:serve",
        "serve the Label Studio ML backend: a person's keypoints train the Oracle's per-image network",
    ),
    "label-studio-up": (
        "howlow.labelstudio.studio:up",
        "the backend and Label Studio (.venv-ls) on 127.0.0.1, with a project of the training images",
    ),
    "label-studio-import": (
        "howlow.labelstudio.export:run",
        "a Label Studio JSON export (labelstudio.export) as the Oracle's records in data/oracle",
    ),
    "serve": ("flows.pipeline:serve", "serve the Prefect pipeline flow on the cron schedule of params.yaml"),
}


def entry(command: str):
    module, _, function = COMMANDS[command][0].partition(":")
    if module.startswith("flows."):
        sys.path.insert(0, str(Path.cwd()))  # flows/ lives in the project, not in the package
    return getattr(importlib.import_module(module), function)


# the params groups each command reads: `howlow <command> --help` lists their keys
GROUPS = {
    "prepare": ("data",),
    "validate": ("validate",),
    "oracle": ("oracle", "runtime"),
    "pseudolabel": ("oracle", "runtime"),
    "train": ("train", "runtime"),
    "evaluate": ("evaluate", "runtime"),
    "track": ("tracking",),
    "compare": ("tracking",),
    "serve": ("orchestration",),
    "budget-run": ("budget", "oracle", "runtime"),
    "study-annotate": ("study", "oracle", "runtime"),
    "study-train": ("study", "train", "runtime"),
}


def summary(result: object, depth: int = 0) -> object:
    """What a command prints when it ends: its result's numbers and names, without the lists (loss
    curves, per-image rows) and detail below two levels that its output files hold."""
    if isinstance(result, dict):
        return {
            k: summary(v, depth + 1)
            for k, v in result.items()
            if not isinstance(v, list | tuple) and not (isinstance(v, dict) and depth >= 2) and k != "fingerprint"
        }
    return result


def keys_help(command: str, params_files: list[str]) -> str:
    """The epilog of `howlow <command> --help`: the keys it reads, with their values and meanings."""
    groups = GROUPS.get(command)
    if groups is None:
        return "params: every key of params.yaml (`howlow params` lists them with their meanings)"
    try:
        params = load_params([Path(f) for f in params_files])
    except (ParamsError, DataError, OSError) as exc:
        return f"params keys: unavailable here ({exc})"
    lines = describe(params, groups)
    return "params keys (value here, meaning; override with key=value):\n" + "\n".join(f"  {line}" for line in lines)


def os_error_message(exc: OSError) -> str:
    """`<file>: <what is wrong>`; for a file standing where a folder must be, that file (not the
    temporary path the stage was writing under it)."""
    what = exc.strerror or str(exc)
    if not exc.filename:
        return what
    path = Path(exc.filename)
    if exc.errno == errno.ENOTDIR:
        for blocker in (path, *path.parents):
            if blocker.exists() and not blocker.is_dir():
                return f"{blocker}: is a file, but a folder is needed there (writing {path})"
    return f"{path}: {what}"


def _failed_under_dvc() -> int:
    """Exit status 2; run by `dvc repro` (DVC_STAGE set), the hint DVC does not give: it removed the
    stage's previous outputs before running it."""
    if stage := os.environ.get("DVC_STAGE"):
        print(
            f"hint: DVC removed the outputs of stage {stage} before running it (persisted ones excepted); "
            f"`dvc checkout {stage}` restores the last recorded ones from the DVC cache, and "
            "`git checkout -- <file>` those kept in git (cache: false)",
            file=sys.stderr,
        )
    return 2


def _verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more detail (each image, each epoch)")
    parser.add_argument("-q", "--quiet", action="count", default=default, help="warnings and errors only")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="howlow", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"howlow {__version__}")
    _verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    asks_help = "-h" in argv or "--help" in argv  # the keys are read from the params files only then
    for name, (_, help_) in COMMANDS.items():
        files = [a for flag, a in itertools.pairwise(argv) if flag in ("-p", "--params")] or ["params.yaml"]
        epilog = keys_help(name, files) if asks_help and name in argv else None
        sp = sub.add_parser(
            name, help=help_, description=help_, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        sp.add_argument(
            "-p",
            "--params",
            action="append",
            metavar="FILE",
            help="params file; repeat to overlay files in order (default: params.yaml)",
        )
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. oracle.target_accuracy=0.95")
        _verbosity(sp, argparse.SUPPRESS)  # `howlow -v oracle` and `howlow oracle -v` alike
    args = parser.parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    try:
        params = load_params(args.params or ["params.yaml"], args.overrides)
        result = entry(args.command)(params, Layout.here())
    except (ParamsError, DataError) as exc:
        print(f"howlow {args.command}: error: {exc}", file=sys.stderr)
        return _failed_under_dvc()
    except OSError as exc:  # unwritable output folder, disk full, a file where a folder should be ...
        print(f"howlow {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return _failed_under_dvc()
    except BaseException:
        _failed_under_dvc()
        raise
    if isinstance(result, dict) and args.quiet == 0:
        print(json.dumps(summary(result), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
