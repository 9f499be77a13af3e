"""Nightly crmdump exports of many accounts, one mapped task per account, and a backfill.

Put this file in Airflow's dags folder, the crmdump binary (or its image) where the workers run
it, and an Airflow Variable `crmdump_accounts` holding the accounts as JSON:

    [{"source": "hubspot", "account": "12345678", "token_env": "HUBSPOT_TOKEN_12345678"}, ...]

Each account's token is read from the worker's environment variable it names (set from your
secret backend), never from the DAG. The destination template keeps each account in its own
root. Retries follow crmdump's exit codes: 75 (a lease still held after --wait-for-lease, an
outage, a rate limit that outlasted the run) is retried; any other failure (2 configuration,
4 strict data warnings, 5 committed but state not saved, 1 anything else) fails at once.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

from airflow.exceptions import AirflowFailException
from airflow.sdk import Variable, dag, task

CRMDUMP = os.environ.get("CRMDUMP_BIN", "crmdump")
DEST = os.environ.get("CRMDUMP_DEST", "s3://my-bucket/crm/{source}/{account}")
RETRYABLE = 75


def run_crmdump(args: list[str], account: dict) -> None:
    """Runs crmdump; raises so that Airflow retries exit 75 and fails everything else."""
    env = dict(os.environ)
    token = os.environ[account["token_env"]]
    env["HUBSPOT_ACCESS_TOKEN" if account["source"] == "hubspot" else "PIPEDRIVE_API_TOKEN"] = token
    proc = subprocess.run([CRMDUMP, *args], env=env)
    if proc.returncode == 0:
        return
    if proc.returncode == RETRYABLE:
        raise RuntimeError(f"crmdump exited {RETRYABLE} (retryable): Airflow retries the task")
    raise AirflowFailException(f"crmdump exited {proc.returncode}: not retryable, see the task log")


def accounts() -> list[dict]:
    return json.loads(Variable.get("crmdump_accounts", default="[]"))


@dag(
    dag_id="crmdump_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=10), "retry_exponential_backoff": True},
    tags=["crmdump"],
)
def crmdump_nightly():
    @task
    def account_list() -> list[dict]:
        return accounts()

    @task(max_active_tis_per_dag=8)
    def export(account: dict, ds=None) -> None:
        # The run's logical date names the day folder, so a retry or a re-run of this DAG run
        # re-runs the same date (crmdump replaces its own day folder).
        run_crmdump(
            ["export", "--source", account["source"], "--dest", DEST, "--date", ds,
             "--wait-for-lease", "30m", "--log-format", "json"],
            account,
        )

    export.expand(account=account_list())


@dag(
    dag_id="crmdump_backfill",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"from": "2026-01-01", "to": "2026-01-31"},
    default_args={"retries": 3, "retry_delay": timedelta(minutes=10)},
    tags=["crmdump"],
)
def crmdump_backfill():
    """Trigger with {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}: one day folder per past day,
    days already committed skipped."""

    @task
    def account_list() -> list[dict]:
        return accounts()

    @task(max_active_tis_per_dag=4)
    def backfill(account: dict, params=None) -> None:
        run_crmdump(
            ["backfill", "--source", account["source"], "--dest", DEST,
             "--from", params["from"], "--to", params["to"], "--wait-for-lease", "30m", "--log-format", "json"],
            account,
        )

    backfill.expand(account=account_list())


crmdump_nightly()
crmdump_backfill()
