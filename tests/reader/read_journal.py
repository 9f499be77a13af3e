#!/usr/bin/env python3
"""Reads a crmdump webhook journal the way a person would: DuckDB over the committed parts.

usage: read_journal.py DEST

Independent of crmdump: finds the markers (`_webhooks/<source>/<account>/<day>/_committed/*.json`),
checks each listed part's size and sha256 with hashlib, reads the parts with DuckDB's
read_json, and prints JSON: {"events": [...], "dead_letters": [...], "uncommitted": [...]}.
"""

import glob
import hashlib
import json
import os
import sys

import duckdb


def main(dest):
    committed, problems = [], []
    for marker in sorted(glob.glob(os.path.join(dest, "_webhooks", "*", "*", "*", "_committed", "*.json"))):
        with open(marker) as f:
            manifest = json.load(f)
        folder = os.path.dirname(os.path.dirname(marker))
        for table in manifest["tables"]:
            for part in table["files"]:
                path = os.path.join(folder, part["path"])
                data = open(path, "rb").read()
                if len(data) != part["bytes"] or hashlib.sha256(data).hexdigest() != part["sha256"]:
                    problems.append(path)
                committed.append((table["name"], path))
    all_parts = set(glob.glob(os.path.join(dest, "_webhooks", "*", "*", "*", "*.ndjson.gz")))
    uncommitted = sorted(all_parts - {p for _, p in committed})
    out = {"events": [], "dead_letters": [], "uncommitted": uncommitted, "damaged": problems}
    con = duckdb.connect()
    for table, key in (("EVENTS", "events"), ("DEAD_LETTERS", "dead_letters")):
        files = [p for t, p in committed if t == table]
        if not files:
            continue
        if table == "EVENTS":
            query = ("SELECT source, account, key, kind, object_id, CAST(event AS VARCHAR) AS event "
                     "FROM read_json(?, format='newline_delimited', compression='gzip', "
                     "columns={source: 'VARCHAR', account: 'VARCHAR', key: 'VARCHAR', kind: 'VARCHAR', "
                     "object_id: 'VARCHAR', occurred_at_ms: 'BIGINT', received_at_ms: 'BIGINT', event: 'JSON'})")
        else:
            query = ("SELECT source, error, body FROM read_json(?, format='newline_delimited', compression='gzip', "
                     "columns={source: 'VARCHAR', received_at_ms: 'BIGINT', error: 'VARCHAR', body: 'VARCHAR', "
                     "body_base64: 'VARCHAR'})")
        cursor = con.execute(query, [files])
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            record = dict(zip(names, row))
            if "event" in record:
                record["event"] = json.loads(record["event"])
            out[key].append(record)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
