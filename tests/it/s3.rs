//! Exports to a real S3-compatible server (moto, started by scripts/test on 127.0.0.1),
//! read back with boto3 and pyarrow, verified, and re-run with fewer parts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

pub fn endpoint() -> String {
    std::env::var("CRMDUMP_TEST_S3_ENDPOINT")
        .expect("CRMDUMP_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts a local S3 server")
}

pub fn create_bucket(name: &str) {
    create_bucket_at(&endpoint(), name);
}

pub fn create_bucket_at(endpoint: &str, name: &str) {
    let url = format!("{endpoint}/{name}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async { reqwest::Client::new().put(&url).send().await.unwrap().status() });
    assert!(status.is_success(), "creating bucket {name}: {status}");
}

/// A moto S3 server of a test's own (one it may stop, freeze and resume), logging every
/// request it answers to a file; stopped on drop.
pub struct MotoServer {
    child: std::process::Child,
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let moto = python().parent().unwrap().join("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (run scripts/test): {e}", moto.display()));
        let up = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "moto started");
        MotoServer { child, endpoint: format!("http://127.0.0.1:{port}"), log }
    }

    /// Stops answering (SIGSTOP): connections hang, as with a frozen server.
    pub fn freeze(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn thaw(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The CreateMultipartUpload requests it answered for `bucket` (`POST /<bucket>/<key>?uploads`).
    pub fn multipart_uploads_created(&self, bucket: &str) -> usize {
        let log = std::fs::read_to_string(self.log.path()).unwrap();
        log.lines().filter(|l| l.contains(&format!("\"POST /{bucket}/")) && l.contains("?uploads")).count()
    }

    /// The multipart uploads open in `bucket`, as boto3 lists them (`ListMultipartUploads`).
    pub fn open_multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let script = format!(
            "import boto3, json\n\
             c = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b')\n\
             print(json.dumps([u['UploadId'] for u in c.list_multipart_uploads(Bucket='{bucket}').get('Uploads', [])]))",
            self.endpoint
        );
        let out = Command::new(python()).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
    }
}

/// Distinctive credentials (moto takes any), searched for in everything crmdump writes.
const AWS_KEY_ID: &str = "AKIACRMDUMPTESTKEY01";
const AWS_SECRET: &str = "crmdump-aws-secret-9f8e7d6c5b4a";

pub fn with_aws(cmd: Command) -> Command {
    with_aws_at(cmd, &endpoint())
}

/// `cmd` with the test credentials for the S3 server at `endpoint`.
pub fn with_aws_at(mut cmd: Command, endpoint: &str) -> Command {
    cmd.env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true");
    cmd
}

/// Downloads s3://bucket/prefix with boto3; returns the keys relative to the prefix.
pub fn download(bucket: &str, prefix: &str, dest: &Path) -> BTreeSet<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reader/store_client.py");
    let out = Command::new(python())
        .arg(script)
        .args(["download", "s3", &endpoint(), bucket, prefix])
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "boto3 download failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The keys an export root should hold: the manifest's parts, the manifest, and the state
/// file with the account's watermarks.
/// The keys a committed export leaves: the manifest's files, the manifest, the state file, and
/// the baseline files of ids the state names (read from the download at `root`).
pub(crate) fn manifest_keys(export: &serde_json::Value, root: &Path) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = export["manifest"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["files"].as_array().unwrap().iter().map(|f| format!("{DATE}/{}", f["path"].as_str().unwrap())))
        .collect();
    keys.insert(format!("{DATE}/_manifest.json"));
    let state = format!("_state/hubspot-{}.json", export["manifest"]["account"].as_str().unwrap());
    let named: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join(&state)).unwrap()).unwrap();
    for refs in named["baselines"].as_object().expect("a full export leaves a baseline").values() {
        keys.extend(refs.as_object().unwrap().values().map(|k| k.as_str().unwrap().to_string()));
    }
    keys.insert(state);
    keys
}

fn export_to(url: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = with_aws(crmdump());
    cmd.args(["export", "--source", "sandbox", "--sandbox-scale", "150", "--sandbox-anchor", ANCHOR, "--date", DATE])
        .args(["--dest", url])
        .args(extra);
    run(&mut cmd)
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn parquet_export_to_s3_is_complete_verified_and_readable() {
    create_bucket("crmdump-e2e");
    let url = "s3://crmdump-e2e/exports/hubspot";
    let out = export_to(url, &["--format", "parquet"]);
    assert_success(&out);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains(AWS_SECRET) && !said.contains(AWS_KEY_ID), "AWS credentials leaked into the output");
    let mut verify = with_aws(crmdump());
    let out = run(verify.args(["verify", url]));
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 problems"));

    let local = tempfile::tempdir().unwrap();
    let keys = download("crmdump-e2e", "exports/hubspot", local.path());
    for key in &keys {
        let bytes = std::fs::read(local.path().join(key)).unwrap();
        let leaked = bytes.windows(AWS_SECRET.len()).any(|w| w == AWS_SECRET.as_bytes());
        assert!(!leaked, "{key} holds the AWS secret");
    }
    let export = read_export(&local.path().join(DATE), &["OBJECTS_CONTACTS"]);
    let listed = manifest_keys(&export, local.path());
    assert_eq!(keys, listed, "the bucket holds exactly the manifest's files and the state");
    // DuckDB loads the downloaded copy through the generated DDL.
    for (table, loaded, listed) in crate::ddl::duckdb_counts(local.path()) {
        assert_eq!(loaded, listed, "DuckDB rows of {table}");
    }
    let g = generator(1, 150);
    let columns = export["tables"]["OBJECTS_CONTACTS"]["columns"].as_array().unwrap();
    let id = columns.iter().position(|c| c == "OBJECTID").unwrap();
    let raw = &export["tables"]["OBJECTS_CONTACTS"]["rows"];
    let ids: BTreeSet<i64> = raw.as_array().unwrap().iter().map(|r| r[id].as_i64().unwrap()).collect();
    let want: BTreeSet<i64> = (0..150).map(|i| g.record(0, i).id).collect();
    assert_eq!(ids, want);
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn a_rerun_on_s3_with_fewer_parts_leaves_no_stale_part() {
    create_bucket("crmdump-rerun");
    let url = "s3://crmdump-rerun/x";
    assert_success(&export_to(url, &["--objects", "contacts", "--no-history", "--max-file-size", "64KiB"]));
    let first = download("crmdump-rerun", "x", tempfile::tempdir().unwrap().path());
    assert_success(&export_to(url, &["--objects", "contacts", "--no-history"]));
    let local = tempfile::tempdir().unwrap();
    let second = download("crmdump-rerun", "x", local.path());
    assert!(second.len() < first.len(), "the second run has fewer parts ({} vs {})", second.len(), first.len());
    let export = read_export(&local.path().join(DATE), &["OWNERS"]);
    let listed = manifest_keys(&export, local.path());
    assert_eq!(second, listed, "no stale part, and no baseline file the state does not name");
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn a_missing_bucket_fails_before_any_extraction_with_what_to_do() {
    let out = export_to("s3://crmdump-no-such-bucket/x", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("s3://crmdump-no-such-bucket/x") && stderr.contains("bucket exists"), "{stderr}");
    assert!(!stderr.contains("Discovered the account"), "no extraction should start: {stderr}");
}
