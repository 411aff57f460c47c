"""`howlow budget-order`: the training-order experiment of a budget study (stage `order`).

On the revealed pixels of one run (dvc.yaml passes the first rule and seed as `oracle.strategy` and
`oracle.seed`), a fresh network is trained in reveal order, all at once and shuffled
(howlow.oracle.replay). Output `training_order.json`; `{}` with `budget.training_order: false`.
"""

from __future__ import annotations

from ...data import load_prepared
from ...io import DataError, read_json, write_json
from ...layout import Layout
from ...oracle.replay import training_order
from ...params import Params
from ...stages.oracle import use_runtime
from . import items, order_path, run_path


def run(params: Params, layout: Layout) -> dict:
    p = params.oracle
    out: dict = {}
    if params.budget.training_order:
        use_runtime(params)
        source = run_path(layout, p.strategy, p.seed)
        if not source.is_file():
            raise DataError(f"{source}: not found; stage run@{p.strategy}-{p.seed} writes it")
        revealed = read_json(source)["revealed"]
        prepared = load_prepared(layout.prepared)
        todo = items(params, prepared, p.seed)
        missing = [key for key, *_ in todo if key not in revealed]
        if missing:
            raise DataError(f"{source}: no revealed pixels for {missing[:3]}; rerun its stage")
        orders = training_order(
            todo, revealed, prepared.n_classes, p, params.runtime.oracle_batch, params.runtime.device
        )
        out = {"rule": p.strategy, "seed": p.seed, "images": len(todo), "final_accuracy": orders}
    write_json(order_path(layout), out)
    return out
