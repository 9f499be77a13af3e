//! The local spool: where an authenticated webhook request is made durable before the sender
//! is told it arrived.
//!
//! Each request is one file, written under a temporary name, fsync'd, renamed to its final
//! name and the folder fsync'd: once [`Spool::accept`] returns, a SIGKILL or a power cut
//! cannot lose it, and a file is either whole under its final name or not there at all. A
//! restart finds every accepted request still pending and drains it; temporary files a
//! killed listener left are removed, since their requests were never acknowledged (the sender
//! retries them). Past the size limit the spool refuses new requests, so that the sender
//! retries later instead of the listener's disk or memory filling.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A spool folder and what it holds.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limit_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    used_bytes: u64,
    next_seq: u64,
}

/// One accepted request, as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    /// Its place in the order requests were accepted.
    pub seq: u64,
    /// `hubspot` or `pipedrive`.
    pub source: String,
    pub received_at_ms: i64,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool holds {used} bytes, its limit is {limit}: try again once it has drained")]
    Full { used: u64, limit: u64 },
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl From<SpoolError> for crate::error::Error {
    fn from(e: SpoolError) -> crate::error::Error {
        match e {
            SpoolError::Io { path, source } => crate::error::Error::io(format!("spool {}", path.display()), source),
            full @ SpoolError::Full { .. } => crate::error::Error::Config(full.to_string()),
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

const SUFFIX: &str = ".req";
const TEMPORARY: &str = ".tmp";

impl Spool {
    /// Opens (or creates) the spool in `dir`, removing what a killed listener left half
    /// written and counting what is pending.
    pub fn open(dir: &Path, limit_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut used_bytes = 0;
        // Sequence numbers name journal parts too, which must sort in the order they were
        // written across restarts, also after the spool emptied: never below the clock.
        let mut next_seq = chrono::Utc::now().timestamp_micros().max(0) as u64;
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(TEMPORARY) {
                fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
            } else if let Some(seq) = sequence(&name) {
                used_bytes += entry.metadata().map_err(io_at(&entry.path()))?.len();
                next_seq = next_seq.max(seq + 1);
            }
        }
        Ok(Spool { dir: dir.to_path_buf(), limit_bytes, state: Mutex::new(State { used_bytes, next_seq }) })
    }

    /// Makes a request durable; returns its file. Blocking (fsync): call it off the async
    /// runtime's workers.
    pub fn accept(&self, source: &str, received_at_ms: i64, body: &[u8]) -> Result<PathBuf, SpoolError> {
        let header = serde_json::json!({"source": source, "received_at_ms": received_at_ms}).to_string();
        let size = (header.len() + 1 + body.len()) as u64;
        let seq = {
            let mut state = self.state.lock().expect("spool lock");
            if state.used_bytes + size > self.limit_bytes {
                return Err(SpoolError::Full { used: state.used_bytes, limit: self.limit_bytes });
            }
            state.used_bytes += size;
            state.next_seq += 1;
            state.next_seq - 1
        };
        let name = format!("{seq:020}-{source}{SUFFIX}");
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!("{name}{TEMPORARY}"));
        if let Err(e) = write_durably(&path, &[header.as_bytes(), b"\n", body]) {
            // Not acknowledged: nothing of it may stay (the sender sends it again).
            let _ = fs::remove_file(&temporary);
            let _ = fs::remove_file(&path);
            self.state.lock().expect("spool lock").used_bytes -= size;
            return Err(SpoolError::Io { path, source: e });
        }
        Ok(path)
    }

    /// The pending requests' files, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let mut found: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .map_err(io_at(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| sequence(&e.file_name().to_string_lossy()).map(|seq| (seq, e.path())))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// Reads a pending request back.
    pub fn read(&self, path: &Path) -> Result<Entry, SpoolError> {
        let bytes = fs::read(path).map_err(io_at(path))?;
        let bad = || SpoolError::Io { path: path.to_path_buf(), source: io::Error::other("not a spool entry") };
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[..newline]).map_err(|_| bad())?;
        Ok(Entry {
            path: path.to_path_buf(),
            seq: path.file_name().and_then(|n| sequence(&n.to_string_lossy())).ok_or_else(bad)?,
            source: header["source"].as_str().ok_or_else(bad)?.to_string(),
            received_at_ms: header["received_at_ms"].as_i64().ok_or_else(bad)?,
            body: bytes[newline + 1..].to_vec(),
        })
    }

    /// Forgets a request once what it holds is committed in the destination.
    pub fn remove(&self, path: &Path) -> Result<(), SpoolError> {
        let size = fs::metadata(path).map_err(io_at(path))?.len();
        fs::remove_file(path).map_err(io_at(path))?;
        let mut state = self.state.lock().expect("spool lock");
        state.used_bytes = state.used_bytes.saturating_sub(size);
        Ok(())
    }

    /// The size limit.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Bytes the pending requests take.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().expect("spool lock").used_bytes
    }
}

/// Writes `path` so that a crash leaves either all of `chunks` there or nothing: under a
/// temporary name, fsync'd, renamed, and the folder fsync'd. A failed write leaves its
/// temporary file, which [`Spool::open`] removes.
pub fn write_durably(path: &Path, chunks: &[&[u8]]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("no folder"))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(TEMPORARY);
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    File::open(dir)?.sync_all()
}

/// The sequence number of a spool file's name, if it is one.
fn sequence(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    stem.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_requests_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let bodies: Vec<Vec<u8>> = (0..12).map(|i| format!("[{{\"eventId\":{i}}}]\n\u{e9}").into_bytes()).collect();
        for (i, body) in bodies.iter().enumerate() {
            spool.accept(if i % 2 == 0 { "hubspot" } else { "pipedrive" }, 1000 + i as i64, body).unwrap();
        }
        // A listener killed while writing leaves a temporary file: never acknowledged, dropped.
        fs::write(dir.path().join("00000000000000000099-hubspot.req.tmp"), b"half").unwrap();
        let used = spool.used_bytes();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.used_bytes(), used);
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 12);
        let read: Vec<Entry> = pending.iter().map(|p| spool.read(p).unwrap()).collect();
        assert_eq!(read.iter().map(|e| e.body.clone()).collect::<Vec<_>>(), bodies);
        assert_eq!(read[1].source, "pipedrive");
        assert_eq!(read[11].received_at_ms, 1011);
        assert!(!dir.path().join("00000000000000000099-hubspot.req.tmp").exists());
        // New requests come after the old ones.
        let next = spool.accept("hubspot", 2000, b"[]").unwrap();
        assert_eq!(spool.pending().unwrap().last(), Some(&next));
        for p in spool.pending().unwrap() {
            spool.remove(&p).unwrap();
        }
        assert_eq!(spool.used_bytes(), 0);
        assert!(spool.pending().unwrap().is_empty());
    }

    #[test]
    fn a_full_spool_refuses_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 300).unwrap();
        let body = vec![b'x'; 100];
        let first = spool.accept("hubspot", 1, &body).unwrap();
        spool.accept("hubspot", 2, &body).unwrap();
        assert!(matches!(spool.accept("hubspot", 3, &body), Err(SpoolError::Full { limit: 300, .. })));
        assert_eq!(spool.pending().unwrap().len(), 2, "a refused request is not kept");
        spool.remove(&first).unwrap();
        spool.accept("hubspot", 3, &body).unwrap();
    }
}
