"""Parses crmdump's SQL for engines that do not run here (Snowflake, BigQuery, Redshift, Athena)
with sqlglot in their own dialect, and prints what it could not parse as JSON:

    python parse_sql.py DIALECT FILE

A statement sqlglot keeps only as an opaque `Command` counts as not parsed. Redshift's
`CALL procedure(args)` is one such (sqlglot parses no CALL): its call is checked as the
expression `procedure(args)`, and the procedure's definition as a statement.
"""

import json
import re
import sys

import sqlglot
from sqlglot import exp

dialect, path = sys.argv[1], sys.argv[2]
sql = open(path).read()
statements, unparsed, kinds = 0, [], {}
try:
    trees = sqlglot.parse(sql, read=dialect)
except sqlglot.errors.ParseError as e:
    print(json.dumps({"statements": 0, "unparsed": [f"parse error: {e}"[:2000]], "kinds": {}}))
    sys.exit(0)
for tree in trees:
    if tree is None:
        continue
    statements += 1
    if isinstance(tree, exp.Command):
        text = tree.sql(dialect=dialect)
        call = re.fullmatch(r"CALL\s+(\w+\(.*\))", text, re.S)
        if call and not isinstance(sqlglot.parse_one("SELECT " + call.group(1), read=dialect), exp.Command):
            kinds["Call"] = kinds.get("Call", 0) + 1
            continue
        unparsed.append(text[:300])
        continue
    if any(isinstance(node, exp.Command) for node in tree.walk()):
        unparsed.append(tree.sql(dialect=dialect)[:300])
        continue
    kind = type(tree).__name__
    kinds[kind] = kinds.get(kind, 0) + 1
print(json.dumps({"statements": statements, "unparsed": unparsed, "kinds": kinds}))
