//! Bench of `crmdump listen`: HubSpot batches of 100 signed events, sent by an in-process
//! load generator over loopback HTTP to a listener process pinned to one core, measured from
//! outside: events per second acknowledged, acknowledgement latency (p50, p99, max), the
//! listener's peak RSS and CPU seconds (`wait4`), and that the journal then holds every event.
//!
//! `cargo bench --bench listen` runs, for a local destination and (when
//! `CRMDUMP_BENCH_S3_ENDPOINT` names an S3-compatible server, moto in our runs) for S3:
//! a closed loop of 20 concurrent senders for 15 s (the most the listener takes), then an open
//! loop at 10,000 events per second (100 requests/s) for 15 s (the latency at the goal rate).
//! `CRMDUMP_BENCH_SECONDS` changes the duration, `CRMDUMP_BENCH_CORE` the core (default 0),
//! `CRMDUMP_BENCH_LOCAL=0` leaves out the local destination.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "bench-client-secret";
const PUBLIC: &str = "https://hooks.bench.test";
const BATCH: usize = 100;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A listener process on one core.
fn start_listener(dest: &str, spool: &std::path::Path, s3: Option<&str>) -> (Child, u16) {
    let port = free_port();
    let core = std::env::var("CRMDUMP_BENCH_CORE").unwrap_or_else(|_| "0".into());
    let mut command = Command::new("taskset");
    command
        .args(["-c", &core, env!("CARGO_BIN_EXE_crmdump"), "listen", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--dest", dest, "--spool", spool.to_str().unwrap(), "--public-url", PUBLIC, "--flush-interval", "1s"])
        .env("CRMDUMP_HUBSPOT_CLIENT_SECRET", SECRET)
        .env("RUST_LOG", "crmdump=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(endpoint) = s3 {
        command
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ALLOW_HTTP", "true");
    }
    let mut child = command.spawn().expect("taskset and crmdump start");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("Listening"), "{line}");
    (child, port)
}

/// Batch `n` of a portal: 100 property changes, as HubSpot sends them.
fn batch(portal: u64, n: u64) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (0..BATCH as u64)
        .map(|k| {
            let id = n * BATCH as u64 + k;
            serde_json::json!({
                "eventId": id, "subscriptionId": 1_234_567, "portalId": portal, "appId": 4_250_321,
                "occurredAt": 1_764_374_400_000_i64 + id as i64, "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0, "objectId": 100_000_000_000_u64 + id, "propertyName": "phone",
                "propertyValue": format!("touched at 2026-11-29T10:00:00.000Z #{id}"), "changeSource": "CRM",
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

fn sign(body: &[u8], url: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"POST");
    mac.update(url.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Sends batch `n`; its acknowledgement latency.
async fn send(client: &reqwest::Client, port: u16, portal: u64, n: u64) -> Duration {
    let body = batch(portal, n);
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let signature = sign(&body, &format!("{PUBLIC}/hubspot"), &timestamp);
    let start = Instant::now();
    let response = client
        .post(format!("http://127.0.0.1:{port}/hubspot"))
        .header("content-type", "application/json")
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", timestamp)
        .body(body)
        .send()
        .await
        .expect("the listener answers");
    assert!(response.status().is_success(), "{}", response.status());
    start.elapsed()
}

struct Run {
    requests: u64,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn report(&self, what: &str) {
        let mut l = self.latencies.clone();
        l.sort();
        let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
        println!(
            "{what}: {:.0} events/s ({} requests in {:.1} s), ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.requests as f64 * BATCH as f64 / self.seconds,
            self.requests,
            self.seconds,
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}

/// `senders` senders each sending batch after batch for `seconds`.
async fn closed_loop(port: u16, senders: u64, seconds: f64, first: u64) -> Run {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed().as_secs_f64() < seconds {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    latencies.push(send(&client, port, 1000 + s % 4, n).await);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run { requests: latencies.len() as u64, seconds: start.elapsed().as_secs_f64(), latencies }
}

/// `rate` requests per second for `seconds`, whatever the answers' latency.
async fn open_loop(port: u16, rate: u64, seconds: f64, first: u64) -> Run {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::new();
    let mut n = first;
    while start.elapsed().as_secs_f64() < seconds {
        ticker.tick().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move { send(&client, port, 2000 + n % 4, n).await }));
        n += 1;
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    Run { requests: latencies.len() as u64, seconds: start.elapsed().as_secs_f64(), latencies }
}

/// Events in the journal at `dest` (a local folder): the line counts its markers list, each
/// part checked against its marker by `verify`. (Counted from the markers, not read into this
/// process: its memory would count in the next listener's peak RSS, which a child inherits at
/// fork.)
async fn journal_events(dest: &str) -> u64 {
    let sink = crmdump::internals::Sink::open(dest).unwrap();
    for (folder, report) in crmdump::internals::verify_journal(&sink).await.unwrap() {
        assert!(report.problems.is_empty(), "{folder}: {:?}", report.problems);
    }
    let mut total = 0;
    for (key, _) in sink.list("_webhooks").await.unwrap() {
        if key.contains("/_committed/") {
            let marker: crmdump::internals::Manifest =
                serde_json::from_slice(&sink.get(&key).await.unwrap().unwrap()).unwrap();
            total += marker.tables[0].rows;
        }
    }
    total
}

fn bench(name: &str, dest: &str, s3: Option<&str>, seconds: f64) {
    let spool = tempfile::tempdir().unwrap();
    let (mut child, port) = start_listener(dest, spool.path(), s3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let closed = rt.block_on(closed_loop(port, 20, seconds, 0));
    closed.report(&format!("{name}, 20 senders"));
    let open = rt.block_on(open_loop(port, 100, seconds, 10_000_000));
    open.report(&format!("{name}, 10,000 events/s offered"));
    // SIGTERM: the listener drains its spool and exits.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let usage = support::wait(&mut child, false);
    println!("{name}: listener peak RSS {:.0} MB, {:.1} CPU s", usage.max_rss_mb, usage.cpu_s);
    if s3.is_none() {
        let kept = rt.block_on(journal_events(dest));
        let sent = (closed.requests + open.requests) * BATCH as u64;
        assert_eq!(kept, sent, "the journal holds every acknowledged event");
        println!("{name}: the journal holds all {kept} events");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: f64 = std::env::var("CRMDUMP_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15.0);
    let local = tempfile::tempdir().unwrap();
    if std::env::var("CRMDUMP_BENCH_LOCAL").as_deref() != Ok("0") {
        bench("local folder", local.path().to_str().unwrap(), None, seconds);
    }
    match std::env::var("CRMDUMP_BENCH_S3_ENDPOINT") {
        Ok(endpoint) => {
            let bucket = format!("crmdump-listen-bench-{}", std::process::id());
            let created = Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status();
            assert!(created.is_ok_and(|s| s.success()), "cannot create the bench bucket at {endpoint}");
            bench("S3 (moto)", &format!("s3://{bucket}/journal"), Some(&endpoint), seconds);
        }
        Err(_) => println!("S3: skipped (set CRMDUMP_BENCH_S3_ENDPOINT to an S3-compatible server)"),
    }
}
