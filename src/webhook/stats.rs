//! What the listener has done so far: served by its health endpoint (JSON), scraped at
//! `/metrics` (Prometheus' text format, through `prometheus-client`), logged at exit. The
//! counters are the same atomics for all three.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::spool::Spool;

/// Counters shared by the request handlers and the drainer.
#[derive(Debug)]
pub struct Stats {
    /// Requests made durable in the spool and answered 200.
    pub accepted: AtomicU64,
    /// Requests answered 413 (body over the limit).
    pub too_large: AtomicU64,
    /// Requests answered 408 (the body did not arrive within its deadline).
    pub timed_out: AtomicU64,
    /// Requests whose body could not be read (the sender went away), answered 400.
    pub broken: AtomicU64,
    /// Requests answered 503 (spool full) or 500 (spool not writable).
    pub unavailable: AtomicU64,
    /// Events written to the journal.
    pub events: AtomicU64,
    /// Events dropped as deliveries of an event already in the journal.
    pub duplicates: AtomicU64,
    /// Authentic bodies that held no event, kept as dead letters.
    pub dead_letters: AtomicU64,
    /// Journal parts committed.
    pub parts: AtomicU64,
    /// Failed attempts to drain the spool into the destination.
    pub drain_failures: AtomicU64,
    /// Requests answered 401, by reason.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// The last drain failure, cleared by the next success.
    last_error: Mutex<Option<String>>,
    /// Seconds from a request's arrival to its acknowledgement (accepted requests).
    pub ack_latency: Histogram,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            accepted: AtomicU64::default(),
            too_large: AtomicU64::default(),
            timed_out: AtomicU64::default(),
            broken: AtomicU64::default(),
            unavailable: AtomicU64::default(),
            events: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            dead_letters: AtomicU64::default(),
            parts: AtomicU64::default(),
            drain_failures: AtomicU64::default(),
            refused: Mutex::default(),
            last_error: Mutex::default(),
            // 0.5 ms to 8 s: a spool write is an fsync, milliseconds on a healthy disk.
            ack_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 15)),
        }
    }
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    pub fn refused(&self, reason: &'static str) {
        *self.refused.lock().expect("stats lock").entry(reason).or_default() += 1;
    }

    pub fn drain_failed(&self, error: String) {
        add(&self.drain_failures, 1);
        *self.last_error.lock().expect("stats lock") = Some(error);
    }

    pub fn drained(&self) {
        self.last_error.lock().expect("stats lock").take();
    }

    /// The counters as JSON.
    pub fn snapshot(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "accepted": n(&self.accepted),
            "refused": *self.refused.lock().expect("stats lock"),
            "too_large": n(&self.too_large),
            "timed_out": n(&self.timed_out),
            "broken": n(&self.broken),
            "unavailable": n(&self.unavailable),
            "events": n(&self.events),
            "duplicates": n(&self.duplicates),
            "dead_letters": n(&self.dead_letters),
            "parts": n(&self.parts),
            "drain_failures": n(&self.drain_failures),
            "last_drain_error": *self.last_error.lock().expect("stats lock"),
        })
    }
}

/// The listener's metrics, read at each scrape from [`Stats`] and the spool.
#[derive(Debug)]
struct Metrics {
    stats: Arc<Stats>,
    spool: Arc<Spool>,
}

/// Why requests were refused, as the `reason` label says it: the authentication failures by
/// their own reason, then the other refusals.
fn refusals(stats: &Stats) -> Vec<(String, u64)> {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out: Vec<(String, u64)> =
        stats.refused.lock().expect("stats lock").iter().map(|(r, v)| (r.to_string(), *v)).collect();
    out.extend([
        ("body_too_large".to_string(), n(&stats.too_large)),
        ("body_timed_out".to_string(), n(&stats.timed_out)),
        ("body_broken".to_string(), n(&stats.broken)),
        ("spool_unavailable".to_string(), n(&stats.unavailable)),
    ]);
    out
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "crmdump_listen_requests_accepted",
                "Requests made durable in the spool and acknowledged.",
                n(&self.stats.accepted),
            ),
            ("crmdump_listen_events_journaled", "Events written to the journal.", n(&self.stats.events)),
            (
                "crmdump_listen_duplicates",
                "Deliveries of an event the journal already holds, dropped.",
                n(&self.stats.duplicates),
            ),
            (
                "crmdump_listen_dead_letters",
                "Authentic bodies that held no event, kept as dead letters.",
                n(&self.stats.dead_letters),
            ),
            ("crmdump_listen_journal_parts", "Journal parts committed.", n(&self.stats.parts)),
            (
                "crmdump_listen_journal_write_errors",
                "Failed attempts to drain the spool into the destination.",
                n(&self.stats.drain_failures),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "crmdump_listen_requests_refused",
            "Requests refused, by reason (nothing of them was kept).",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in refusals(&self.stats) {
            ConstCounter::new(value).encode(refused.encode_family(&[("reason", reason)])?)?;
        }
        let pending = self.spool.pending().unwrap_or_default();
        let oldest_ms = pending.first().and_then(|p| self.spool.read(p).ok()).map(|e| e.received_at_ms);
        let lag =
            oldest_ms.map(|ms| (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0).unwrap_or(0.0);
        let gauges = [
            ("crmdump_listen_spool_bytes", "Bytes the spooled requests take.", self.spool.used_bytes() as f64),
            (
                "crmdump_listen_spool_limit_bytes",
                "The spool's size limit (--spool-limit).",
                self.spool.limit_bytes() as f64,
            ),
            ("crmdump_listen_spool_pending", "Requests acknowledged and not yet in the journal.", pending.len() as f64),
            (
                "crmdump_listen_drain_lag_seconds",
                "Age of the oldest request not yet in the journal (0 when none).",
                lag,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The registry `/metrics` encodes: the counters and gauges above, and the acknowledgement
/// latency histogram.
pub fn registry(stats: Arc<Stats>, spool: Arc<Spool>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "crmdump_listen_ack_latency_seconds",
        "Seconds from a request's arrival to its acknowledgement (accepted requests).",
        stats.ack_latency.clone(),
    );
    registry.register_collector(Box::new(Metrics { stats, spool }));
    registry
}
