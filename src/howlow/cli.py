"""`howlow <stage> [-p params.yaml] [key=value ...]`: one subcommand per pipeline stage.

DVC's stage commands and the Prefect flow call the same stage functions. Errors in params or data
print one clear message and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from .io import DataError
from .params import Params, ParamsError, load_params


def _prepare(p: Params):
    from .data import prepare
    return {"prepared": str(prepare(p))}


def _validate(p: Params):
    from .validate import validate
    return validate(p)


def _oracle(p: Params):
    from .oracle import oracle
    return oracle(p)


def _pseudolabel(p: Params):
    from .pseudolabel import pseudolabel
    return pseudolabel(p)


def _train(p: Params):
    from .train import train
    return train(p)


def _evaluate(p: Params):
    from .evaluate import evaluate
    return evaluate(p)


def _track(p: Params):
    from .track import track
    return track(p)


def _serve(p: Params):
    sys.path.insert(0, str(Path.cwd()))
    from flows.pipeline import serve
    return serve(p)


def _compare(p: Params):
    from .track import compare
    return compare(p)


STAGES = {
    "prepare": (_prepare, "import the data set (or build the synthetic default) into data/prepared"),
    "validate": (_validate, "Great Expectations checks of data/prepared; report in reports/validation"),
    "oracle": (_oracle, "per-image Oracle: reveal pixels until the target accuracy"),
    "pseudolabel": (_pseudolabel, "label every training pixel with its per-image network"),
    "train": (_train, "train the data-set network for each label source"),
    "evaluate": (_evaluate, "val-split metrics, plot data and figures in eval/"),
    "track": (_track, "log the pipeline run to MLflow (parent run + one nested run per image)"),
    "compare": (_compare, "print the budget table of all MLflow runs and plot it"),
    "serve": (_serve, "serve the Prefect pipeline flow on the cron schedule of params.yaml"),
}
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
        result = STAGES[args.stage][0](params)
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
