//! End-to-end bench: real exports against `crmdump sandbox` in a separate process, over
//! loopback HTTP, measured from outside (wall time, the exporter's CPU seconds and peak RSS
//! from `wait4`), next to GNU `gzip -6` over the same CSV bytes: the CSV path's physical limit.
//!
//! `cargo bench --bench export` runs contacts, companies and deals at 10k and 100k records per
//! type, CSV and Parquet, unthrottled, and 10k at the default HubSpot rate limit. Settings:
//! `CRMDUMP_BENCH_SCALES=10000,100000,1000000`, `CRMDUMP_BENCH_FORMATS=csv,parquet`,
//! `CRMDUMP_BENCH_THROTTLED=10000` (scales also run at `--rate-limit 100/10s`; empty for none).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const OBJECTS: &str = "contacts,companies,deals";

/// What `wait4` says of a finished child.
struct Usage {
    cpu_s: f64,
    max_rss_mb: f64,
}

fn wait(child: &mut Child) -> Usage {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child failed: {status}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime), max_rss_mb: usage.ru_maxrss as f64 / 1024.0 }
}

struct Sandbox {
    child: Child,
    url: String,
}

impl Sandbox {
    /// A sandbox of `scale` records per type, enforcing `limit` like an account when given.
    fn start(scale: u64, limit: Option<&str>) -> Sandbox {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crmdump"))
            .args(["sandbox", "--port", "0", "--anchor", "2026-11-01T00:00:00Z", "--scale", &scale.to_string()])
            .args(limit.map(|l| vec!["--rate-limit", l]).unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sandbox starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the sandbox prints its URL");
        Sandbox { url: url.to_string(), child }
    }

    fn throttled(&self) -> u64 {
        let out = Command::new("curl").args(["-s", &format!("{}/_sandbox/stats", self.url)]).output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["throttled"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of every CSV part of a day folder, decompressed, into one file.
fn concatenated_csv(day: &Path, into: &Path) -> u64 {
    let mut out = std::fs::File::create(into).unwrap();
    let mut total = 0;
    let mut dirs = vec![day.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "gz") {
                let mut text = Vec::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap()).read_to_end(&mut text).unwrap();
                total += text.len() as u64;
                out.write_all(&text).unwrap();
            }
        }
    }
    total
}

/// GNU `gzip -6` over `file`: (CPU seconds, compressed bytes).
fn gzip6(file: &Path) -> (f64, u64) {
    let mut child = Command::new("gzip")
        .args(["-6", "-c"])
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut stdout = child.stdout.take().unwrap();
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    (wait(&mut child).cpu_s, bytes)
}

fn run(scale: u64, format: &str, rate: Option<&str>) {
    let sandbox = Sandbox::start(scale, rate);
    let dest = tempfile::tempdir().unwrap();
    let clock = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmdump"))
        .args(["export", "--source", "hubspot", "--base-url", &sandbox.url, "--objects", OBJECTS, "--quiet"])
        .args(["--format", format, "--date", "2026-11-20", "--dest", dest.path().to_str().unwrap()])
        .args(["--rate-limit", rate.unwrap_or("none")])
        .env("HUBSPOT_ACCESS_TOKEN", "bench")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let usage = wait(&mut child);
    let wall = clock.elapsed().as_secs_f64();
    let day = dest.path().join("2026-11-20");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(day.join("_manifest.json")).unwrap()).unwrap();
    let tables = manifest["tables"].as_array().unwrap();
    let rows_of =
        |name: &str| tables.iter().find(|t| t["name"] == name).map(|t| t["rows"].as_u64().unwrap()).unwrap_or(0);
    let records = rows_of("OBJECTS");
    let bytes: u64 =
        tables.iter().flat_map(|t| t["files"].as_array().unwrap()).map(|f| f["bytes"].as_u64().unwrap()).sum();
    let requests = manifest["requests"].as_u64().unwrap();
    println!(
        "{scale:>8} {format:<7} {:<8} {records:>9} {wall:>8.1} {:>9.0} {:>7.1} {:>8.1} {:>6} {:>8.1} {:>7.1} {:>8.2}",
        rate.unwrap_or("none"),
        records as f64 / wall,
        bytes as f64 / 1e6 / wall,
        requests as f64 * 1000.0 / records as f64,
        sandbox.throttled(),
        usage.max_rss_mb,
        usage.cpu_s,
        wall / usage.cpu_s,
    );
    if format == "csv" {
        let raw = dest.path().join("all.csv");
        let csv = concatenated_csv(&day, &raw);
        let (gzip_cpu, gzip_bytes) = gzip6(&raw);
        println!(
            "         gzip -6 over the same {:.1} MB of CSV: {gzip_cpu:.1} CPU s, {:.1} MB; exporter CPU / gzip CPU = {:.2}, our bytes / gzip's = {:.3}",
            csv as f64 / 1e6,
            gzip_bytes as f64 / 1e6,
            usage.cpu_s / gzip_cpu,
            bytes as f64 / gzip_bytes as f64,
        );
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn main() {
    // `cargo test --benches` runs benches in test mode: compile-check only.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let scales: Vec<u64> = list("CRMDUMP_BENCH_SCALES", "10000,100000").iter().map(|s| s.parse().unwrap()).collect();
    let formats = list("CRMDUMP_BENCH_FORMATS", "csv,parquet");
    let throttled: Vec<u64> = list("CRMDUMP_BENCH_THROTTLED", "10000").iter().map(|s| s.parse().unwrap()).collect();
    println!(
        "{:>8} {:<7} {:<8} {:>9} {:>8} {:>9} {:>7} {:>8} {:>6} {:>8} {:>7} {:>8}",
        "scale",
        "format",
        "limit",
        "records",
        "wall s",
        "rec/s",
        "MB/s",
        "req/1k",
        "429s",
        "RSS MB",
        "CPU s",
        "wall/CPU"
    );
    for &scale in &scales {
        for format in &formats {
            run(scale, format, None);
        }
        if throttled.contains(&scale) {
            run(scale, "csv", Some("100/10s"));
        }
    }
}
