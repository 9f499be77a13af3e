//! The one place that writes: an object_store-backed destination (local folder, S3, memory)
//! and the commit protocol of a day folder ([`commit::DayCommit`]: old manifest withdrawn
//! first, parts written, stale parts removed, manifest written last).

pub mod claim;
pub mod commit;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod scan;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::write::PartSink;

/// Bytes buffered per chunk of a local destination's staging file.
const UPLOAD_CHUNK: usize = 5 * 1024 * 1024;

/// Parts of a cloud destination uploaded at once: each is read into memory for its one PUT,
/// so this bounds that memory (two parts of at most `--max-file-size`).
const PUTS_AT_ONCE: usize = 2;

/// How long a cloud destination may keep failing before the export gives up. object_store
/// retries 5xx, timeouts and refused connections; by default for up to three minutes per
/// request. A nightly job should rather fail within a minute and say why: retries stop
/// after [`RETRY_FOR`], and one attempt takes at most [`ATTEMPT_TIMEOUT`], so a vanished
/// destination fails the run within about 55 seconds.
pub const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest single request to a cloud destination: a 15 MiB part in one PUT at 2 Mbit/s.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest wait to abort an upload after a failure (best effort: the next run of the date
/// removes what is left).
const ABORT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The retry settings of every cloud destination, and its timeouts as client config keys
/// (set one by one: replacing the client options would drop those read from the environment,
/// such as `AWS_ALLOW_HTTP`).
fn cloud_settings() -> (object_store::RetryConfig, [(object_store::ClientConfigKey, String); 2]) {
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 10,
        retry_timeout: RETRY_FOR,
    };
    let timeouts = [
        (object_store::ClientConfigKey::ConnectTimeout, "5s".to_string()),
        (object_store::ClientConfigKey::Timeout, format!("{}s", ATTEMPT_TIMEOUT.as_secs())),
    ];
    (retry, timeouts)
}

/// Where [`Sink::probe_writable`] writes (at the root: the folder may not exist yet).
const ROOT_PROBE: &str = "_crmdump_probe-";
/// Where [`Sink::probe_conditional_writes`] writes.
const CONDITIONAL_PROBE: &str = "_crmdump/probe-";

/// A probe key of this process: `<prefix><host>-<pid>-<nanoseconds>.tmp`, so that the next
/// run can tell a killed run's probe from a live one.
fn probe_key(prefix: &str) -> String {
    let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    format!("{prefix}{}-{}-{stamp}.tmp", lease::host_name(), std::process::id())
}

/// The host and process that wrote probe `key` (of [`probe_key`]'s form with `prefix`).
fn probe_writer(key: &str, prefix: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix(prefix)?.strip_suffix(".tmp")?;
    let mut fields = rest.rsplitn(3, '-');
    let (_stamp, pid, host) = (fields.next()?, fields.next()?.parse().ok()?, fields.next()?);
    Some((host.to_string(), pid))
}

fn shared<S: ObjectStore>(store: S) -> Arc<dyn ObjectStore> {
    Arc::new(store)
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Relative to the destination.
    pub key: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// An export destination.
#[derive(Clone)]
pub struct Sink {
    store: Arc<dyn ObjectStore>,
    root: Path,
    display: String,
    /// The folder of a local destination: listed through the file system itself, since
    /// object_store's listing hides its own staging files (`part-00000.csv.gz#1`), which a
    /// killed run leaves behind and which Spark, Athena or Hive would read as data.
    local: Option<std::path::PathBuf>,
    /// A cloud destination's permits for part uploads ([`PUTS_AT_ONCE`]); `None` for a
    /// local or memory destination, whose parts stream into staging files.
    puts: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({})", self.display)
    }
}

impl Sink {
    /// Opens `dest`: a local path, `file://...`, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (credentials from each cloud's usual environment variables) or
    /// `memory://` (for tests).
    pub fn open(dest: &str) -> Result<Sink> {
        Sink::open_with(dest, true)
    }

    /// Opens `dest` to read what is there: a local folder that does not exist is an error,
    /// not created (a mistyped path must not leave an empty folder behind).
    pub fn open_existing(dest: &str) -> Result<Sink> {
        Sink::open_with(dest, false)
    }

    fn open_with(dest: &str, create: bool) -> Result<Sink> {
        let bad = |detail: String| Error::Destination { dest: dest.to_string(), detail };
        let (retry, timeouts) = cloud_settings();
        if let Some(rest) = dest.strip_prefix("memory://") {
            return Ok(Sink {
                store: Arc::new(InMemory::new()),
                root: Path::from(rest),
                display: dest.to_string(),
                local: None,
                puts: None,
            });
        }
        let cloud: Option<std::result::Result<Arc<dyn ObjectStore>, String>> = match dest.split("://").next() {
            Some("s3") => Some(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(dest)
                    .with_retry(retry.clone())
                    .with_config(object_store::aws::AmazonS3ConfigKey::Client(timeouts[0].0), &timeouts[0].1)
                    .with_config(object_store::aws::AmazonS3ConfigKey::Client(timeouts[1].0), &timeouts[1].1)
                    .build()
                    .map(shared)
                    .map_err(|e| format!("{e}; set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS server)")),
            ),
            Some("gs") => Some(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(dest)
                    .with_retry(retry.clone())
                    .with_config(object_store::gcp::GoogleConfigKey::Client(timeouts[0].0), &timeouts[0].1)
                    .with_config(object_store::gcp::GoogleConfigKey::Client(timeouts[1].0), &timeouts[1].1)
                    .build()
                    .map(shared)
                    .map_err(|e| format!("{e}; set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT)")),
            ),
            Some("az" | "abfs" | "abfss") => Some(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(dest)
                    .with_retry(retry.clone())
                    .with_config(object_store::azure::AzureConfigKey::Client(timeouts[0].0), &timeouts[0].1)
                    .with_config(object_store::azure::AzureConfigKey::Client(timeouts[1].0), &timeouts[1].1)
                    .build()
                    .map(shared)
                    .map_err(|e| format!("{e}; set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token)")),
            ),
            _ => None,
        };
        if let Some(store) = cloud {
            let store = store.map_err(bad)?;
            let url = url::Url::parse(dest).map_err(|e| bad(e.to_string()))?;
            return Ok(Sink {
                store,
                root: Path::from(url.path().trim_matches('/')),
                display: dest.to_string(),
                local: None,
                puts: Some(Arc::new(tokio::sync::Semaphore::new(PUTS_AT_ONCE))),
            });
        }
        let local = match dest.strip_prefix("file://") {
            Some(p) => p,
            None if dest.contains("://") => {
                return Err(bad(
                    "unsupported destination scheme: use a local path, file://, s3://, gs:// or az://".into()
                ));
            }
            None => dest,
        };
        if create {
            std::fs::create_dir_all(local).map_err(|e| bad(format!("cannot create the folder: {e}")))?;
        } else if !std::path::Path::new(local).is_dir() {
            return Err(bad("no such folder; check the path".into()));
        }
        let store = LocalFileSystem::new_with_prefix(local).map_err(|e| bad(e.to_string()))?;
        let folder = std::fs::canonicalize(local).map_err(|e| bad(e.to_string()))?;
        Ok(Sink {
            store: Arc::new(store),
            root: Path::default(),
            display: dest.to_string(),
            local: Some(folder),
            puts: None,
        })
    }

    /// Writes and removes a probe object: a missing bucket or denied access fails here, with
    /// what to do, before any extraction work starts. The probe sits at the root, not in a
    /// folder of its own, which a local destination would keep as an empty directory.
    pub async fn probe_writable(&self) -> Result<()> {
        let key = probe_key(ROOT_PROBE);
        let result = async {
            self.put(&key, Bytes::from_static(b"crmdump write probe\n")).await?;
            self.delete(&key).await
        }
        .await;
        result.map_err(|e| Error::Destination {
            dest: self.display.clone(),
            detail: format!(
                "cannot write there ({e}); check that the folder or bucket exists and that the credentials may write to it"
            ),
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn path(&self, key: &str) -> Path {
        let mut p = self.root.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map_err(|source| Error::Sink { key: key.to_string(), source })?;
        Ok(())
    }

    /// Writes `key` only if it does not exist yet: its version, or `None` when it already
    /// exists (another writer was first). A store that ignores the condition overwrites, which
    /// [`Sink::probe_conditional_writes`] finds out.
    pub async fn create(&self, key: &str, bytes: Bytes) -> Result<Option<UpdateVersion>> {
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(&self.path(key), PutPayload::from(bytes), options).await {
            Ok(put) => Ok(Some(put.into())),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(source) => Err(Error::Sink { key: key.to_string(), source }),
        }
    }

    /// Replaces `key` only if it is still at `version`: its new version, or `None` when it
    /// changed or vanished meanwhile. A local folder cannot compare versions, so there the
    /// object is removed and created again (of two writers doing so, one fails the create).
    pub async fn update(&self, key: &str, bytes: Bytes, version: &UpdateVersion) -> Result<Option<UpdateVersion>> {
        if self.local.is_some() {
            match self.get_versioned(key).await? {
                Some((_, current)) if current == *version => {}
                _ => return Ok(None),
            }
            self.delete(key).await?;
            return self.create(key, bytes).await;
        }
        let options = PutOptions { mode: PutMode::Update(version.clone()), ..PutOptions::default() };
        match self.store.put_opts(&self.path(key), PutPayload::from(bytes), options).await {
            Ok(put) => Ok(Some(put.into())),
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Sink { key: key.to_string(), source }),
        }
    }

    /// The object's bytes and version, or `None` when it does not exist.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, UpdateVersion)>> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => {
                let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                let bytes = r.bytes().await.map_err(|source| Error::Sink { key: key.to_string(), source })?;
                Ok(Some((bytes, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Sink { key: key.to_string(), source }),
        }
    }

    /// Whether the store refuses to create an object that exists (`If-None-Match`): some
    /// S3-compatible stores ignore the header, and two runs at once would then both think
    /// they hold the destination. Creates one probe object twice and removes it.
    pub async fn probe_conditional_writes(&self) -> Result<bool> {
        if self.local.is_some() {
            return Ok(true);
        }
        let key = probe_key(CONDITIONAL_PROBE);
        let first = self.create(&key, Bytes::from_static(b"1")).await?;
        let second = self.create(&key, Bytes::from_static(b"2")).await?;
        self.delete(&key).await?;
        Ok(first.is_some() && second.is_none())
    }

    /// Removes the probe objects of runs killed in the middle of a probe (a probe lives for
    /// milliseconds): those a process of this host wrote that is gone, and any older than a
    /// minute, wherever it ran. Returns how many.
    pub async fn remove_dead_probes(&self) -> Result<usize> {
        let now = chrono::Utc::now();
        let root = self.store.list_with_delimiter(Some(&self.root)).await;
        let root = root.map_err(|source| Error::Sink { key: String::new(), source })?.objects;
        let root_parts = self.root.parts().count();
        let mut candidates: Vec<(String, chrono::DateTime<chrono::Utc>)> = root
            .into_iter()
            .map(|m| (m.location.parts().skip(root_parts).map(|p| p.as_ref().to_string()).collect(), m.last_modified))
            .collect();
        candidates.extend(self.list_after("_crmdump", None).await?.into_iter().map(|l| (l.key, l.modified)));
        let mut removed = 0;
        for (key, modified) in candidates {
            let Some(writer) = [ROOT_PROBE, CONDITIONAL_PROBE].iter().find_map(|p| probe_writer(&key, p)) else {
                continue;
            };
            let dead = (writer.0 == lease::host_name() && !lease::process_alive(writer.1))
                || now - modified > chrono::Duration::minutes(1);
            if dead && writer.1 != std::process::id() {
                self.delete(&key).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(dest = %self.display, removed, "Removed the probes of killed runs.");
        }
        Ok(removed)
    }

    /// Whether this is a local folder (leases there are file locks, not objects).
    pub fn local_folder(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|source| Error::Sink { key: key.to_string(), source }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Sink { key: key.to_string(), source }),
        }
    }

    /// Deletes `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Sink { key: key.to_string(), source }),
        }
    }

    /// Keys (relative to the destination) and sizes of every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        Ok(self.list_after(prefix, None).await?.into_iter().map(|o| (o.key, o.size)).collect())
    }

    /// Every object under `prefix` whose key (relative to the destination) sorts after
    /// `offset`, when given: a reader that knows where it stopped lists only what follows.
    pub async fn list_after(&self, prefix: &str, offset: Option<&str>) -> Result<Vec<Listed>> {
        let base = self.path(prefix);
        let root_parts = self.root.parts().count();
        let listing = match offset {
            Some(offset) => self.store.list_with_offset(Some(&base), &self.path(offset)),
            None => self.store.list(Some(&base)),
        };
        let metas: Vec<object_store::ObjectMeta> =
            listing.try_collect().await.map_err(|source| Error::Sink { key: prefix.to_string(), source })?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let key: Vec<String> = m.location.parts().skip(root_parts).map(|p| p.as_ref().to_string()).collect();
                Listed { key: key.join("/"), size: m.size, modified: m.last_modified }
            })
            .collect())
    }

    /// The names of the folders directly under `prefix` (one listing level, not every object).
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.path(prefix);
        let listed = self
            .store
            .list_with_delimiter(Some(&base))
            .await
            .map_err(|source| Error::Sink { key: prefix.to_string(), source })?;
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// Keys of every file under `prefix`: for a local destination as the file system shows
    /// them (staging files included), elsewhere as the store lists its objects.
    pub async fn files_under(&self, prefix: &str) -> Result<Vec<String>> {
        let Some(folder) = &self.local else {
            return Ok(self.list(prefix).await?.into_iter().map(|(k, _)| k).collect());
        };
        let mut keys = Vec::new();
        let mut pending = vec![(folder.join(prefix), prefix.trim_matches('/').to_string())];
        while let Some((dir, key)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if key.is_empty() { name } else { format!("{key}/{name}") };
                if entry.file_type().map_err(|e| Error::io("listing", e))?.is_dir() {
                    pending.push((entry.path(), child));
                } else {
                    keys.push(child);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Removes `key`, staging files of a local destination included (object_store would
    /// refuse their names); a missing file is not an error.
    pub async fn remove(&self, key: &str) -> Result<()> {
        let Some(folder) = &self.local else {
            return self.delete(key).await;
        };
        match std::fs::remove_file(folder.join(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {key}"), e)),
        }
    }

    /// Removes the folders under `prefix` that hold no file (a local destination's; object
    /// stores have no folders).
    pub fn remove_empty_folders(&self, prefix: &str) -> Result<()> {
        fn prune(dir: &std::path::Path) -> std::io::Result<bool> {
            let mut empty = true;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() && prune(&entry.path())? {
                    std::fs::remove_dir(entry.path())?;
                } else {
                    empty = false;
                }
            }
            Ok(empty)
        }
        let Some(folder) = &self.local else { return Ok(()) };
        let dir = folder.join(prefix);
        match prune(&dir) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing empty folders under {}", dir.display()), e)),
        }
    }

    /// Keys of every file of `date` under this layout (whatever the manifest says), staging
    /// files of a killed run included.
    pub async fn parts_of(&self, layout: layout::Layout, date: &str) -> Result<Vec<String>> {
        let keys: Vec<String> = match layout {
            layout::Layout::Daily => self.files_under(date).await?,
            layout::Layout::Hive => {
                // One listing per table folder, not of the whole destination (every day).
                let root = self.root.clone();
                let listed = self
                    .store
                    .list_with_delimiter(if root.parts().count() == 0 { None } else { Some(&root) })
                    .await
                    .map_err(|source| Error::Sink { key: String::new(), source })?;
                let root_parts = self.root.parts().count();
                let mut keys = Vec::new();
                for dir in listed.common_prefixes {
                    let table: Vec<String> = dir.parts().skip(root_parts).map(|p| p.as_ref().to_string()).collect();
                    let table = table.join("/");
                    if table.starts_with('_') {
                        continue;
                    }
                    keys.extend(self.files_under(&format!("{table}/dt={date}")).await?);
                }
                keys
            }
        };
        Ok(keys.into_iter().filter(|k| layout.holds_part_of(k, date)).collect())
    }

    /// A [`PartSink`] writing `<dir>/<table>/part-NNNNN.<ext>`, for use on a blocking
    /// thread of the tokio runtime (the encoders are synchronous and CPU-bound).
    /// `written` counts the bytes as they go out (for progress).
    /// Parts go to `<base>/<table_dir>/part-NNNNN.<ext>`; receipts name them relative to `base`.
    pub fn part_sink(&self, base: &str, table_dir: &str, ext: &'static str, written: Arc<AtomicU64>) -> ObjectPartSink {
        ObjectPartSink {
            written,
            sink: self.clone(),
            dir: base.to_string(),
            table: table_dir.to_string(),
            ext,
            handle: Handle::current(),
            upload: None,
            key: String::new(),
        }
    }
}

/// A part being written: streamed through object_store's writer into a staging file that a
/// rename publishes (local and memory destinations), or spooled to a temporary file and sent
/// with one PUT when it is complete (cloud destinations). A PUT is atomic and leaves nothing
/// behind when it fails or the process dies, where a multipart upload left open is billed
/// until someone aborts it, and object_store can neither list nor find it again.
enum Upload {
    Streamed(WriteMultipart),
    Spooled(std::fs::File),
}

/// Writes one part at a time to the destination, never holding a part whole in memory while
/// it is written.
pub struct ObjectPartSink {
    sink: Sink,
    dir: String,
    table: String,
    ext: &'static str,
    handle: Handle,
    upload: Option<Upload>,
    key: String,
    written: Arc<AtomicU64>,
}

impl ObjectPartSink {
    fn sink_error(&self, source: object_store::Error) -> Error {
        Error::Sink { key: self.key.clone(), source }
    }

    /// Sends the spooled part with one PUT, at most [`PUTS_AT_ONCE`] at a time.
    fn put_spooled(&self, mut file: std::fs::File) -> Result<()> {
        use std::io::{Read, Seek};
        let spool_error = |e| Error::io(format!("reading the spooled part of {}", self.key), e);
        let size = file.seek(std::io::SeekFrom::End(0)).map_err(spool_error)?;
        file.rewind().map_err(spool_error)?;
        let puts = self.sink.puts.clone().expect("a cloud destination");
        let (store, path) = (self.sink.store.clone(), self.sink.path(&self.key));
        self.handle.block_on(async {
            let _permit = puts.acquire_owned().await.map_err(|_| Error::Cancelled)?;
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body).map_err(spool_error)?;
            store.put(&path, PutPayload::from(Bytes::from(body))).await.map_err(|e| self.sink_error(e))?;
            Ok(())
        })
    }
}

impl PartSink for ObjectPartSink {
    fn begin_part(&mut self, index: usize) -> Result<String> {
        let relative = format!("{}/part-{index:05}.{}", self.table, self.ext);
        self.key = layout::Layout::join(&self.dir, &relative);
        let upload = if self.sink.puts.is_some() {
            // Unnamed: the system removes it when it is closed, whatever ends the process.
            let file = tempfile::tempfile().map_err(|e| {
                Error::io(format!("creating a temporary file for {} (set TMPDIR to a disk with room)", self.key), e)
            })?;
            Upload::Spooled(file)
        } else {
            let store = self.sink.store.clone();
            let path = self.sink.path(&self.key);
            let upload = self.handle.block_on(store.put_multipart(&path)).map_err(|e| self.sink_error(e))?;
            Upload::Streamed(WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK))
        };
        self.upload = Some(upload);
        Ok(relative)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match self.upload.as_mut().expect("begin_part came first") {
            Upload::Streamed(upload) => {
                upload.write(bytes);
                let waited = self.handle.block_on(upload.wait_for_capacity(2));
                waited.map_err(|e| self.sink_error(e))
            }
            Upload::Spooled(file) => std::io::Write::write_all(file, bytes).map_err(|e| {
                Error::io(format!("spooling {} to a temporary file (set TMPDIR to a disk with room)", self.key), e)
            }),
        }
    }

    fn finish_part(&mut self) -> Result<()> {
        match self.upload.take().expect("begin_part came first") {
            Upload::Streamed(upload) => {
                self.handle.block_on(upload.finish()).map_err(|e| self.sink_error(e))?;
                Ok(())
            }
            Upload::Spooled(file) => self.put_spooled(file),
        }
    }

    fn abort_part(&mut self) -> Result<()> {
        let Some(upload) = self.upload.take() else {
            return Ok(());
        };
        match upload {
            // Bounded: when the destination is gone, the next run of the date removes the
            // staging file.
            Upload::Streamed(upload) => self
                .handle
                .block_on(tokio::time::timeout(ABORT_WITHIN, async {
                    upload.abort().await.map_err(|e| self.sink_error(e))
                }))
                .unwrap_or_else(|_| Err(Error::Internal(format!("aborting the upload of {} timed out", self.key)))),
            // Nothing was sent: dropping the file is the abort.
            Upload::Spooled(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_of_killed_runs_are_removed_and_live_ones_kept() {
        let sink = Sink::open("memory://root").unwrap();
        let ours = probe_key(CONDITIONAL_PROBE);
        assert_eq!(probe_writer(&ours, CONDITIONAL_PROBE), Some((lease::host_name(), std::process::id())));
        assert_eq!(probe_writer("_crmdump/probe-a-b-1.tmp", CONDITIONAL_PROBE), None, "a pid is a number");
        // A process of this host that is gone (pid 0 never names a user process); one of
        // another host, just written (it may be running there); and this process's own.
        let dead = format!("_crmdump/probe-{}-0-1.tmp", lease::host_name());
        let elsewhere = "_crmdump_probe-other-host-1234-1.tmp".to_string();
        for key in [&dead, &elsewhere, &ours] {
            sink.put(key, Bytes::from_static(b"1")).await.unwrap();
        }
        sink.put("_crmdump/lease-hubspot-1.json", Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(sink.remove_dead_probes().await.unwrap(), 1);
        let left: Vec<String> = sink.list("").await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert!(!left.contains(&dead) && left.contains(&elsewhere) && left.contains(&ours), "{left:?}");
        assert!(left.contains(&"_crmdump/lease-hubspot-1.json".to_string()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_sink_round_trips_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path().to_str().unwrap()).unwrap();
        sink.put("2026-01-01/_manifest.json", Bytes::from_static(b"{}")).await.unwrap();
        let s = sink.clone();
        tokio::task::spawn_blocking(move || {
            let mut parts = s.part_sink("2026-01-01", "T", "csv.gz", Default::default());
            assert_eq!(parts.begin_part(3).unwrap(), "T/part-00003.csv.gz");
            parts.write(b"hello ").unwrap();
            parts.write(b"world").unwrap();
            parts.finish_part().unwrap();
        })
        .await
        .unwrap();
        let mut listed = sink.list("2026-01-01").await.unwrap();
        listed.sort();
        assert_eq!(
            listed,
            vec![("2026-01-01/T/part-00003.csv.gz".to_string(), 11), ("2026-01-01/_manifest.json".to_string(), 2)]
        );
        assert_eq!(std::fs::read(dir.path().join("2026-01-01/T/part-00003.csv.gz")).unwrap(), b"hello world");
        sink.delete("2026-01-01/_manifest.json").await.unwrap();
        sink.delete("2026-01-01/_manifest.json").await.unwrap();
        assert_eq!(sink.get("2026-01-01/_manifest.json").await.unwrap(), None);
    }

    #[test]
    fn unknown_schemes_are_refused_with_what_to_use() {
        let err = Sink::open("ftp://example/x").unwrap_err().to_string();
        assert!(err.contains("s3://"), "{err}");
    }
}
