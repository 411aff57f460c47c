"""`howlow <stage> [-p params.yaml] [key=value ...]`: one subcommand per pipeline stage.

DVC's stage commands and the Prefect flow call the same stage functions. Errors in params or data
print one clear message and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import sys
from pathlib import Path

from .io import DataError
from .params import ParamsError, load_params

# stage -> (entry function "module:function", help); imported on use so `howlow --help` is instant
STAGES = {
    "prepare": ("howlow.data:prepare", "import the data set (or build the synthetic default) into data/prepared"),
    "validate": ("howlow.validate:validate", "Great Expectations checks; report in reports/validation"),
    "oracle": ("howlow.oracle:oracle", "per-image Oracle: reveal pixels until the target accuracy"),
    "pseudolabel": ("howlow.pseudolabel:pseudolabel", "label every training pixel with its per-image network"),
    "train": ("howlow.train:train", "train the data-set network for each label source"),
    "evaluate": ("howlow.evaluate:evaluate", "val-split metrics, plot data and figures in eval/"),
    "track": ("howlow.track:track", "log the pipeline run to MLflow (parent run + one nested run per image)"),
    "compare": ("howlow.track:compare", "print the budget table of all MLflow runs and plot it"),
    "budget": ("howlow.budget:budget", "per-image Oracle budget over rules and seeds -> reports/oracle_budget.md"),
    "study": ("howlow.study:study", "data-set level comparison over budgets and seeds -> reports/dataset_level.md"),
    "serve": ("flows.pipeline:serve", "serve the Prefect pipeline flow on the cron schedule of params.yaml"),
}


def entry(stage: str):
    module, _, function = STAGES[stage][0].partition(":")
    if module.startswith("flows."):
        sys.path.insert(0, str(Path.cwd()))  # flows/ lives in the project, not in the package
    return getattr(importlib.import_module(module), function)


SUMMARY_KEYS = ("prepared", "success", "images", "mean_revealed_pct", "mean_revealed_px", "reached_fraction",
                "mean_accuracy", "run_id")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="howlow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, (_, help_) in STAGES.items():
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("-p", "--params", default="params.yaml", help="params file (default: params.yaml)")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. oracle.target_accuracy=0.95")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, args.overrides)
        result = entry(args.stage)(params)
    except (ParamsError, DataError) as exc:
        print(f"howlow {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output folder, disk full, a file where a folder should be ...
        print(f"howlow {args.stage}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        short = {k: v for k, v in result.items() if k in SUMMARY_KEYS} or result
        print(json.dumps(short, indent=1, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
