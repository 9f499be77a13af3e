"""Runs crmdump's generated SQL in a real engine, then named queries, and prints their rows as
JSON: the tests' independent reader for DuckDB and Spark (PostgreSQL runs through psql).

    python engines.py duckdb|spark JOB.json

JOB.json: {"scripts": [SQL files, run in order], "queries": {name: SQL with "double-quoted"
identifiers}}. Values come back as text: timestamps as YYYY-MM-DDTHH:MM:SS.sssZ (UTC), dates as
YYYY-MM-DD, booleans as true/false, NULL as null.
"""

import datetime
import json
import os
import re
import sys
import time

# PySpark hands timestamps over in the process's local time zone.
os.environ["TZ"] = "UTC"
time.tzset()


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


def statements(sql):
    """The statements of a script, one per `;` that ends a line (crmdump writes them so)."""
    out, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            body = "\n".join(current).strip()
            current = []
            lines = [l for l in body.splitlines() if not l.strip().startswith("--")]
            if lines:
                out.append("\n".join(lines).rstrip().rstrip(";"))
    return out


def duckdb_run(job):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for path in job["scripts"]:
        con.execute(open(path).read())
    return {name: [[text(v) for v in row] for row in con.execute(q).fetchall()] for name, q in job["queries"].items()}


def spark_run(job):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for path in job["scripts"]:
        for statement in statements(open(path).read()):
            spark.sql(statement)
    out = {}
    for name, q in job["queries"].items():
        q = re.sub(r'"([A-Za-z0-9_]+)"', r"`\1`", q).replace(" AS VARCHAR)", " AS STRING)")
        out[name] = [[text(v) for v in row] for row in spark.sql(q).collect()]
    spark.stop()
    return out


if __name__ == "__main__":
    engine, job = sys.argv[1], json.load(open(sys.argv[2]))
    result = {"duckdb": duckdb_run, "spark": spark_run}[engine](job)
    print(json.dumps(result))
