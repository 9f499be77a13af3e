//! Helpers shared by the end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use chrono::{DateTime, Utc};
use crmdump::sandbox::{Generator, SandboxConfig};
use serde_json::Value;

pub const ANCHOR: &str = "2026-11-01T00:00:00Z";
pub const DATE: &str = "2026-11-20";

pub fn crmdump() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crmdump"));
    c.env_remove("HUBSPOT_ACCESS_TOKEN")
        .env_remove("PIPEDRIVE_API_TOKEN")
        .env_remove("PIPEDRIVE_ACCESS_TOKEN")
        .env("RUST_LOG", "crmdump=info");
    c
}

/// Runs a command, returning its output; panics with both streams if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the crmdump binary runs")
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "crmdump failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn anchor() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(ANCHOR).unwrap().with_timezone(&Utc)
}

pub fn generator(seed: u64, scale: u64) -> Generator {
    let mut c = SandboxConfig::new(seed, scale);
    c.anchor = anchor();
    Generator::new(c)
}

/// The Python that has pyarrow: `CRMDUMP_TEST_PYTHON` (set by scripts/test), else the
/// project's `.venv`, else `python3`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CRMDUMP_TEST_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() { venv } else { "python3".into() }
}

/// Reads a day folder with the independent reader; `tables` empty reads every table.
pub fn read_export(day: &Path, tables: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/read_export.py");
    let out = Command::new(python())
        .arg(script)
        .arg(day)
        .args(tables)
        .output()
        .expect("Python runs (scripts/test installs it with pyarrow in .venv)");
    assert!(
        out.status.success(),
        "the independent reader failed (run scripts/test, which installs pyarrow):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// Rows of a table as read back: a vector of rows of optional strings.
pub fn rows(export: &Value, table: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let t = &export["tables"][table];
    assert!(!t.is_null(), "table {table} was not read back");
    let columns = t["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let rows = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_str().map(str::to_string)).collect())
        .collect();
    (columns, rows)
}

/// Index of column `name`.
pub fn col(columns: &[String], name: &str) -> usize {
    columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
}

/// A `crmdump sandbox` server in its own process, stopped on drop.
pub struct SandboxProcess {
    child: Child,
    pub base_url: String,
}

impl SandboxProcess {
    pub fn start(args: &[&str]) -> SandboxProcess {
        let mut child = crmdump()
            .args(["sandbox", "--port", "0", "--anchor", ANCHOR])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sandbox starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let base_url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the sandbox's first line: {line}"))
            .to_string();
        SandboxProcess { child, base_url }
    }

    /// `GET /_sandbox/stats`.
    pub fn stats(&self) -> Value {
        let url = format!("{}/_sandbox/stats", self.base_url);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { reqwest::get(&url).await.unwrap().json::<Value>().await.unwrap() })
    }

    /// The ids of `object_type` the run that wrote `day` must hold, by the sandbox's ground
    /// truth (`GET /_sandbox/changes`): changes made inside the run's window (from its
    /// manifest) and readable when the run started.
    pub fn must_hold(&self, object_type: &str, day: &Path) -> std::collections::BTreeSet<String> {
        let manifest: Value = serde_json::from_slice(&std::fs::read(day.join("_manifest.json")).unwrap()).unwrap();
        let instant = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
        let (from, to) = (instant(&manifest["window"]["from"]), instant(&manifest["window"]["to"]));
        let started = instant(&manifest["started_at"]);
        let url = format!("{}/_sandbox/changes?objectType={object_type}", self.base_url);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let truth = rt.block_on(async { reqwest::get(&url).await.unwrap().json::<Value>().await.unwrap() });
        truth["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("no changes in {truth}"))
            .iter()
            .filter(|c| {
                let at = instant(&c["at"]);
                from <= at && at < to && instant(&c["readableAt"]) <= started
            })
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `POST /_sandbox/<hook>` (`touch`, `archive`) with `body`; panics unless it answers 200.
    pub fn hook(&self, hook: &str, body: Value) -> Value {
        let url = format!("{}/_sandbox/{hook}", self.base_url);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let response = reqwest::Client::new().post(&url).json(&body).send().await.unwrap();
            let status = response.status();
            let answer = response.json::<Value>().await.unwrap();
            assert!(status.is_success(), "{hook} answered {status}: {answer}");
            answer
        })
    }

    /// A `crmdump export` against this sandbox into `dest`.
    pub fn export(&self, dest: &Path, date: &str, extra: &[&str]) -> Output {
        run(&mut self.export_command(crmdump(), dest.to_str().unwrap(), date, extra))
    }

    /// `base` (crmdump with its environment) made an export against this sandbox into `dest`.
    pub fn export_command(&self, mut base: Command, dest: &str, date: &str, extra: &[&str]) -> Command {
        base.args(["export", "--source", "hubspot", "--base-url", &self.base_url, "--rate-limit", "none"])
            .args(["--dest", dest, "--date", date])
            .args(extra)
            .env("HUBSPOT_ACCESS_TOKEN", "sandbox-token");
        base
    }
}

impl SandboxProcess {
    /// A `crmdump export --source pipedrive` against this sandbox (started with
    /// `--flavor pipedrive`) into `dest`.
    pub fn export_pipedrive(&self, dest: &Path, date: &str, extra: &[&str]) -> Output {
        run(crmdump()
            .args(["export", "--source", "pipedrive", "--base-url", &self.base_url])
            .args(["--dest", dest.to_str().unwrap(), "--date", date])
            .args(extra)
            .env("PIPEDRIVE_API_TOKEN", PIPEDRIVE_TOKEN))
    }
}

/// The API token tests give crmdump for a Pipedrive sandbox (distinctive, to search for leaks).
pub const PIPEDRIVE_TOKEN: &str = "pd-token-3f9a1c7e5b2d4f60";

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a run wrote: its stdout and stderr, then every file under `dir` (gzip parts
/// decompressed), with the number of files read.
pub fn everything_written(out: &Output, dir: &Path) -> (String, usize) {
    let mut written = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut files = vec![dir.to_path_buf()];
    let mut count = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let text = if p.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut s).unwrap();
            s
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        written.push_str(&text);
        count += 1;
    }
    (written, count)
}
