"""Reads every battery folder of a `voltlens export --format battdat` output with battdat's own
reader and runs battdat's validators; exits 1 if any reports an error.

Per cell: the reader (BatteryDataset.from_parquet; warnings battdat raises count as errors), the
column checks against the schema stored in the file (validate_columns) and against battdat's
stock RawData schema, the undefined-column recommendations (validate), and the current sign
convention check (SignConventionChecker).
"""
import sys
import warnings
from pathlib import Path

import battdat
from battdat.consistency.current import SignConventionChecker
from battdat.data import BatteryDataset
from battdat.schemas.column import RawData


def check(folder: Path) -> dict:
    errors, undefined, sign = [], [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = BatteryDataset.from_parquet(folder)
        except Exception as e:  # the reader refusing the files is the first error
            return {"errors": [f"read: {e}"], "undefined": [], "sign": [], "rows": 0}
        for name, run in [
            ("stored schema", dataset.validate_columns),
            ("RawData schema", lambda: RawData().validate_dataframe(dataset.tables["raw_data"])),
        ]:
            try:
                run()
            except ValueError as e:
                errors.append(f"{name}: {e}")
        undefined = dataset.validate()
        try:
            sign = SignConventionChecker().check(dataset)
        except ValueError as e:  # too little current to judge
            sign = [f"not judged: {e}"]
    # battdat warns, rather than fails, on missing metadata or schemas: those count as errors.
    errors.extend(f"warning: {w.message}" for w in caught if "battdat" in w.filename)
    if dataset.metadata.name != folder.name:
        errors.append(f"battery name {dataset.metadata.name!r} is not the folder's")
    return {"errors": errors, "undefined": undefined, "sign": sign, "rows": len(dataset.tables["raw_data"])}


def main() -> int:
    root = Path(sys.argv[1])
    folders = sorted(p for p in root.iterdir() if (p / "raw_data.parquet").is_file())
    if not folders:
        print(f"{root}: no battery folders")
        return 1
    totals = {"errors": 0, "undefined": 0, "sign": 0}
    for folder in folders:
        result = check(folder)
        for key in totals:
            totals[key] += len(result[key])
        print(f"{folder.name}: {result['rows']} rows, {len(result['errors'])} errors, "
              f"{len(result['undefined'])} undefined columns, {len(result['sign'])} sign warnings")
        for line in result["errors"] + result["undefined"] + result["sign"]:
            print(f"    {line}")
    print(f"battdat {battdat.__version__}, {root}: {len(folders)} cells, {totals['errors']} errors, "
          f"{totals['undefined']} undefined columns, {totals['sign']} sign warnings")
    return 1 if totals["errors"] or totals["undefined"] else 0


if __name__ == "__main__":
    sys.exit(main())
