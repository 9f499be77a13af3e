//! Progress of a long export: a line per busy table on stderr (rows, bytes written) plus a
//! totals line (requests, rate-limit waits) when stderr is a terminal; a plain log line every
//! few seconds otherwise, so that cron and orchestrator logs show the export is moving.

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
}

/// Shared counters; the pipeline adds rows, writers add bytes, the HTTP client counts requests.
pub struct Progress {
    mode: ProgressMode,
    tables: Mutex<BTreeMap<String, TableCounts>>,
    http: Mutex<Option<Arc<HttpStats>>>,
    started: Instant,
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
        })
    }

    pub fn set_http(&self, stats: Arc<HttpStats>) {
        *self.http.lock().expect("progress lock") = Some(stats);
    }

    pub fn add_rows(&self, table: &str, rows: u64) {
        self.tables.lock().expect("progress lock").entry(table.to_string()).or_default().rows += rows;
    }

    /// The counter a table's writer adds its written bytes to.
    pub fn bytes_counter(&self, table: &str) -> Arc<AtomicU64> {
        self.tables.lock().expect("progress lock").entry(table.to_string()).or_default().bytes.clone()
    }

    fn snapshot(&self) -> (Vec<(String, u64, u64)>, u64, u64) {
        let tables = self
            .tables
            .lock()
            .expect("progress lock")
            .iter()
            .map(|(name, c)| (name.clone(), c.rows, c.bytes.load(Ordering::Relaxed)))
            .collect();
        let (requests, waits) = match &*self.http.lock().expect("progress lock") {
            Some(h) => (h.requests.load(Ordering::Relaxed), h.rate_limited.load(Ordering::Relaxed)),
            None => (0, 0),
        };
        (tables, requests, waits)
    }

    fn totals_line(&self, tables: &[(String, u64, u64)], requests: u64, waits: u64) -> String {
        let rows: u64 = tables.iter().map(|t| t.1).sum();
        let bytes: u64 = tables.iter().map(|t| t.2).sum();
        format!(
            "{rows} rows, {} written, {requests} requests, {waits} rate-limit waits, {:.0} s",
            human_bytes(bytes),
            self.started.elapsed().as_secs_f64()
        )
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
                    let (tables, requests, waits) = me.snapshot();
                    tracing::info!("Progress: {}.", me.totals_line(&tables, requests, waits));
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
                    let (tables, requests, waits) = me.snapshot();
                    for (name, rows, bytes) in tables.iter().filter(|t| shown(&t.0) && t.1 > 0) {
                        let bar = bars.entry(name.clone()).or_insert_with(|| {
                            multi.insert_before(
                                &total,
                                ProgressBar::new_spinner().with_style(style.clone()).with_prefix(name.clone()),
                            )
                        });
                        bar.set_message(format!("{rows} rows, {}", human_bytes(*bytes)));
                        bar.tick();
                    }
                    total.set_message(me.totals_line(&tables, requests, waits));
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
        let (tables, _, _) = p.snapshot();
        assert_eq!(tables, vec![("OBJECTS_CONTACTS".to_string(), 150, 2048)]);
        assert!(p.totals_line(&tables, 7, 1).starts_with("150 rows, 2.0 KiB written, 7 requests, 1 rate-limit waits"));
        assert!(shown("EVENTS_E_VISITED_PAGE") && !shown("OWNERS"));
    }
}
