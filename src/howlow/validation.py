"""Check the prepared data set with a Great Expectations suite before any training.

Reads `manifest.csv` (one row per image) and `class_pixels.csv` from `data/prepared/`, runs one GX
expectation suite on each, writes `reports/validation/summary.json` and GX Data Docs
(`reports/validation/docs/index.html`), and raises `ValidationFailed` naming every broken rule with
the files that break it (the user's original files where the data set came from a folder).

Each validation is a named GX run, `<dataset>-<digest of data/prepared>`, on the data assets
`manifest` and `class_pixels` of the data source `prepared`. The stage keeps every run's results in
`logs/validation/` (GX's validation results store; DVC empties `reports/validation` before the
stage runs, so the history lives outside it), and the Data Docs index lists them all, newest first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .data import MANIFEST_COLUMNS, SPLITS, dataset_digest
from .io import VOID, DataError, read_json, write_json
from .params import Params

# GX must never phone home (no network here); it reads this when imported, which happens lazily in
# _run_gx (importing GX takes seconds, so `import howlow.validation` stays cheap for the CLI).
os.environ["GX_ANALYTICS_ENABLED"] = "false"

MAX_LINES_PER_RULE = 10  # the exception stays readable; summary.json lists every offending file


class ValidationFailed(DataError):
    """The prepared data set breaks validation rules; the message names each rule and file."""


@dataclass(frozen=True)
class Rule:
    name: str  # key in summary.json
    table: str  # "manifest" or "class_pixels"
    text: str  # the rule in plain words
    expectation: str  # GX expectation class name (GX is imported lazily: it takes seconds)
    kwargs: dict
    file: str = "label"  # the manifest column naming the file a failing row points to
    # one offending row -> what is wrong with it; None for table-level rules
    row: Callable[[dict], str] | None = None
    # the whole table -> what is wrong with it; for table-level rules
    table_detail: Callable[[pd.DataFrame], str] | None = None


def _size(r: dict) -> str:
    return f"label size {r['label_width']}x{r['label_height']} != image size {r['width']}x{r['height']}"


def _rules(params: Params, n_classes: int) -> list[Rule]:
    v = params.validate_
    return [
        Rule(
            "columns",
            "manifest",
            "manifest.csv must have every column the prepare stage writes",
            "ExpectTableColumnsToMatchSet",
            {"column_set": MANIFEST_COLUMNS, "exact_match": False},
            table_detail=lambda df: f"missing columns {sorted(set(MANIFEST_COLUMNS) - set(df))}",
        ),
        Rule(
            "height_match",
            "manifest",
            "label height must equal image height",
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "height", "column_B": "label_height"},
            row=_size,
        ),
        Rule(
            "width_match",
            "manifest",
            "label width must equal image width",
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "width", "column_B": "label_width"},
            row=_size,
        ),
        Rule(
            "label_ids_known",
            "manifest",
            f"label ids must be class ids 0..{n_classes - 1} (classes.json) or void {VOID}",
            "ExpectColumnValuesToBeBetween",
            {"column": "bad_label_pixels", "min_value": 0, "max_value": 0},
            row=lambda r: f"{r['bad_label_pixels']} pixels with unknown ids (ids present: {r['label_ids']})",
        ),
        Rule(
            "label_dtype",
            "manifest",
            "labels must be 8-bit class-id maps (uint8)",
            "ExpectColumnValuesToBeInSet",
            {"column": "label_dtype", "value_set": ["uint8"]},
            row=lambda r: f"label dtype {r['label_dtype']}",
        ),
        Rule(
            "image_channels",
            "manifest",
            "images must be colour (3 channels) or grayscale (1), without alpha",
            "ExpectColumnValuesToBeInSet",
            {"column": "channels", "value_set": [1, 3]},
            file="image",
            row=lambda r: f"{r['channels']} channels (convert to RGB first: howlow does not guess what alpha means)",
        ),
        Rule(
            "void_fraction",
            "manifest",
            f"at most {v.max_void_fraction:g} of a label may be void (validate.max_void_fraction)",
            "ExpectColumnValuesToBeBetween",
            {"column": "void_fraction", "min_value": 0, "max_value": v.max_void_fraction},
            row=lambda r: f"void fraction {r['void_fraction']} > {v.max_void_fraction:g}",
        ),
        Rule(
            "ids_unique",
            "manifest",
            "image ids must be unique within a split",
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["split", "id"]},
            file="image",
            row=lambda r: f"id {r['id']!r} occurs more than once in split {r['split']!r}",
        ),
        Rule(
            "image_paths_unique",
            "manifest",
            "each prepared image file must be listed once",
            "ExpectColumnValuesToBeUnique",
            {"column": "image"},
            file="image",
            row=lambda r: "listed more than once in manifest.csv",
        ),
        Rule(
            "splits_present",
            "manifest",
            "the train and val splits must both have images",
            "ExpectColumnDistinctValuesToContainSet",
            {"column": "split", "value_set": list(SPLITS)},
            table_detail=lambda df: (
                "no images in split(s) " + ", ".join(s for s in SPLITS if s not in set(df.get("split", ())))
            ),
        ),
        Rule(
            "enough_images",
            "manifest",
            "the data set must have at least 2 images",
            "ExpectTableRowCountToBeBetween",
            {"min_value": 2},
            table_detail=lambda df: f"{len(df)} image(s)",
        ),
        Rule(
            "classes_listed",
            "class_pixels",
            "class_pixels.csv must list every class of classes.json",
            "ExpectColumnDistinctValuesToEqualSet",
            {"column": "class_id", "value_set": list(range(n_classes))},
            table_detail=lambda df: (
                f"train class ids {sorted(set(df.get('class_id', ())))}, classes.json has 0..{n_classes - 1}"
            ),
        ),
        Rule(
            "classes_in_train",
            "class_pixels",
            f"every class of classes.json must occur in at least {v.min_class_pixels} training label "
            "pixel(s) (validate.min_class_pixels)",
            "ExpectColumnValuesToBeBetween",
            {"column": "pixels", "min_value": v.min_class_pixels},
            row=lambda r: f"class {r['class_id']} ({r['name']}): {r['pixels']} training pixels < {v.min_class_pixels}",
        ),
    ]


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found; run the prepare stage first")
    try:
        # ids and paths stay text ("001" must not become 1, an id "NA" must not become NaN)
        text = ("id", "split", "image", "label", "label_dtype", "label_ids", "source_image", "source_label", "name")
        return pd.read_csv(path, keep_default_na=False, dtype=dict.fromkeys(text, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc}); run the prepare stage again") from None


def _run_gx(
    tables: dict[str, pd.DataFrame], all_rules: list[Rule], docs_dir: Path, run_name: str, history: Path | None
) -> dict[str, dict]:
    """Run one suite per table, as GX run `run_name`, and build Data Docs into docs_dir.

    Returns {rule name: GX result as a dict}. The context lives in memory (no `gx/` project folder
    lands anywhere) but for its validation results, kept in `history` when given, so the Data Docs
    list every earlier run there too.
    """
    import datetime

    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    stores = InMemoryStoreBackendDefaults()
    if history is not None:
        results_store = stores.stores[stores.validation_results_store_name]
        results_store["store_backend"] = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(history)}
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=stores,
            data_docs_sites={"local_site": site},
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        ),
    )
    source = context.data_sources.add_pandas("prepared")
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.datetime.now(datetime.UTC))
    results = {}
    for table, df in tables.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=table))
        for rule in all_rules:
            if rule.table == table:
                expectation = getattr(gxe, rule.expectation)(**rule.kwargs, notes=rule.text, meta={"rule": rule.name})
                suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        # COMPLETE: every offending row's pandas index, not the first 20
        run = definition.run(batch_parameters={"dataframe": df}, result_format="COMPLETE", run_id=run_id)
        # GX's validation page reads the asset's name from the batch spec, which an in-memory
        # DataFrame's lacks ("Data asset: None"): store the result again with it
        run.meta["batch_spec"]["data_asset_name"] = f"prepared.{table}"
        store = context.validation_results_store
        (key,) = [
            k
            for k in store.list_keys()
            if isinstance(k, ValidationResultIdentifier)
            and k.run_id == run_id
            and k.expectation_suite_identifier.name == table
        ]
        store.set(key, run)
        for r in run.results:
            assert r.expectation_config is not None and r.expectation_config.meta is not None
            results[r.expectation_config.meta["rule"]] = r.to_json_dict()
    context.build_data_docs()
    return results


def _errors(result: dict) -> list[str]:
    """Exception messages of an expectation GX could not evaluate (e.g. a missing column)."""
    info = result.get("exception_info") or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    return sorted({i.get("exception_message", "") for i in infos if i.get("raised_exception")})


def _failures(rule: Rule, result: dict, df: pd.DataFrame, prepared: Path) -> list[dict]:
    """One record per offending row (or one for a table-level rule), with its file and what is wrong."""
    table_file = str(prepared / f"{rule.table}.csv")
    if errors := _errors(result):
        return [{"file": table_file, "detail": "could not be checked: " + "; ".join(errors)}]
    if rule.row is None:
        assert rule.table_detail is not None, f"rule {rule.name} needs a row or a table detail"
        return [{"file": table_file, "detail": rule.table_detail(df)}]
    out = []
    for index in result["result"].get("unexpected_index_list") or []:
        r = df.loc[index].to_dict()
        if rule.table == "class_pixels":
            out.append({"class_id": int(r["class_id"]), "name": r["name"], "file": table_file, "detail": rule.row(r)})
            continue
        out.append(
            {
                "id": r["id"],
                "split": r["split"],
                "file": str(prepared / r[rule.file]),
                "source": r.get(f"source_{rule.file}", ""),
                "image": str(prepared / r["image"]),
                "label": str(prepared / r["label"]),
                "detail": rule.row(r),
            }
        )
    return out


def _message(prepared: Path, report_dir: Path, failed: list[dict]) -> str:
    lines = [
        f"{prepared}: {len(failed)} validation rule(s) broken "
        f"(report: {report_dir / 'summary.json'}, {report_dir / 'docs' / 'index.html'})"
    ]
    for e in failed:
        lines.append(f"{e['rule']}:")
        for f in e["failures"][:MAX_LINES_PER_RULE]:
            source = f" (source: {f['source']})" if f.get("source") else ""
            lines.append(f"  {f['file']}{source}: {f['detail']} [{e['type']}]")
        if len(e["failures"]) > MAX_LINES_PER_RULE:
            lines.append(f"  ... and {len(e['failures']) - MAX_LINES_PER_RULE} more (see summary.json)")
    return "\n".join(lines)


def _writable(folder: Path) -> None:
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise DataError(f"{part}: is a file, but a folder is needed there (the validation report)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the validation report there ({exc.strerror})") from None


def validate(params: Params, prepared: Path, report_dir: Path, history: Path | None = None) -> dict:
    """Validate `prepared` with GX; write summary.json and Data Docs to `report_dir`; keep GX's
    validation results in `history` (the stage: logs/validation) when given, one run per call.

    Returns the summary dict on success; raises ValidationFailed (a DataError) listing each broken
    rule and the offending files, after writing the same report.
    """
    prepared, report_dir = Path(prepared), Path(report_dir)
    manifest = _read(prepared / "manifest.csv")
    class_pixels = _read(prepared / "class_pixels.csv")
    if not (prepared / "classes.json").is_file():
        raise DataError(f"{prepared / 'classes.json'}: not found; run the prepare stage first")
    n_classes = len(read_json(prepared / "classes.json"))
    if "split" in class_pixels.columns:  # rule 7 is about training labels only
        class_pixels = class_pixels[class_pixels["split"] == "train"]
    tables = {"manifest": manifest, "class_pixels": class_pixels}
    all_rules = _rules(params, n_classes)

    _writable(report_dir)  # before GX, which would log pages of tracebacks first
    if history is not None:
        _writable(history)
    # Docs are built next to their final place and swapped in, so a crash never leaves half a site.
    docs, tmp_docs = report_dir / "docs", report_dir / ".docs.tmp"
    shutil.rmtree(tmp_docs, ignore_errors=True)
    run_name = f"{params.dataset_name}-{dataset_digest(prepared)[:8]}"
    results = _run_gx(tables, all_rules, tmp_docs.resolve(), run_name, None if history is None else history.resolve())
    shutil.rmtree(docs, ignore_errors=True)
    tmp_docs.rename(docs)

    expectations = []
    for rule in all_rules:
        result = results[rule.name]
        success = bool(result["success"])
        expectations.append(
            {
                "name": rule.name,
                "rule": rule.text,
                "type": result["expectation_config"]["type"],
                "table": f"{rule.table}.csv",
                "success": success,
                "failures": [] if success else _failures(rule, result, tables[rule.table], prepared),
            }
        )
    failed = [e for e in expectations if not e["success"]]
    summary = {
        "success": not failed,
        "prepared": str(prepared),
        "images": len(manifest),
        "n_classes": n_classes,
        "failed": [e["name"] for e in failed],
        "docs": str(docs / "index.html"),
        "gx_run": run_name,
        "history": None if history is None else str(history),
        "expectations": expectations,
    }
    write_json(report_dir / "summary.json", summary)
    if failed:
        raise ValidationFailed(_message(prepared, report_dir, failed))
    return summary
