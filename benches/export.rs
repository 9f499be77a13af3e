//! End-to-end bench: real exports against `crmdump sandbox` in a separate process, over
//! loopback HTTP, measured from outside (wall time, the exporter's CPU seconds and peak RSS
//! from `wait4`), next to GNU `gzip -6` over the same CSV bytes: the CSV path's physical limit.
//!
//! `cargo bench --bench export` runs contacts, companies and deals at 10k and 100k records per
//! type, CSV and Parquet, unthrottled, and 10k at the default HubSpot rate limit. Settings:
//! `CRMDUMP_BENCH_SCALES=10000,100000,1000000`, `CRMDUMP_BENCH_FORMATS=csv,parquet`,
//! `CRMDUMP_BENCH_THROTTLED=10000` (scales also run at `--rate-limit 100/10s`; empty for none),
//! `CRMDUMP_BENCH_GZIP_MAX_SCALE=100000` (largest scale whose CSV also goes through `gzip -6`:
//! at 1M that alone takes half an hour).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const OBJECTS: &str = "contacts,companies,deals";

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

    /// The sandbox's request counters (`/_sandbox/stats`).
    fn stats(&self) -> serde_json::Value {
        let out = Command::new("curl").args(["-s", &format!("{}/_sandbox/stats", self.url)]).output();
        out.ok().and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok()).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CSV parts of a day folder, decompressed and streamed into GNU `gzip -6` (no copy on
/// disk: at 1M records it would be over 100 GB): (CSV bytes, gzip's CPU seconds, its output
/// bytes).
fn gzip6_over_parts(day: &Path) -> (u64, f64, u64) {
    let mut child = Command::new("gzip")
        .args(["-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()).unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut total = 0;
    let mut dirs = vec![day.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "gz") {
                let mut part = flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap());
                total += std::io::copy(&mut part, &mut stdin).unwrap();
            }
        }
    }
    drop(stdin);
    let bytes = counter.join().unwrap();
    (total, support::wait(&mut child, true).cpu_s, bytes)
}

/// CPU seconds a running process has used so far (`/proc/<pid>/stat`, clock ticks of 1/100 s).
fn cpu_so_far(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn run(scale: u64, format: &str, rate: Option<&str>, gzip_max: u64) {
    let sandbox = Sandbox::start(scale, rate);
    let sandbox_cpu_before = cpu_so_far(sandbox.child.id());
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
    let usage = support::wait(&mut child, true);
    let wall = clock.elapsed().as_secs_f64();
    let sandbox_cpu = cpu_so_far(sandbox.child.id()) - sandbox_cpu_before;
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
    let stats = sandbox.stats();
    println!(
        "{scale:>8} {format:<7} {:<8} {records:>9} {wall:>8.1} {:>9.0} {:>7.1} {:>8.1} {:>6} {:>8.1} {:>7.1} {:>8.2}",
        rate.unwrap_or("none"),
        records as f64 / wall,
        bytes as f64 / 1e6 / wall,
        requests as f64 * 1000.0 / records as f64,
        stats["throttled"].as_u64().unwrap_or(0),
        usage.max_rss_mb,
        usage.cpu_s,
        wall / usage.cpu_s,
    );
    println!("         the sandbox used {sandbox_cpu:.1} CPU s on the same cores meanwhile");
    // The call plan: requests for record pages per 1,000 records, and association batch
    // reads per 1,000 records of the pair's first type, per pair.
    let by_endpoint = stats["by_endpoint"].as_object().cloned().unwrap_or_default();
    let counted = |f: &dyn Fn(&str) -> bool| -> u64 {
        by_endpoint.iter().filter(|(k, _)| f(k)).map(|(_, v)| v.as_u64().unwrap_or(0)).sum()
    };
    let object_pages = counted(&|k| k.contains("/crm/v3/objects/") && !k.contains("/search"));
    let association_reads = counted(&|k| k.contains("/crm/v4/associations/") && k.ends_with("/batch/read"));
    let pair_records: u64 = tables
        .iter()
        .filter_map(|t| t["name"].as_str()?.strip_prefix("ASSOCIATIONS_")?.split_once("_TO_").map(|(from, _)| from))
        .map(|from| rows_of(&format!("OBJECTS_{from}")))
        .sum();
    println!(
        "         call plan: {object_pages} record-page requests = {:.1} per 1,000 records; {association_reads} association reads = {:.2} per 1,000 records per pair",
        object_pages as f64 * 1000.0 / records as f64,
        association_reads as f64 * 1000.0 / pair_records.max(1) as f64,
    );
    if format == "csv" && rate.is_none() && scale <= gzip_max {
        let (csv, gzip_cpu, gzip_bytes) = gzip6_over_parts(&day);
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
    let gzip_max: u64 =
        std::env::var("CRMDUMP_BENCH_GZIP_MAX_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
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
            run(scale, format, None, gzip_max);
        }
        if throttled.contains(&scale) {
            run(scale, "csv", Some("100/10s"), gzip_max);
        }
    }
}
