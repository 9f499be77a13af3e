//! The commit protocol of a day folder, in one place. A day is begun by withdrawing its old
//! manifest (from then on the folder reads as incomplete); its parts are written; it is committed by removing every file
//! of the date this run did not write and writing the manifest last, or abandoned (the
//! writers abort their open parts, and without a manifest nothing of it is trusted).

use std::collections::HashSet;

use bytes::Bytes;

use super::Sink;
use super::layout::Layout;
use super::manifest::Manifest;
use crate::error::{Error, Result};

/// One day folder being written.
#[derive(Debug, Clone)]
pub struct DayCommit {
    sink: Sink,
    layout: Layout,
    date: String,
}

impl DayCommit {
    /// Begins `date`: withdraws its manifest.
    pub async fn begin(sink: &Sink, layout: Layout, date: &str) -> Result<DayCommit> {
        sink.delete(&layout.manifest_key(date)).await?;
        Ok(DayCommit { sink: sink.clone(), layout, date: date.to_string() })
    }

    /// Where the parts of `table` go (`part-NNNNN.<ext>`); `written` counts their bytes.
    pub fn part_sink(
        &self,
        table: &str,
        ext: &'static str,
        written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> super::ObjectPartSink {
        let (base, dir) = (self.layout.base(&self.date), self.layout.table_dir(&self.date, table));
        self.sink.part_sink(&base, &dir, ext, written)
    }

    /// Where the manifest goes.
    pub fn manifest_key(&self) -> String {
        self.layout.manifest_key(&self.date)
    }

    /// Commits the day: removes the files of the date that `manifest` does not list (parts
    /// of an earlier run that had more of them, staging files and parts of a killed run),
    /// then, if `lease` is still this run's, writes the manifest. Returns its key.
    pub async fn commit(self, manifest: &Manifest, lease: &super::lease::Lease) -> Result<String> {
        let base = self.layout.base(&self.date);
        let keep: HashSet<String> =
            manifest.tables.iter().flat_map(|t| &t.files).map(|f| Layout::join(&base, &f.path)).collect();
        for key in self.sink.parts_of(self.layout, &self.date).await? {
            if !keep.contains(&key) {
                tracing::info!(key = %key, "Removing a file of an earlier or killed run.");
                self.sink.remove(&key).await?;
            }
        }
        let key = self.manifest_key();
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
        lease.fence().await?;
        self.sink.put(&key, Bytes::from(body)).await?;
        tracing::info!(key = %key, "Manifest written; the export is committed.");
        Ok(key)
    }

    /// Leaves the day uncommitted after a failure: its manifest stays withdrawn, so no reader
    /// trusts what was written; the next run of the date removes it.
    pub fn abandon(self, why: &Error) {
        tracing::warn!(date = %self.date, error = %why, "The day folder is left uncommitted.");
    }
}
