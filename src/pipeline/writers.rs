//! The table writers of one export: a small async task per table that has data, encoding on
//! the blocking pool one batch at a time.
//!
//! Resources stay bounded whatever the catalog holds: a table's task and encoder exist only
//! from its first batch until its stream says it is complete (or the run ends), at most
//! [`encode_slots`] batches are encoded at once (so at most that many blocking threads do
//! CPU work), and a table that never receives a row is written (header only) at the end,
//! again through the same slots.
//!
//! Failure ends everything: the first writer that fails cancels the run's token; every other
//! writer then aborts its open part (the multipart upload or staging file) and stops, the
//! router stops reading, and the extractor sees a closed channel. Nothing here ever waits on
//! a queue that nobody reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::record_batch::RecordBatch;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::schema::TableSchema;
use crate::sink::commit::DayCommit;
use crate::write::{OutputFormat, PartReceipt, TableEncoder};

/// Batches queued per table writer before the router waits.
const WRITER_QUEUE: usize = 4;
/// Tables closed early that may be finishing (waiting for a slot, closing their last part)
/// at once: beyond it the router waits, so that a thousand small tables completed in quick
/// succession never hold a thousand encoders (each a few hundred KiB of compressor state).
const FINISHING: usize = 16;

/// What a table's writer receives.
enum Feed {
    Batch(RecordBatch),
    /// The stream is complete: the writer holds this permit until its last part is closed.
    Complete(tokio::sync::OwnedSemaphorePermit),
}

/// Batches encoded at the same time: the blocking threads doing CPU work (twice the cores,
/// so that a writer waiting on an upload does not leave a core idle).
pub(crate) fn encode_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(4, 32))
}

/// What every table's writer needs to know.
pub(crate) struct WriterSpec {
    pub day: DayCommit,
    pub format: OutputFormat,
    pub max_file_size: u64,
    pub source: String,
}

type Finished = (String, Vec<PartReceipt>);

/// The writers of one export run.
pub(crate) struct Writers {
    spec: Arc<WriterSpec>,
    progress: Arc<Progress>,
    tables: HashMap<String, Arc<TableSchema>>,
    open: HashMap<String, mpsc::Sender<Feed>>,
    /// Tables whose writer was started (open, closed early, or done).
    started: HashSet<String>,
    tasks: JoinSet<Result<Finished>>,
    slots: Arc<Semaphore>,
    finishing: Arc<Semaphore>,
    cancel: CancellationToken,
}

impl Writers {
    pub fn new(spec: WriterSpec, tables: &[Arc<TableSchema>], progress: Arc<Progress>) -> Writers {
        Writers {
            spec: Arc::new(spec),
            progress,
            tables: tables.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            open: HashMap::new(),
            started: HashSet::new(),
            tasks: JoinSet::new(),
            slots: Arc::new(Semaphore::new(encode_slots())),
            finishing: Arc::new(Semaphore::new(FINISHING)),
            cancel: CancellationToken::new(),
        }
    }

    /// Adds a table found during the run: written like the catalog's, with rows or empty.
    /// Returns false when it was known already.
    pub fn declare(&mut self, table: Arc<TableSchema>) -> bool {
        if self.tables.contains_key(&table.name) {
            return false;
        }
        self.tables.insert(table.name.clone(), table);
        true
    }

    /// Cancelled when any writer fails: the router stops reading at once.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Sends a batch to its table's writer (starting it on the first batch). If a writer has
    /// failed, returns that failure.
    pub async fn route(&mut self, table: &str, batch: RecordBatch) -> Result<()> {
        if !self.open.contains_key(table) {
            if self.started.contains(table) {
                return Err(Error::Internal(format!("rows for {table} after its stream said it was complete")));
            }
            let schema = self
                .tables
                .get(table)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no table {table} in the catalog")))?;
            let tx = self.spawn(schema);
            self.open.insert(table.to_string(), tx);
        }
        let tx = self.open.get(table).expect("opened above").clone();
        self.feed(&tx, Feed::Batch(batch)).await
    }

    async fn feed(&mut self, tx: &mpsc::Sender<Feed>, feed: Feed) -> Result<()> {
        let sent = tokio::select! {
            sent = tx.send(feed) => sent.is_ok(),
            _ = self.cancel.cancelled() => false,
        };
        if sent { Ok(()) } else { Err(self.failure().await) }
    }

    /// The table's stream is complete: its last part closes now and its memory is freed.
    /// Waits while too many tables are still finishing.
    pub async fn complete(&mut self, table: &str) -> Result<()> {
        let Some(tx) = self.open.remove(table) else {
            // No rows: written with the idle tables at the end.
            return Ok(());
        };
        let permit = tokio::select! {
            permit = self.finishing.clone().acquire_owned() => permit.expect("never closed"),
            _ = self.cancel.cancelled() => return Err(self.failure().await),
        };
        self.feed(&tx, Feed::Complete(permit)).await
    }

    /// Closes every table (writing header-only parts for those without rows) and returns
    /// every table's receipts, or the first failure.
    pub async fn finish(mut self) -> Result<HashMap<String, Vec<PartReceipt>>> {
        self.open.clear();
        let idle: Vec<Arc<TableSchema>> =
            self.tables.values().filter(|t| !self.started.contains(&t.name)).cloned().collect();
        for table in idle {
            drop(self.spawn(table));
        }
        let mut receipts = HashMap::new();
        while let Some(joined) = self.tasks.join_next().await {
            match flatten(joined) {
                Ok((table, parts)) => {
                    receipts.insert(table, parts);
                }
                Err(e) => {
                    self.cancel.cancel();
                    return Err(first_failure(e, &mut self.tasks).await);
                }
            }
        }
        Ok(receipts)
    }

    /// Stops every writer, aborting their open parts (used when the run fails elsewhere).
    pub async fn abort(mut self) {
        self.open.clear();
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Cancels the run and returns the first real failure among the writers (not the
    /// cancellation it caused in the others).
    pub async fn failure(&mut self) -> Error {
        self.cancel.cancel();
        match first_failure(Error::Cancelled, &mut self.tasks).await {
            Error::Cancelled => Error::Internal("a table writer stopped without saying why".into()),
            real => real,
        }
    }

    fn spawn(&mut self, table: Arc<TableSchema>) -> mpsc::Sender<Feed> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        self.started.insert(table.name.clone());
        let written = self.progress.bytes_counter(&table.name);
        let job = TableJob {
            spec: self.spec.clone(),
            table,
            written,
            slots: self.slots.clone(),
            cancel: self.cancel.clone(),
        };
        self.tasks.spawn(job.run(rx));
        tx
    }
}

fn flatten(joined: std::result::Result<Result<Finished>, tokio::task::JoinError>) -> Result<Finished> {
    joined.map_err(|e| Error::Internal(format!("a table writer panicked: {e}")))?
}

/// `first` unless it is only a consequence of the cancellation; then the first real error
/// among the remaining writers.
async fn first_failure(first: Error, tasks: &mut JoinSet<Result<Finished>>) -> Error {
    let mut found = (!first.is_cancelled()).then_some(first);
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = flatten(joined)
            && found.is_none()
            && !e.is_cancelled()
        {
            found = Some(e);
        }
    }
    found.unwrap_or(Error::Cancelled)
}

/// One table's writer task.
struct TableJob {
    spec: Arc<WriterSpec>,
    table: Arc<TableSchema>,
    written: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
}

enum Step {
    Batch(RecordBatch),
    Finish,
    Stop,
}

impl TableJob {
    async fn run(self, mut rx: mpsc::Receiver<Feed>) -> Result<Finished> {
        let mut encoder: Option<Box<dyn TableEncoder>> = None;
        // Held from the stream's completion until the last part is closed.
        let mut _finishing = None;
        loop {
            let step = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Step::Stop,
                next = rx.recv() => match next {
                    None => Step::Finish,
                    Some(Feed::Batch(batch)) => Step::Batch(batch),
                    Some(Feed::Complete(permit)) => {
                        _finishing = Some(permit);
                        continue;
                    }
                },
            };
            let step = match step {
                Step::Stop => None,
                other => {
                    // A slot to encode in, unless the run is cancelled meanwhile.
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => None,
                        permit = self.slots.clone().acquire_owned() => Some((other, permit.expect("never closed"))),
                    }
                }
            };
            let Some((step, permit)) = step else {
                drop(rx);
                self.abandon(encoder).await;
                return Err(Error::Cancelled);
            };
            let mut open = match encoder.take() {
                Some(e) => e,
                None => self.open_encoder(),
            };
            let outcome = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let result = match step {
                    Step::Batch(batch) => open.write_batch(&batch).map(|()| None),
                    _ => open.finish().map(Some),
                };
                (open, result)
            })
            .await;
            match outcome {
                Ok((open, Ok(None))) => encoder = Some(open),
                Ok((_, Ok(Some(receipts)))) => {
                    tracing::debug!(table = %self.table.name, parts = receipts.len(), "Table written.");
                    return Ok((self.table.name.clone(), receipts));
                }
                Ok((open, Err(e))) => {
                    self.cancel.cancel();
                    self.abandon(Some(open)).await;
                    return Err(e);
                }
                Err(e) => {
                    self.cancel.cancel();
                    return Err(Error::Internal(format!("the writer of {} panicked: {e}", self.table.name)));
                }
            }
        }
    }

    fn open_encoder(&self) -> Box<dyn TableEncoder> {
        let s = &self.spec;
        let parts = s.day.part_sink(&self.table.name, s.format.extension(), self.written.clone());
        s.format.encoder(&self.table, parts, s.max_file_size, &s.source)
    }

    /// Aborts the open part of `encoder`, if any, on the blocking pool (through a slot like
    /// any encoding work, so that the threads waiting on aborts never fill the pool that
    /// the store's own file operations need).
    async fn abandon(&self, encoder: Option<Box<dyn TableEncoder>>) {
        if let Some(mut encoder) = encoder {
            let table = self.table.name.clone();
            let permit = self.slots.clone().acquire_owned().await.expect("never closed");
            let aborted = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                encoder.abort()
            })
            .await;
            if let Ok(Err(e)) = aborted {
                tracing::warn!(table = %table, error = %e, "Could not abort an open part; the next run of this date removes it.");
            }
        }
    }
}
