//! Progress of a long export: a line per busy table on stderr (rows, rows per second, bytes
//! written) plus a totals line (requests, rate-limit waits) when stderr is a terminal; a log
//! line with the same figures as fields every few seconds otherwise, so that cron and
//! orchestrator logs show the export is moving. Where a table's size is known without asking
//! (the ids the destination's baseline holds, for a type read whole), its line also says how
//! far along it is and when it should end; while the rate limit holds requests back, the
//! totals say so and show the account's request budget instead of an estimate that would lie.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::http::HttpStats;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars redrawn in place (stderr is a terminal).
    Bars,
    /// A log line every `LINE_EVERY`.
    Lines,
    /// Nothing (a library call's default).
    #[default]
    Off,
}

const LINE_EVERY: Duration = Duration::from_secs(15);
const REDRAW_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct TableCounts {
    rows: u64,
    bytes: Arc<AtomicU64>,
    /// The rows expected, when known.
    expected: Option<u64>,
    /// When its first rows arrived.
    first: Option<Instant>,
}

/// One table's figures at a moment.
#[derive(Debug, Clone, PartialEq)]
struct TableView {
    name: String,
    rows: u64,
    bytes: u64,
    expected: Option<u64>,
    /// Rows per second since its first rows.
    rate: f64,
}

impl TableView {
    /// Percentage done and seconds left, when the size is known and rows are coming.
    fn estimate(&self) -> Option<(f64, f64)> {
        let expected = self.expected.filter(|e| *e > 0)?;
        let done = self.rows.min(expected);
        let percent = 100.0 * done as f64 / expected as f64;
        (self.rate > 0.0).then(|| (percent, (expected - done) as f64 / self.rate))
    }

    fn describe(&self) -> String {
        let mut line = format!("{} rows, {:.0}/s, {}", self.rows, self.rate, human_bytes(self.bytes));
        if let (Some(expected), Some((percent, left))) = (self.expected, self.estimate()) {
            line.push_str(&format!(" | {percent:.0}% of ~{expected}, ETA {}", human_seconds(left)));
        }
        line
    }
}

fn human_seconds(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The run's totals at a moment.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    rows: u64,
    bytes: u64,
    requests: u64,
    waits: u64,
    /// Requests held back by the rate limit (ours or the API's) since the last look.
    throttled: bool,
    /// The account's budget as the API last stated it: requests per interval.
    budget: Option<(u64, u64)>,
    /// Over the tables whose size is known: percentage and seconds left.
    estimate: Option<(f64, f64)>,
}

/// Shared counters; the pipeline adds rows, writers add bytes, the HTTP client counts requests.
pub struct Progress {
    mode: ProgressMode,
    tables: Mutex<BTreeMap<String, TableCounts>>,
    http: Mutex<Option<Arc<HttpStats>>>,
    started: Instant,
    /// Rate-limit waits and paced requests at the last look.
    held_before: AtomicU64,
}

/// Tables worth a line of their own (the big, growing ones).
fn shown(table: &str) -> bool {
    table.starts_with("OBJECTS_")
        || table.starts_with("EVENTS_")
        || matches!(table, "OBJECT_PROPERTIES_HISTORY" | "LIST_MEMBERSHIPS" | "ASSOCIATIONS" | "OBJECT_PROPERTIES")
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Arc<Progress> {
        Arc::new(Progress {
            mode,
            tables: Mutex::new(BTreeMap::new()),
            http: Mutex::new(None),
            started: Instant::now(),
            held_before: AtomicU64::new(0),
        })
    }

    /// `table` should end with about `rows` rows (what the destination already knows of it).
    pub fn expect(&self, table: &str, rows: u64) {
        self.tables.lock().expect("progress lock").entry(table.to_string()).or_default().expected = Some(rows);
    }

    pub fn set_http(&self, stats: Arc<HttpStats>) {
        *self.http.lock().expect("progress lock") = Some(stats);
    }

    pub fn add_rows(&self, table: &str, rows: u64) {
        let mut tables = self.tables.lock().expect("progress lock");
        let counts = tables.entry(table.to_string()).or_default();
        counts.rows += rows;
        counts.first.get_or_insert_with(Instant::now);
    }

    /// The counter a table's writer adds its written bytes to.
    pub fn bytes_counter(&self, table: &str) -> Arc<AtomicU64> {
        self.tables.lock().expect("progress lock").entry(table.to_string()).or_default().bytes.clone()
    }

    fn snapshot(&self) -> (Vec<TableView>, Totals) {
        let now = Instant::now();
        let tables: Vec<TableView> = self
            .tables
            .lock()
            .expect("progress lock")
            .iter()
            .map(|(name, c)| {
                let busy = c.first.map(|f| now.duration_since(f).as_secs_f64()).unwrap_or(0.0);
                TableView {
                    name: name.clone(),
                    rows: c.rows,
                    bytes: c.bytes.load(Ordering::Relaxed),
                    expected: c.expected,
                    rate: if busy > 0.5 { c.rows as f64 / busy } else { 0.0 },
                }
            })
            .collect();
        let mut totals = Totals {
            rows: tables.iter().map(|t| t.rows).sum(),
            bytes: tables.iter().map(|t| t.bytes).sum(),
            ..Totals::default()
        };
        if let Some(h) = &*self.http.lock().expect("progress lock") {
            totals.requests = h.requests.load(Ordering::Relaxed);
            totals.waits = h.rate_limited.load(Ordering::Relaxed);
            let held = totals.waits + h.paced.load(Ordering::Relaxed);
            totals.throttled = held > self.held_before.swap(held, Ordering::Relaxed);
            let limits = h.limits.lock().expect("limits lock").clone();
            totals.budget = limits.and_then(|l| Some((l.max?, l.interval_ms?)));
        }
        let known: Vec<&TableView> = tables.iter().filter(|t| t.expected.is_some_and(|e| e > 0)).collect();
        let expected: u64 = known.iter().filter_map(|t| t.expected).sum();
        let done: u64 = known.iter().map(|t| t.rows.min(t.expected.unwrap_or(0))).sum();
        let elapsed = self.started.elapsed().as_secs_f64();
        if expected > 0 && done > 0 && elapsed > 0.0 {
            let rate = done as f64 / elapsed;
            totals.estimate = Some((100.0 * done as f64 / expected as f64, (expected - done) as f64 / rate));
        }
        (tables, totals)
    }

    fn totals_line(&self, t: &Totals) -> String {
        let mut line = format!(
            "{} rows, {} written, {} requests, {} rate-limit waits, {:.0} s",
            t.rows,
            human_bytes(t.bytes),
            t.requests,
            t.waits,
            self.started.elapsed().as_secs_f64()
        );
        if t.throttled {
            line.push_str(" | throttled by the rate limit");
            if let Some((max, interval_ms)) = t.budget {
                line.push_str(&format!(" (budget {max} requests per {} s)", interval_ms as f64 / 1000.0));
            }
        } else if let Some((percent, left)) = t.estimate {
            line.push_str(&format!(
                " | records {percent:.0}% of what the destination knows, ETA {}",
                human_seconds(left)
            ));
        }
        line
    }

    /// Starts showing progress until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> ProgressGuard {
        let me = self.clone();
        let task = match self.mode {
            ProgressMode::Off => None,
            ProgressMode::Lines => Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(LINE_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let (tables, t) = me.snapshot();
                    for table in tables.iter().filter(|t| shown(&t.name) && t.rows > 0 && t.rate > 0.0) {
                        let (percent, eta_seconds) = table.estimate().unzip();
                        tracing::info!(
                            table = %table.name, rows = table.rows, rows_per_second = table.rate.round() as u64,
                            bytes = table.bytes, expected_rows = table.expected,
                            percent = percent.map(|p| p.round() as u64), eta_seconds = eta_seconds.map(|s| s.round() as u64),
                            "Table progress."
                        );
                    }
                    let (percent, eta_seconds) = t.estimate.filter(|_| !t.throttled).unzip();
                    tracing::info!(
                        rows = t.rows,
                        bytes = t.bytes,
                        requests = t.requests,
                        rate_limit_waits = t.waits,
                        elapsed_seconds = me.started.elapsed().as_secs(),
                        throttled = t.throttled,
                        budget_requests = t.budget.map(|b| b.0),
                        budget_interval_ms = t.budget.map(|b| b.1),
                        percent = percent.map(|p| p.round() as u64),
                        eta_seconds = eta_seconds.map(|s| s.round() as u64),
                        "Progress: {}.",
                        me.totals_line(&t)
                    );
                }
            })),
            ProgressMode::Bars => Some(tokio::spawn(async move {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template("{spinner} {prefix:<44} {msg}").expect("valid template");
                let total = multi.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix("total"));
                let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
                let mut tick = tokio::time::interval(REDRAW_EVERY);
                loop {
                    tick.tick().await;
                    let (tables, t) = me.snapshot();
                    for table in tables.iter().filter(|t| shown(&t.name) && t.rows > 0) {
                        let bar = bars.entry(table.name.clone()).or_insert_with(|| {
                            multi.insert_before(
                                &total,
                                ProgressBar::new_spinner().with_style(style.clone()).with_prefix(table.name.clone()),
                            )
                        });
                        bar.set_message(table.describe());
                        bar.tick();
                    }
                    total.set_message(me.totals_line(&t));
                    total.tick();
                }
            })),
        };
        ProgressGuard { task }
    }
}

/// Stops the display when dropped (the bars are left as drawn last).
pub struct ProgressGuard {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_and_bytes_per_table() {
        let p = Progress::new(ProgressMode::Off);
        p.add_rows("OBJECTS_CONTACTS", 100);
        p.add_rows("OBJECTS_CONTACTS", 50);
        p.bytes_counter("OBJECTS_CONTACTS").fetch_add(2048, Ordering::Relaxed);
        let (tables, totals) = p.snapshot();
        assert_eq!((tables[0].name.as_str(), tables[0].rows, tables[0].bytes), ("OBJECTS_CONTACTS", 150, 2048));
        let totals = Totals { requests: 7, waits: 1, ..totals };
        assert!(p.totals_line(&totals).starts_with("150 rows, 2.0 KiB written, 7 requests, 1 rate-limit waits"));
        assert!(shown("EVENTS_E_VISITED_PAGE") && !shown("OWNERS"));
    }

    #[test]
    fn a_known_size_gives_a_percentage_and_an_eta_and_throttling_shows_the_budget() {
        let table =
            TableView { name: "OBJECTS_CONTACTS".into(), rows: 2_500, bytes: 0, expected: Some(10_000), rate: 500.0 };
        let (percent, left) = table.estimate().unwrap();
        assert_eq!((percent.round(), left.round()), (25.0, 15.0));
        assert!(table.describe().ends_with("| 25% of ~10000, ETA 15s"), "{}", table.describe());
        // More rows than expected (records created since): 100%, nothing left.
        let over = TableView { rows: 12_000, ..table.clone() };
        assert_eq!(over.estimate().unwrap(), (100.0, 0.0));
        // No size known, or no rows yet: no estimate.
        assert_eq!(TableView { expected: None, ..table.clone() }.estimate(), None);
        assert_eq!(TableView { rate: 0.0, ..table }.estimate(), None);
        assert_eq!(human_seconds(3725.0), "1h02m");

        let p = Progress::new(ProgressMode::Off);
        let estimate = Totals { estimate: Some((40.0, 90.0)), ..Totals::default() };
        assert!(p.totals_line(&estimate).ends_with("| records 40% of what the destination knows, ETA 1m30s"));
        let throttled = Totals { throttled: true, budget: Some((100, 10_000)), ..estimate };
        let line = p.totals_line(&throttled);
        assert!(
            line.ends_with("| throttled by the rate limit (budget 100 requests per 10 s)") && !line.contains("ETA"),
            "{line}"
        );
    }
}
