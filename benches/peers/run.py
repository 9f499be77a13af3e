#!/usr/bin/env python3
"""crmdump beside the HubSpot exporters people run today, on the same sandbox data.

usage: benches/peers/run.py [--scales 2000,20000] [--rates none,100/10s] [--only airbyte,singer,...]
                            [--work DIR] [--crmdump PATH] [--timeout SECONDS]

Installs Airbyte's source-hubspot 5.7.0, singer's tap-hubspot 4.5.0 and MeltanoLabs'
tap-hubspot 0.10.1 from PyPI into throwaway venvs under --work, with mitmproxy for the proxy.
For each scale and rate limit it starts `crmdump sandbox`, and a loopback HTTPS proxy that
terminates TLS for api.hubapi.com with a throwaway CA and forwards to the sandbox; each peer
runs unchanged (it calls https://api.hubapi.com through HTTPS_PROXY and trusts the CA) for
contacts, companies, deals and owners, and crmdump exports the same four. Prints one table row
per run: records, wall time, CPU, peak RSS, requests, 429s, and the share of the values the
sandbox served (every non-empty property of every record, and the owners' email and names)
that the tool's output holds unchanged.
"""

import argparse
import csv
import datetime
import gzip
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = {
    "airbyte": ("airbyte-source-hubspot==5.7.0", "source-hubspot"),
    "singer": ("tap-hubspot==4.5.0", "tap-hubspot"),
    "meltano": ("meltano-tap-hubspot==0.10.1", "tap-hubspot"),
}
OBJECTS = ["contacts", "companies", "deals"]
STREAMS = OBJECTS + ["owners"]
TOKEN = "peers-bench-token"
ANCHOR = "2026-11-01T00:00:00Z"
START = "2000-01-01T00:00:00Z"


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {seconds} s")


def install(work):
    """One venv per peer (their dependencies conflict) and one for mitmproxy."""
    venvs = {}
    for name, (requirement, _) in list(PEERS.items()) + [("proxy", ("mitmproxy>=10", None))]:
        venv = work / "venvs" / name
        if not (venv / "bin" / "python").exists():
            log(f"installing {requirement} into {venv}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True)
        venvs[name] = venv
    return venvs


class Sandbox:
    def __init__(self, crmdump, scale, rate, workdir, clean_numbers):
        self.port = free_port()
        args = [crmdump, "sandbox", "--quiet", "--port", str(self.port), "--scale", str(scale), "--anchor", ANCHOR,
                "--token", TOKEN] + (["--clean-numbers"] if clean_numbers else [])
        if rate != "none":
            args += ["--rate-limit", rate]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(workdir / "sandbox.log", "w"))
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self.url + "/_sandbox/stats")

    def stats(self):
        with urllib.request.urlopen(self.url + "/_sandbox/stats") as r:
            return json.load(r)

    def get(self, path, query=None):
        url = self.url + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        for _ in range(100):
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return json.load(r)
            except urllib.error.HTTPError as e:
                if e.code != 429:
                    raise
                time.sleep(1)
        raise SystemExit(f"{path} stayed throttled")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def trust(venvs, ca):
    """Adds the bench's CA to each peer venv's certifi bundle, as installing it in the
    machine's trust store would: some peers send requests with `verify` from certifi and never
    read REQUESTS_CA_BUNDLE. The venvs are the bench's own, thrown away with --work."""
    pem = ca.read_text()
    for name in PEERS:
        bundle = subprocess.run([str(venvs[name] / "bin" / "python"), "-c", "import certifi; print(certifi.where())"],
                                capture_output=True, text=True, check=True).stdout.strip()
        text = pathlib.Path(bundle).read_text()
        if pem not in text:
            pathlib.Path(bundle).write_text(text + "\n# crmdump peers bench CA\n" + pem)


class Proxy:
    """mitmdump terminating TLS for api.hubapi.com with a CA made in a throwaway folder (one
    for the whole bench, under --work)."""

    def __init__(self, venv, sandbox_url, workdir):
        self.confdir = workdir.parent / "mitmproxy"
        self.confdir.mkdir(exist_ok=True)
        self.port = free_port()
        env = dict(os.environ, PEERS_SANDBOX=sandbox_url)
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "mitmdump"), "--listen-host", "127.0.0.1", "-p", str(self.port), "-q",
             "--set", f"confdir={self.confdir}", "--set", "connection_strategy=lazy",
             "--set", "stream_large_bodies=10m", "-s", str(HERE / "redirect.py")],
            env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "proxy.log", "w"))
        self.ca = self.confdir / "mitmproxy-ca-cert.pem"
        deadline = time.time() + 60
        while not self.ca.exists():
            if time.time() > deadline:
                raise SystemExit("mitmproxy made no CA")
            time.sleep(0.2)
        time.sleep(1)

    def env(self):
        proxy = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HTTPS_PROXY=proxy, https_proxy=proxy, REQUESTS_CA_BUNDLE=str(self.ca),
                   SSL_CERT_FILE=str(self.ca), CURL_CA_BUNDLE=str(self.ca))
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        return env

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def ground_truth(sandbox):
    """What the sandbox serves: {stream: {id: {field: value}}}, non-empty values only."""
    truth = {}
    for t in OBJECTS:
        names = [p["name"] for p in sandbox.get(f"/crm/v3/properties/{t}")["results"]]
        records, after = {}, None
        while True:
            q = {"limit": "100", "properties": ",".join(names)}
            if after:
                q["after"] = after
            page = sandbox.get(f"/crm/v3/objects/{t}", q)
            for r in page["results"]:
                records[r["id"]] = {k: v for k, v in r["properties"].items() if v not in (None, "")}
            after = page.get("paging", {}).get("next", {}).get("after")
            if not after:
                break
        truth[t] = records
    owners, after = {}, None
    while True:
        page = sandbox.get("/crm/v3/owners", {"limit": "100", **({"after": after} if after else {})})
        for o in page["results"]:
            owners[str(o["id"])] = {k: o[k] for k in ("email", "firstName", "lastName") if o.get(k)}
        after = page.get("paging", {}).get("next", {}).get("after")
        if not after:
            break
    truth["owners"] = owners
    return truth


def as_millis(text):
    """An instant as epoch milliseconds, from ISO 8601 or epoch milliseconds; else None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(int(text)) if float(text).is_integer() else str(text)
    if not isinstance(text, str):
        return None
    if text.isdigit() and 12 <= len(text) <= 13:
        return int(text)
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000)


def agree(served, got):
    if got is None:
        return False
    if isinstance(got, bool):
        got = "true" if got else "false"
    if isinstance(got, (list, dict)):
        got = json.dumps(got)
    a, b = str(served), str(got)
    if a == b or a.strip() == b.strip():
        return True
    ma, mb = as_millis(a), as_millis(b)
    if ma is not None and mb is not None:
        return ma == mb
    try:
        return float(a) == float(b)
    except ValueError:
        return a.lower() == b.lower()


def flatten(record):
    """A peer's record as {field: value}: HubSpot properties (nested under `properties`,
    lifted to `properties_<name>` or `property_<name>`, or v1/v2's `{value, timestamp}`)."""
    out = {}
    def put(k, v):
        if isinstance(v, dict) and "value" in v:
            v = v["value"]
        if v not in (None, "") and k not in out:
            out[k] = v
    props = record.get("properties")
    if isinstance(props, dict):
        for k, v in props.items():
            put(k, v)
    for k, v in record.items():
        for prefix in ("properties_", "property_"):
            if k.startswith(prefix):
                put(k[len(prefix):], v)
    for k in ("email", "firstName", "lastName"):
        if k in record:
            put(k, record[k])
    return out


def record_id(stream, record):
    for k in ({"companies": ["companyId", "id"], "deals": ["dealId", "id"], "owners": ["ownerId", "id"]}
              .get(stream, ["id", "vid"])):
        if record.get(k) not in (None, ""):
            return str(record[k])
    return None


def read_singer(path):
    got = {s: {} for s in STREAMS}
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("type") == "RECORD" and m.get("stream") in got:
                got[m["stream"]][record_id(m["stream"], m["record"])] = flatten(m["record"])
            elif m.get("type") == "RECORD" and isinstance(m.get("record"), dict) and m["record"].get("stream") in got:
                r = m["record"]  # Airbyte's protocol: {"type": "RECORD", "record": {"stream", "data"}}
                got[r["stream"]][record_id(r["stream"], r["data"])] = flatten(r["data"])
    return got


def read_crmdump(day):
    got = {s: {} for s in STREAMS}
    def table(name):
        for part in sorted((day / name).glob("*.csv.gz")):
            with gzip.open(part, "rt", newline="") as f:
                yield from csv.DictReader(f)
    for r in table("OBJECT_PROPERTIES"):
        stream = {"contacts": "contacts", "companies": "companies", "deals": "deals"}.get(r["OBJECTTYPEID"]) or \
            {"0-1": "contacts", "0-2": "companies", "0-3": "deals"}.get(r["OBJECTTYPEID"])
        if stream:
            got[stream].setdefault(r["OBJECTID"], {})[r["NAME"]] = r["VALUE"]
    for r in table("OWNERS"):
        got["owners"][r["OWNERID"]] = {"email": r["EMAIL"], "firstName": r["FIRSTNAME"], "lastName": r["LASTNAME"]}
    return got


def score(truth, got):
    served = agreeing = 0
    for stream in STREAMS:
        for rid, values in truth[stream].items():
            mine = got[stream].get(rid, {})
            for k, v in values.items():
                served += 1
                agreeing += agree(v, mine.get(k))
    records = sum(len(got[s]) for s in STREAMS)
    return records, (agreeing / served if served else 0.0)


def high_water_mb(pid):
    """The process's peak resident set so far (VmHWM), in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(args, env, stdout_path, timeout, cwd=None):
    """Runs a command; returns (exit code, wall s, CPU s, peak RSS MB). The peak is the
    process's own VmHWM, read every 20 ms while it runs: wait4's ru_maxrss would report this
    script's size, which a forked child inherits as its high-water mark."""
    start = time.time()
    peak = 0.0
    with open(stdout_path, "wb") as out, open(str(stdout_path) + ".err", "wb") as err:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, cwd=cwd)
        deadline = start + timeout
        while True:
            peak = max(peak, high_water_mb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    wall = time.time() - start
    code = os.waitstatus_to_exitcode(status)
    return code, wall, usage.ru_utime + usage.ru_stime, peak


def select_all(catalog):
    """A Singer catalog with contacts, companies, deals and owners selected, every field in."""
    for stream in catalog["streams"]:
        chosen = stream["tap_stream_id"] in STREAMS
        for m in stream.get("metadata", []):
            if not m["breadcrumb"] or chosen:
                m["metadata"]["selected"] = chosen
        stream["selected"] = chosen
    return catalog


def peer_command(name, venv, run_dir, env):
    """Writes the peer's config and catalog; returns its read command."""
    exe = str(venv / "bin" / PEERS[name][1])
    if name == "airbyte":
        config = {"credentials": {"credentials_title": "Private App Credentials", "access_token": TOKEN},
                  "start_date": START, "enable_experimental_streams": False}
        (run_dir / "config.json").write_text(json.dumps(config))
        catalog = {"streams": [{
            "stream": {"name": s, "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for s in STREAMS]}
        (run_dir / "catalog.json").write_text(json.dumps(catalog))
        return [exe, "read", "--config", str(run_dir / "config.json"), "--catalog", str(run_dir / "catalog.json")]
    if name == "singer":
        config = {"api_key": TOKEN, "start_date": START, "disable_collection": True, "select_fields_by_default": True}
    else:
        config = {"access_token": TOKEN, "start_date": START}
    (run_dir / "config.json").write_text(json.dumps(config))
    discovered = subprocess.run([exe, "--config", str(run_dir / "config.json"), "--discover"], env=env,
                                capture_output=True, check=True)
    (run_dir / "catalog.json").write_text(json.dumps(select_all(json.loads(discovered.stdout))))
    flag = "--properties" if name == "singer" else "--catalog"
    return [exe, "--config", str(run_dir / "config.json"), flag, str(run_dir / "catalog.json")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="2000,20000")
    parser.add_argument("--rates", default="none,100/10s")
    parser.add_argument("--only", default="crmdump,crmdump-no-history," + ",".join(PEERS),
                        help="crmdump-no-history: crmdump without property history, closer to what the peers read")
    parser.add_argument("--work", default=str(pathlib.Path(tempfile.gettempdir()) / "crmdump-peers"))
    parser.add_argument("--crmdump", default=str(ROOT / "target" / "release" / "crmdump"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--numbers", choices=["clean", "as-hubspot"], default="clean",
                        help="clean: number fields hold numbers only (sandbox --clean-numbers); as-hubspot: "
                             "some hold \"N/A\", as real accounts do (Airbyte 5.7.0 stops on it)")
    a = parser.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tools = a.only.split(",")
    venvs = install(work)
    print("| scale | rate limit | numbers | tool | exit | records | wall s | CPU s | peak RSS MB | requests | 429s | values agreeing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scale in [int(s) for s in a.scales.split(",")]:
        truth = None
        for rate in a.rates.split(","):
            run_root = work / f"scale-{scale}-{rate.replace('/', '-')}-{a.numbers}"
            shutil.rmtree(run_root, ignore_errors=True)
            run_root.mkdir(parents=True)
            sandbox = Sandbox(a.crmdump, scale, rate, run_root, a.numbers == "clean")
            proxy = Proxy(venvs["proxy"], sandbox.url, run_root)
            trust(venvs, proxy.ca)
            try:
                if truth is None:
                    # Read once per scale (the same seed, scale and anchor give the same data);
                    # under a rate limit it waits out the 429s.
                    truth = ground_truth(sandbox)
                for tool in tools:
                    run_dir = run_root / tool
                    run_dir.mkdir()
                    before = sandbox.stats()
                    if tool.startswith("crmdump"):
                        env = dict(os.environ, HUBSPOT_ACCESS_TOKEN=TOKEN)
                        args = [a.crmdump, "export", "--source", "hubspot", "--base-url", sandbox.url,
                                "--dest", str(run_dir / "out"), "--date", "2026-11-01", "--objects", ",".join(OBJECTS),
                                "--rate-limit", rate] + (["--no-history"] if tool == "crmdump-no-history" else [])
                    else:
                        env = proxy.env()
                        args = peer_command(tool, venvs[tool], run_dir, env)
                    log(f"scale {scale}, rate {rate}: {tool}")
                    code, wall, cpu, rss = run_measured(args, env, run_dir / "stdout", a.timeout, cwd=run_dir)
                    after = sandbox.stats()
                    got = (read_crmdump(run_dir / "out" / "2026-11-01") if tool.startswith("crmdump")
                           else read_singer(run_dir / "stdout"))
                    records, share = score(truth, got)
                    row = (scale, rate, a.numbers, tool, code, records, f"{wall:.1f}", f"{cpu:.1f}", f"{rss:.0f}",
                           after["requests"] - before["requests"], after["throttled"] - before["throttled"],
                           f"{100 * share:.1f} %")
                    print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
            finally:
                proxy.stop()
                sandbox.stop()


if __name__ == "__main__":
    main()
