#!/usr/bin/env bash
# One command on a fresh clone: install, then run the whole pipeline on the embedded synthetic data
# set with `dvc repro`, then say where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
start=$(date +%s)
dvc repro "$@"
echo
echo "[howlow] pipeline finished in $(( $(date +%s) - start )) s. Results:"
python - <<'PY'
import json
m = json.load(open("eval/metrics.json"))
o = m["oracle"]
print(f"  oracle: {o['images']} images, mean {o['mean_revealed_pct']:.3f} % revealed "
      f"({o['mean_revealed_px']:.0f} px), {100 * o['reached_fraction']:.0f} % reached the target")
print(f"  pseudo-labels: accuracy {m['pseudolabel']['mean_accuracy']:.4f}")
for source, d in m["dataset"].items():
    print(f"  data-set network on {source:6s} labels: val mIoU {d['miou']:.4f} ({d['annotated_pct']:.3g} % of pixels labelled)")
page = json.load(open("logs/mlflow_run.json"))["ui_page"]
print(f"  MLflow:   .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1, then http://127.0.0.1:5000/{page}")
PY
cat <<'TXT'
  metrics:  eval/metrics.json, eval/details.json  (dvc metrics show --md eval/metrics.json)
  figures:  eval/figures/*.png (dvc plots show -> dvc_plots/index.html)
  data:     data/oracle/ (revealed pixels, curves), data/pseudo/ (pseudo-labels), models/
  checks:   reports/validation/docs/index.html (Great Expectations data docs)
TXT
