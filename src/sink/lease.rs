//! One writer per destination and account at a time: a lease taken before anything is
//! written, held for the whole run, and checked right before each commit.
//!
//! On a cloud store the lease is an object, `_crmdump/lease-<name>.json`, created only if it is
//! absent (`PutMode::Create`: S3's `If-None-Match`, GCS's and Azure's preconditions) and
//! renewed by replacing it only if it is still the version this holder wrote (`PutMode::Update`
//! on its ETag or generation). A waiter judges a lease stale by its own clock alone: the
//! lease's version has not changed for the stale interval it watched, whatever time any other
//! host wrote into it, so clock skew cannot matter. The interval (at least 3 minutes by
//! default) exceeds the store's whole retry budget, and a holder that has not renewed for half
//! of it stops. Before the manifest and before the state, the holder renews once more: a
//! successful renewal proves it still holds the lease, and nobody may take it over for a whole
//! stale interval after it, more than the commit's writes can take. So a run that lost its
//! lease (paused past the stale limit, then resumed) can neither commit nor move watermarks.
//!
//! On a local folder the lease is an exclusive file lock (`flock`) on `_crmdump/lease-<name>.lock`,
//! held by the process and released by the kernel when it ends, however it ends; the file also
//! names the holder for whoever waits. On NFS v4, Linux takes such locks on the server, which
//! keeps them for a client that vanished until its own lease (90 s by default) runs out; older
//! NFS versions and some network file systems do not lock at all, so give such destinations one
//! writer by other means.

use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::UpdateVersion;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Sink;
use crate::error::{Error, Result};

/// A lease whose version did not change for this long is stale (by the waiter's clock).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(180);

/// Where the leases live.
const FOLDER: &str = "_crmdump";

/// How a run takes and keeps its lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// A lease not renewed for this long is stale and may be taken over.
    pub stale_after: Duration,
    /// Wait this long for a live holder to finish (or its lease to go stale); `None` refuses
    /// at once.
    pub wait: Option<Duration>,
    /// Run on a store that ignores conditional writes, without a lease (the user accepts that
    /// two runs at once may corrupt the export).
    pub unconditional: bool,
}

impl Default for LeaseOptions {
    fn default() -> LeaseOptions {
        LeaseOptions { stale_after: DEFAULT_STALE_AFTER, wait: None, unconditional: false }
    }
}

/// Who holds a lease, as the lease says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// Unique to the run.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// What the holder runs (`export`, `backfill`, `listen`).
    pub command: String,
    pub started_at: String,
    /// When the holder last renewed, by its own clock (shown to people, never compared).
    pub renewed_at: String,
}

impl Holder {
    fn this_process(command: &str) -> Holder {
        let now = crate::schema::iso(chrono::Utc::now());
        Holder {
            holder: format!("{:x}-{:x}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)),
            host: host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            started_at: now.clone(),
            renewed_at: now,
        }
    }

    /// `crmdump export (pid 123 on host h, started ..., last renewed ...)`.
    pub fn describe(&self) -> String {
        format!(
            "crmdump {} (pid {} on host {}, started {}, last renewed {})",
            self.command, self.pid, self.host, self.started_at, self.renewed_at
        )
    }

    fn bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).expect("a holder serializes"))
    }

    /// A holder on this host whose process is gone: its lease is dead now, without waiting.
    fn is_dead_here(&self) -> bool {
        self.host == host_name() && !process_alive(self.pid)
    }
}

/// This machine's name, as leases record it.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether process `pid` of this host runs (Linux: it has a `/proc` entry; elsewhere always
/// assumed, which only makes a waiter wait for staleness).
pub(crate) fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { std::path::Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// The key of the lease `name` (`hubspot-123`, `listen`).
pub fn key(name: &str) -> String {
    format!("{FOLDER}/lease-{name}.json")
}

fn lock_path(folder: &std::path::Path, name: &str) -> std::path::PathBuf {
    folder.join(FOLDER).join(format!("lease-{name}.lock"))
}

/// A held lease: renewed in the background until released; [`Lease::fence`] before a commit.
pub struct Lease {
    dest: String,
    held: Arc<tokio::sync::Mutex<Held>>,
    lost: CancellationToken,
    renewer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({}, lost: {})", self.dest, self.lost.is_cancelled())
    }
}

enum Held {
    /// The kernel's lock on the local lease file, held while the file is open (never read:
    /// holding it is the point).
    Local(#[allow(dead_code)] std::fs::File),
    Store(Box<StoreLease>),
    /// No lease (a store without conditional writes, accepted).
    Unconditional,
}

struct StoreLease {
    sink: Sink,
    key: String,
    holder: Holder,
    version: UpdateVersion,
    renewed: Instant,
    stale_after: Duration,
}

impl StoreLease {
    /// Replaces the lease if it is still ours; `Err(LeaseLost)` when it is not.
    async fn renew(&mut self, dest: &str) -> Result<()> {
        self.holder.renewed_at = crate::schema::iso(chrono::Utc::now());
        match self.sink.update(&self.key, self.holder.bytes(), &self.version).await? {
            Some(version) => {
                self.version = version;
                self.renewed = Instant::now();
                Ok(())
            }
            None => Err(Error::LeaseLost {
                dest: dest.to_string(),
                why: "another run took it over, or it was broken by hand".into(),
            }),
        }
    }
}

impl Lease {
    /// Takes the lease `name` of `sink` for `command`, waiting as `options` say; refuses with
    /// [`Error::LeaseHeld`] naming the holder.
    pub async fn acquire(sink: &Sink, name: &str, command: &str, options: &LeaseOptions) -> Result<Lease> {
        let dest = sink.display().to_string();
        let holder = Holder::this_process(command);
        let deadline = options.wait.map(|w| Instant::now() + w);
        let held = if let Some(folder) = sink.local_folder() {
            Held::Local(lock_local(folder, name, &holder, &dest, deadline).await?)
        } else if !sink.probe_conditional_writes().await? {
            if !options.unconditional {
                return Err(Error::Destination {
                    dest,
                    detail: "the store ignores conditional writes (a second create of one object succeeded): two runs \
                             at once could not be kept apart and might corrupt the export. Use a store that honours \
                             If-None-Match and If-Match (AWS S3, GCS, Azure, MinIO, R2), or accept the risk with \
                             --accept-unconditional-writes and make sure one run at a time writes here"
                        .into(),
                });
            }
            tracing::warn!(dest = %dest, "The store ignores conditional writes: running without a lease, as --accept-unconditional-writes asks.");
            Held::Unconditional
        } else {
            Held::Store(Box::new(take_store(sink, &key(name), holder, &dest, options, deadline).await?))
        };
        let held = Arc::new(tokio::sync::Mutex::new(held));
        let lost = CancellationToken::new();
        let renewer = match &*held.lock().await {
            Held::Store(_) => {
                Some(tokio::spawn(renew_loop(held.clone(), lost.clone(), dest.clone(), options.stale_after)))
            }
            _ => None,
        };
        tracing::info!(dest = %dest, lease = name, "Lease taken.");
        // Holding it, clear what killed runs left mid-probe (verify would report it); a
        // failure here only leaves them for the next run.
        if let Err(e) = sink.remove_dead_probes().await {
            tracing::warn!(error = %e, "Could not remove the probes of killed runs; verify will list them.");
        }
        Ok(Lease { dest, held, lost, renewer: std::sync::Mutex::new(renewer) })
    }

    /// Proves the lease is still this run's, right before a commit (the manifest, the state):
    /// on a store, by renewing it, after which nobody may take it over for a whole stale
    /// interval.
    pub async fn fence(&self) -> Result<()> {
        if self.lost.is_cancelled() {
            return Err(self.lost_error("it could not be renewed in time"));
        }
        match &mut *self.held.lock().await {
            // Lost only when another holder has it: a store that does not answer fails this
            // write (the caller tries again later) and the renewer's deadline still applies.
            Held::Store(lease) => lease.renew(&self.dest).await.inspect_err(|e| {
                if matches!(e, Error::LeaseLost { .. }) {
                    self.lost.cancel();
                }
            }),
            Held::Local(_) | Held::Unconditional => Ok(()),
        }
    }

    /// Cancelled when the lease is lost: the run must stop without committing.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The error of a run that lost its lease.
    pub fn lost_error(&self, why: &str) -> Error {
        Error::LeaseLost { dest: self.dest.clone(), why: why.to_string() }
    }

    fn stop_renewing(&self) {
        if let Some(renewer) = self.renewer.lock().expect("no panic while holding the lock").take() {
            renewer.abort();
        }
    }

    /// Gives the lease back (removes the object; a lost lease is left to its new holder).
    pub async fn release(&self) {
        self.stop_renewing();
        let held = std::mem::replace(&mut *self.held.lock().await, Held::Unconditional);
        if let Held::Store(lease) = held
            && !self.lost.is_cancelled()
            && let Err(e) = lease.sink.delete(&lease.key).await
        {
            tracing::warn!(error = %e, "Could not remove the lease; the next run takes it over once it is stale.");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// Renews every sixth of the stale interval; gives up (the lease is lost) when the lease was
/// taken over, or when no renewal succeeded for half of the interval.
async fn renew_loop(held: Arc<tokio::sync::Mutex<Held>>, lost: CancellationToken, dest: String, stale_after: Duration) {
    let every = (stale_after / 6).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let mut guard = held.lock().await;
        let Held::Store(lease) = &mut *guard else { return };
        match lease.renew(&dest).await {
            Ok(()) => {}
            Err(e @ Error::LeaseLost { .. }) => {
                tracing::error!(error = %e, "The lease was lost; stopping without committing.");
                lost.cancel();
                return;
            }
            Err(e) if lease.renewed.elapsed() >= lease.stale_after / 2 => {
                tracing::error!(error = %e, "The lease could not be renewed for half its stale interval; stopping without committing.");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "Could not renew the lease; trying again."),
        }
    }
}

/// How often a waiter looks at a held lease.
fn poll_every(stale_after: Duration) -> Duration {
    (stale_after / 12).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Creates the lease object, or takes over one that is stale; waits while it is live.
async fn take_store(
    sink: &Sink,
    key: &str,
    holder: Holder,
    dest: &str,
    options: &LeaseOptions,
    deadline: Option<Instant>,
) -> Result<StoreLease> {
    let lease = |version| StoreLease {
        sink: sink.clone(),
        key: key.to_string(),
        holder: holder.clone(),
        version,
        renewed: Instant::now(),
        stale_after: options.stale_after,
    };
    // The version seen, and since when (by this clock).
    let mut watched: Option<(UpdateVersion, Instant)> = None;
    loop {
        if let Some(version) = sink.create(key, holder.bytes()).await? {
            return Ok(lease(version));
        }
        let Some((bytes, version)) = sink.get_versioned(key).await? else { continue };
        let other: Option<Holder> = serde_json::from_slice(&bytes).ok();
        let since = match &watched {
            Some((seen, since)) if *seen == version => *since,
            _ => Instant::now(),
        };
        watched = Some((version.clone(), since));
        let dead = other.as_ref().is_some_and(Holder::is_dead_here);
        if dead || since.elapsed() >= options.stale_after {
            let whose = other.as_ref().map_or_else(|| "an unreadable lease".into(), Holder::describe);
            if let Some(version) = sink.update(key, holder.bytes(), &version).await? {
                tracing::warn!(dest = %dest, previous = %whose, "Took over a stale lease.");
                return Ok(lease(version));
            }
            continue;
        }
        wait_or_refuse(dest, other.as_ref(), deadline, options.stale_after).await?;
    }
}

/// Waits a poll interval when the deadline allows, or refuses naming the holder.
async fn wait_or_refuse(dest: &str, holder: Option<&Holder>, deadline: Option<Instant>, stale: Duration) -> Result<()> {
    let holder = holder.map_or_else(|| "a lease crmdump cannot read".into(), Holder::describe);
    match deadline {
        Some(d) if Instant::now() < d => {
            tracing::info!(dest = %dest, holder = %holder, "Waiting for the lease.");
            tokio::time::sleep(poll_every(stale)).await;
            Ok(())
        }
        _ => Err(Error::LeaseHeld { dest: dest.to_string(), holder }),
    }
}

/// Locks the local lease file, waiting while another process holds it.
async fn lock_local(
    folder: &std::path::Path,
    name: &str,
    holder: &Holder,
    dest: &str,
    deadline: Option<Instant>,
) -> Result<std::fs::File> {
    let path = lock_path(folder, name);
    let io = |what: &str, e| Error::io(format!("{what} the lease file {}", path.display()), e);
    std::fs::create_dir_all(path.parent().expect("in a folder")).map_err(|e| io("creating the folder of", e))?;
    loop {
        // Never removed: a waiter holding the old file open would otherwise lock a file that
        // no longer is the lease, beside a new holder of a new one.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(|e| io("writing", e))?;
                file.write_all(&holder.bytes()).map_err(|e| io("writing", e))?;
                return Ok(file);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
                let other: Option<Holder> = serde_json::from_str(&text).ok();
                drop(file);
                wait_or_refuse(dest, other.as_ref(), deadline, DEFAULT_STALE_AFTER).await?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
    }
}

/// A lease as `verify`, `status` and `lease list` show it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `hubspot-123`, `listen`.
    pub name: String,
    pub holder: Option<Holder>,
    /// Whether a live process holds it: known for a local lock; `None` on a store, where only
    /// watching the version for a stale interval can tell.
    pub held: Option<bool>,
    /// Since the lease object was last written, by the store's clock against this one.
    pub age: Option<chrono::Duration>,
}

/// Every lease of `sink`.
pub async fn list(sink: &Sink) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    if let Some(folder) = sink.local_folder() {
        let dir = folder.join(FOLDER);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(seen) };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file_name.strip_prefix("lease-").and_then(|n| n.strip_suffix(".lock")) else { continue };
            let held = is_held(sink, name).await?;
            let holder = std::fs::read(entry.path()).ok().and_then(|b| serde_json::from_slice(&b).ok());
            seen.push(Seen { name: name.to_string(), holder, held: Some(held), age: None });
        }
    } else {
        for listed in sink.list_after(FOLDER, None).await? {
            let Some(name) = listed.key.strip_prefix(&format!("{FOLDER}/lease-")).and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let holder = sink.get(&listed.key).await?.and_then(|b| serde_json::from_slice(&b).ok());
            let age = Some(chrono::Utc::now() - listed.modified);
            seen.push(Seen { name: name.to_string(), holder, held: None, age });
        }
    }
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seen)
}

/// Whether a run holds the lease `name`: a live lock on a local folder; on a store, a lease
/// object whose holder is not known dead (only watching its version could say it is stale).
pub async fn is_held(sink: &Sink, name: &str) -> Result<bool> {
    if let Some(folder) = sink.local_folder() {
        let Ok(file) = std::fs::File::open(lock_path(folder, name)) else { return Ok(false) };
        return Ok(matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
    }
    let holder: Option<Option<Holder>> = sink.get(&key(name)).await?.map(|b| serde_json::from_slice(&b).ok());
    Ok(match holder {
        None => false,
        Some(Some(h)) => !h.is_dead_here(),
        Some(None) => true,
    })
}

/// Removes the lease `name` by hand (`crmdump lease break`): its holder, when there was one.
/// A local lock held by a live process cannot be broken: stop that process.
pub async fn break_lease(sink: &Sink, name: &str) -> Result<Option<Holder>> {
    if let Some(folder) = sink.local_folder() {
        let path = lock_path(folder, name);
        let Ok(file) = std::fs::File::open(&path) else { return Ok(None) };
        let holder: Option<Holder> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
            return Err(Error::LeaseHeld {
                dest: sink.display().to_string(),
                holder: format!(
                    "{} holds its lock; a local lock ends with its process: stop that process instead",
                    holder.as_ref().map_or_else(|| "a process".into(), Holder::describe)
                ),
            });
        }
        return Ok(holder);
    }
    let key = key(name);
    let holder = sink.get(&key).await?.and_then(|b| serde_json::from_slice(&b).ok());
    sink.delete(&key).await?;
    Ok(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(stale_ms: u64, wait_ms: Option<u64>) -> LeaseOptions {
        LeaseOptions {
            stale_after: Duration::from_millis(stale_ms),
            wait: wait_ms.map(Duration::from_millis),
            unconditional: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_refuses_a_second_holder_and_a_stale_one_is_taken_over() {
        let sink = Sink::open("memory://").unwrap();
        let first = Lease::acquire(&sink, "hubspot-1", "export", &options(60_000, None)).await.unwrap();
        let refused = Lease::acquire(&sink, "hubspot-1", "export", &options(60_000, None)).await.err().unwrap();
        assert_eq!(refused.class().exit_code(), 75);
        assert!(refused.to_string().contains("crmdump export (pid"), "{refused}");
        // Another account's lease is another lease.
        let other = Lease::acquire(&sink, "hubspot-2", "export", &options(60_000, None)).await.unwrap();
        other.release().await;
        // The first holder stops renewing (as a paused process would): after the stale
        // interval a waiter takes the lease over, and the first can no longer commit.
        first.stop_renewing();
        // On this host with a live pid the holder is not dead: only staleness lets a waiter in.
        let second = Lease::acquire(&sink, "hubspot-1", "export", &options(300, Some(5_000))).await.unwrap();
        assert!(matches!(first.fence().await, Err(Error::LeaseLost { .. })));
        second.fence().await.unwrap();
        second.release().await;
        assert!(sink.get(&key("hubspot-1")).await.unwrap().is_none(), "released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_lease_is_a_lock_the_kernel_keeps_for_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path().to_str().unwrap()).unwrap();
        let first = Lease::acquire(&sink, "listen", "listen", &LeaseOptions::default()).await.unwrap();
        // Within one process a second open file cannot take the lock either.
        let refused = Lease::acquire(&sink, "listen", "listen", &LeaseOptions::default()).await.err().unwrap();
        assert!(refused.to_string().contains("crmdump listen"), "{refused}");
        let seen = list(&sink).await.unwrap();
        assert_eq!((seen.len(), seen[0].held), (1, Some(true)));
        assert!(break_lease(&sink, "listen").await.is_err(), "a held lock cannot be broken");
        first.release().await;
        let again = Lease::acquire(&sink, "listen", "listen", &LeaseOptions::default()).await.unwrap();
        again.fence().await.unwrap();
    }
}
