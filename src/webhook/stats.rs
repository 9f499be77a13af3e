//! What the listener has done so far, served by its health endpoint and logged at exit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// Counters shared by the request handlers and the drainer.
#[derive(Debug, Default)]
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
