//! Multipart uploads to a cloud destination that a later run can find and abort.
//!
//! A run killed mid-upload leaves an incomplete multipart upload that the bucket bills for
//! until someone aborts it, and that object_store cannot list. So every upload is recorded
//! before its first byte goes out: a small marker object under
//! `_crmdump/uploads/<date>/` holds its key and upload id, and is removed once the upload is
//! completed or aborted. The next run of the same date aborts whatever the markers still
//! name ([`abort_leftovers`]).

use std::sync::Arc;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::Sink;
use crate::error::{Error, Result};

/// Chunks being uploaded per open part while the next one fills: with the one filling, at
/// most two chunks (10 MiB) of memory per open part.
const IN_FLIGHT: usize = 1;

/// Where the markers of `date`'s uploads live.
pub fn marker_prefix(date: &str) -> String {
    format!("_crmdump/uploads/{date}")
}

/// What a marker records.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    key: String,
    upload_id: String,
}

/// One part being uploaded through a recorded multipart upload.
pub(super) struct RecordedUpload {
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    marker: String,
    buffer: Vec<u8>,
    chunk: usize,
    next_index: usize,
    sent: Vec<(usize, PartId)>,
    in_flight: JoinSet<object_store::Result<(usize, PartId)>>,
}

impl RecordedUpload {
    /// Records, then starts, the upload of `key` (at `path`); `date` names the marker folder.
    pub(super) fn begin(sink: &Sink, handle: &Handle, key: &str, path: Path, date: &str, chunk: usize) -> Result<Self> {
        let store = sink.multipart.clone().expect("a cloud destination");
        let id =
            handle.block_on(store.create_multipart(&path)).map_err(|source| Error::Sink { key: key.into(), source })?;
        // Named by a digest of the key: plain characters survive every store's key encoding.
        let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())[..12]);
        let marker = format!("{}/{digest}.json", marker_prefix(date));
        let body = serde_json::to_vec(&Marker { key: key.to_string(), upload_id: id.clone() })
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Err(e) = handle.block_on(sink.put(&marker, Bytes::from(body))) {
            let _ = handle.block_on(store.abort_multipart(&path, &id));
            return Err(e);
        }
        Ok(RecordedUpload {
            store,
            path,
            id,
            marker,
            buffer: Vec::new(),
            chunk,
            next_index: 0,
            sent: Vec::new(),
            in_flight: JoinSet::new(),
        })
    }

    /// Buffers `bytes`, sending each chunk as it fills. A chunk's buffer is allocated at its
    /// size once (growing by doubling would reserve 8 MiB for a 5 MiB chunk).
    pub(super) fn write(&mut self, handle: &Handle, mut bytes: &[u8]) -> object_store::Result<()> {
        while !bytes.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer.reserve_exact(self.chunk);
            }
            let take = bytes.len().min(self.chunk - self.buffer.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == self.chunk {
                let full = std::mem::take(&mut self.buffer);
                self.send(handle, full)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, handle: &Handle, data: Vec<u8>) -> object_store::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.collect_one(handle)?;
        }
        let (store, path, id, index) = (self.store.clone(), self.path.clone(), self.id.clone(), self.next_index);
        self.next_index += 1;
        self.in_flight.spawn_on(
            async move {
                let part = store.put_part(&path, &id, index, PutPayload::from(Bytes::from(data))).await?;
                Ok((index, part))
            },
            handle,
        );
        Ok(())
    }

    fn collect_one(&mut self, handle: &Handle) -> object_store::Result<()> {
        if let Some(done) = handle.block_on(self.in_flight.join_next()) {
            let part = done.map_err(|e| object_store::Error::Generic { store: "upload", source: Box::new(e) })??;
            self.sent.push(part);
        }
        Ok(())
    }

    /// Uploads the rest, completes the upload and removes its marker.
    pub(super) fn finish(mut self, handle: &Handle, sink: &Sink) -> Result<()> {
        let key = self.marker.clone();
        let failed = |source| Error::Sink { key: key.clone(), source };
        if !self.buffer.is_empty() || self.next_index == 0 {
            let rest = std::mem::take(&mut self.buffer);
            self.send(handle, rest).map_err(failed)?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one(handle).map_err(failed)?;
        }
        self.sent.sort_by_key(|(index, _)| *index);
        let parts: Vec<PartId> = self.sent.drain(..).map(|(_, p)| p).collect();
        handle.block_on(self.store.complete_multipart(&self.path, &self.id, parts)).map_err(failed)?;
        handle.block_on(sink.delete(&self.marker))
    }

    /// Aborts the upload and removes its marker (the marker stays if the abort fails, so
    /// that the next run tries again).
    pub(super) async fn abort(mut self, sink: &Sink) -> Result<()> {
        self.in_flight.abort_all();
        let key = self.marker.clone();
        self.store.abort_multipart(&self.path, &self.id).await.map_err(|source| Error::Sink { key, source })?;
        sink.delete(&self.marker).await
    }
}

/// Aborts the uploads that a killed run of `date` started and never completed, and removes
/// their markers. Returns how many were aborted.
pub async fn abort_leftovers(sink: &Sink, date: &str) -> Result<usize> {
    let Some(store) = sink.multipart.clone() else {
        return Ok(0);
    };
    let mut aborted = 0;
    for (marker, _) in sink.list(&marker_prefix(date)).await? {
        let Some(body) = sink.get(&marker).await? else { continue };
        let Ok(m) = serde_json::from_slice::<Marker>(&body) else {
            tracing::warn!(key = %marker, "Removing an unreadable upload marker.");
            sink.delete(&marker).await?;
            continue;
        };
        match store.abort_multipart(&sink.path(&m.key), &m.upload_id).await {
            Ok(()) => aborted += 1,
            // Completed or already aborted: nothing is pending.
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(key = %m.key, error = %e, "Could not abort an upload of an earlier run; its marker is kept for the next run.");
                continue;
            }
        }
        sink.delete(&marker).await?;
        tracing::info!(key = %m.key, "Aborted an upload a killed run left open.");
    }
    Ok(aborted)
}
