#!/usr/bin/env python3
"""Independent reader for crmdump exports (used by the Rust end-to-end tests).

Reads a day folder with pyarrow's CSV reader (and Python's gzip/csv/hashlib for the checks),
never with crmdump's own code, and prints one JSON document:

  {"manifest": {...}, "tables": {NAME: {"columns": [...], "rows": [[...], ...]}},
   "parts": {PATH: {"rows": N, "bytes": N, "sha256": "...", "header": [...]}},
   "files_on_disk": [relative paths]}

NULL (an empty unquoted field) reads as null; the empty string ("") reads as "".
Usage: read_export.py DAY_FOLDER [TABLE ...]   (no TABLE: every table in the manifest)
"""
import csv
import gzip
import hashlib
import io
import json
import os
import sys

import datetime

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def read_part(path):
    raw = open(path, "rb").read()
    # Each part must be a complete gzip file on its own.
    text = gzip.decompress(raw).decode("utf-8")
    header = next(csv.reader(io.StringIO(text)))
    table = pacsv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        # One block for the whole part, so that no huge row straddles two blocks.
        read_options=pacsv.ReadOptions(use_threads=False, block_size=max(1 << 20, len(text.encode("utf-8")) + 1)),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        ),
    )
    return raw, header, table


def json_value(v):
    """Parquet values as JSON: numbers and booleans native, instants as ISO text (ms, Z)."""
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (v.microsecond // 1000)
    if isinstance(v, datetime.date):
        return v.isoformat()
    return v


def read_parquet_part(path):
    raw = open(path, "rb").read()
    table = pq.read_table(io.BytesIO(raw))
    meta = pq.ParquetFile(io.BytesIO(raw)).metadata
    return raw, table.column_names, table, {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}


def main():
    day = sys.argv[1]
    wanted = set(sys.argv[2:])
    manifest = json.load(open(os.path.join(day, "_manifest.json")))
    out = {"manifest": manifest, "tables": {}, "parts": {}, "files_on_disk": []}
    for root, _dirs, files in os.walk(day):
        for f in files:
            out["files_on_disk"].append(os.path.relpath(os.path.join(root, f), day))
    for entry in manifest["tables"]:
        name = entry["name"]
        rows = []
        columns = None
        for f in entry["files"]:
            path = os.path.join(day, f["path"])
            if path.endswith(".parquet"):
                raw, header, table, kv = read_parquet_part(path)
                types = [str(t) for t in table.schema.types]
            else:
                raw, header, table = read_part(path)
                kv, types = {}, None
            out["parts"][f["path"]] = {
                "rows": table.num_rows,
                "bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "header": header,
                "metadata": kv,
                "types": types,
            }
            columns = header
            if not wanted or name in wanted:
                cols = [[json_value(v) for v in table.column(i).to_pylist()] for i in range(table.num_columns)]
                rows.extend([list(r) for r in zip(*cols)] if cols else [])
        if not wanted or name in wanted:
            out["tables"][name] = {"columns": columns, "rows": rows}
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
