"""Train a data-set study's missing rows several at a time, then record each in dvc.lock.

    python scripts/run_rows.py studies/dataset_camvid --jobs 2             # every missing row
    python scripts/run_rows.py studies/dataset_camvid --only full@ --dry   # list what would run
    python scripts/run_rows.py studies/dataset_camvid --only 'train@*-0.95-*' --jobs 2  # one budget

DVC runs stages one after another; this runs N rows at once, one torch thread each, so that rows
keep every core busy. Rows run seed by seed (every source of seed 0, then of seed 1, ...), so a
batch stopped early leaves whole seeds, which pair. A row is missing when its rows/<name>.json is absent. Each runs its
stage's own command from dvc.yaml (plus `runtime.threads=1`), its output going to
logs/rows/<name>.log in the study, and `dvc commit -f <stage>` records it as soon as it ends, so a
killed batch keeps every finished row. Rows whose params or code changed are not missing: `dvc
repro` retrains those. Rows of a budget source need the pseudo-labels: run the study's
`propagate` stage first (reports/dataset_level.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROW_STAGES = ("full@", "train@", "convergence")


def missing_rows(study: Path) -> list[tuple[str, str, Path, str]]:
    """(stage address, command, working folder, row name) of the study's rows with no rows/<name>.json."""
    from dvc.repo import Repo

    study = study.resolve()
    repo = Repo(str(study))
    found = []
    for stage in repo.index.stages:
        if Path(stage.path).resolve() != study / "dvc.yaml" or not stage.name.startswith(ROW_STAGES):
            continue
        rows = [o.def_path for o in stage.outs if o.def_path.startswith("rows/") and o.def_path.endswith(".json")]
        if len(rows) == 1 and not (Path(stage.wdir) / rows[0]).is_file():
            found.append((stage.addressing, stage.cmd, Path(stage.wdir), Path(rows[0]).stem))
    return found


def seed_of(name: str) -> int:
    """The training seed a row name ends with (full-3, pseudo-0.95-3); -1 for others (full-x2)."""
    last = name.rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else -1


def selected(stage: str, only: str) -> bool:
    """--only: a stage-name prefix (full@), or a glob when it has wildcards (train@*-0.95-*)."""
    return fnmatch.fnmatchcase(stage, only if any(c in only for c in "*?[") else only + "*")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("study", type=Path, help="the study folder (holds dvc.yaml)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="rows at a time (default: cores)")
    ap.add_argument(
        "--only", default="", help="only stages whose name starts with this (full@) or matches it ('train@*-0.95-*')"
    )
    ap.add_argument("--dry", action="store_true", help="list the missing rows and stop")
    args = ap.parse_args(argv)
    if not (args.study / "dvc.yaml").is_file():
        print(f"run_rows: error: {args.study / 'dvc.yaml'}: not found (give a study folder)", file=sys.stderr)
        return 2
    todo = [r for r in missing_rows(args.study) if selected(r[0].split(":")[-1], args.only)]
    todo.sort(key=lambda r: seed_of(r[3]))  # stable: the stage order within a seed
    print(f"[run_rows] {len(todo)} missing rows, {args.jobs} at a time", flush=True)
    if args.dry:
        for address, cmd, _, _ in todo:
            print(f"{address}: {cmd}")
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dvc_lock = threading.Lock()  # one DVC command at a time: DVC locks the repository
    t0 = time.perf_counter()

    def run(item: tuple[str, str, Path, str]) -> bool:
        address, cmd, wdir, name = item
        log = wdir / "logs" / "rows" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[run_rows] start {address} (log {log})", flush=True)
        with open(log, "w") as out:
            done = subprocess.run(f"{cmd} runtime.threads=1", shell=True, cwd=wdir, env=env, stdout=out, stderr=out)
        if done.returncode != 0:
            print(f"[run_rows] FAILED {address} (exit {done.returncode}; see {log})", flush=True)
            return False
        with dvc_lock:
            for _ in range(60):  # another DVC command (a report, a status) may hold the repo's lock a while
                commit = subprocess.run(
                    [sys.executable, "-m", "dvc", "commit", "-f", "-q", address], capture_output=True, text=True
                )
                if commit.returncode == 0 or "lock" not in commit.stderr.lower():
                    break
                time.sleep(10)
        if commit.returncode != 0:
            print(f"[run_rows] FAILED to record {address}: {commit.stderr.strip()}", flush=True)
            return False
        print(f"[run_rows] done {address} ({(time.perf_counter() - t0) / 60:.1f} min in)", flush=True)
        return True

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(run, todo))
    print(f"[run_rows] {sum(results)} of {len(todo)} rows trained and recorded", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
