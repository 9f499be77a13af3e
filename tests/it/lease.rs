//! Two runs, one destination: a cron overlap, an orchestrator's retry, two accounts sharing a
//! root. Runs are real processes started within a second of each other at a scale where they
//! overlap; every run either refuses before writing (exit 75 for the same account, whose lease
//! a live run holds; exit 2 for another account, whose date is claimed) or commits a folder that
//! verifies and holds what a solo run holds, and the watermarks are those of the run that
//! committed last.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clouds::Cloud;
use crate::support::*;

/// Where a test's runs write: a local folder, or a bucket of its own store server.
enum Place {
    Local(tempfile::TempDir),
    Cloud(Cloud, String),
}

const PREFIX: &str = "crm";

impl Place {
    fn local() -> Place {
        Place::Local(tempfile::tempdir().unwrap())
    }

    fn cloud(cloud: Cloud, bucket: &str) -> Place {
        cloud.create_bucket(bucket);
        Place::Cloud(cloud, bucket.to_string())
    }

    fn dest(&self) -> String {
        match self {
            Place::Local(dir) => dir.path().to_str().unwrap().to_string(),
            Place::Cloud(cloud, bucket) => cloud.url(bucket, PREFIX),
        }
    }

    fn command(&self) -> Command {
        match self {
            Place::Local(_) => crmdump(),
            Place::Cloud(cloud, _) => cloud.env(crmdump()),
        }
    }

    /// An export of the sandbox (`extra` flags) into this place.
    fn export(&self, extra: &[&str]) -> Command {
        let mut c = self.command();
        c.args(["export", "--source", "sandbox", "--sandbox-anchor", ANCHOR, "--no-history", "--date", DATE])
            .args(["--dest", &self.dest()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Place::Local(dir) => std::fs::read(dir.path().join(key)).ok(),
            Place::Cloud(cloud, bucket) => cloud.get(bucket, &format!("{PREFIX}/{key}")),
        }
    }

    fn manifest(&self) -> Value {
        serde_json::from_slice(&self.get(&format!("{DATE}/_manifest.json")).expect("the date is committed")).unwrap()
    }

    fn verify(&self) -> Output {
        run(self.command().args(["verify", &self.dest()]))
    }
}

fn start(mut cmd: Command) -> Child {
    cmd.spawn().expect("crmdump starts")
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// Rows per table of a manifest.
fn rows(manifest: &Value) -> Vec<(String, u64)> {
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["rows"].as_u64().unwrap()))
        .collect()
}

/// Every run refused (with one of `refusals`) or committed; at least one committed; the
/// committed folder verifies, holds what `solo` holds, and the watermarks are those of the run
/// that committed it.
fn check(place: &Place, outs: &[Output], refusals: &[i32], solo: &Value) {
    let mut committed = 0;
    for out in outs {
        let code = out.status.code().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if code == 0 {
            committed += 1;
        } else {
            assert!(refusals.contains(&code), "exit {code}: {stderr}");
            assert!(stderr.contains("nothing was touched") || stderr.contains("Nothing was touched"), "{stderr}");
        }
    }
    assert!(committed >= 1, "a run committed");
    let verified = place.verify();
    assert_success(&verified);
    let manifest = place.manifest();
    assert_eq!(rows(&manifest), rows(solo), "the committed folder holds what a solo run holds");
    let key = format!("_state/{}-{}.json", manifest["source"].as_str().unwrap(), manifest["account"].as_str().unwrap());
    let state: Value = serde_json::from_slice(&place.get(&key).unwrap()).unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(manifest["started_at"].as_str().unwrap()).unwrap();
    let until = crmdump::sandbox::iso(started.with_timezone(&chrono::Utc) - chrono::Duration::minutes(1));
    assert_eq!(state["watermarks"]["OBJECTS_CONTACTS"], Value::String(until), "the committing run's watermarks");
}

/// A solo run's manifest of the same export, for comparison.
fn solo(extra: &[&str]) -> Value {
    let place = Place::local();
    assert_success(&finish(start(place.export(extra))));
    place.manifest()
}

const SCALE: &[&str] = &["--sandbox-scale", "500"];

fn races(place: &Place) {
    let full = solo(SCALE);
    // Two identical runs: one holds the lease, the other refuses with 75 (or runs after it).
    let first = start(place.export(SCALE));
    std::thread::sleep(Duration::from_millis(400));
    let second = start(place.export(SCALE));
    check(place, &[finish(first), finish(second)], &[75], &full);
    // A full run and a narrower one: the narrower refuses (75 while the first runs, 2 after).
    let first = start(place.export(&[SCALE, &["--mode", "full"]].concat()));
    std::thread::sleep(Duration::from_millis(400));
    let second = start(place.export(&[SCALE, &["--objects", "contacts", "--mode", "full"]].concat()));
    check(place, &[finish(first), finish(second)], &[75, 2], &full);
    // With --wait-for-lease the second run waits for the first to end, then commits.
    let first = start(place.export(&[SCALE, &["--mode", "full"]].concat()));
    std::thread::sleep(Duration::from_millis(400));
    let second = start(place.export(&[SCALE, &["--mode", "full", "--wait-for-lease", "2m"]].concat()));
    let (first, second) = (finish(first), finish(second));
    assert_success(&first);
    assert_success(&second);
    check(place, &[first, second], &[], &full);
    // Another source's account into the same root: the date is claimed by a live run, or
    // committed by it; either way refused with exit 2, and the first export stands.
    let pipedrive = [SCALE, &["--sandbox-flavor", "pipedrive"]].concat();
    let hubspot = start(place.export(&[SCALE, &["--mode", "full"]].concat()));
    std::thread::sleep(Duration::from_millis(400));
    let other = start(place.export(&pipedrive));
    check(place, &[finish(hubspot), finish(other)], &[2], &full);
}

#[test]
fn two_runs_into_one_local_destination_never_lose_data() {
    races(&Place::local());
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn two_runs_into_one_bucket_never_lose_data() {
    races(&Place::cloud(Cloud::s3(), "races"));
}

#[test]
#[ignore = "needs Azurite: run scripts/test"]
fn two_runs_into_one_azure_container_never_lose_data() {
    races(&Place::cloud(Cloud::azure(), "races"));
}

/// On a store that ignores preconditions (fake-gcs-server), a run refuses before it writes
/// anything (having only discovered the account it would lease) and says how to go on; with
/// --accept-unconditional-writes it runs without a lease and commits a folder that verifies.
#[test]
#[ignore = "needs fake-gcs-server: run scripts/test"]
fn a_store_without_conditional_writes_is_refused_unless_accepted() {
    let place = Place::cloud(Cloud::gcs(), "unconditional");
    let refused = finish(start(place.export(SCALE)));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ignores conditional writes") && stderr.contains("--accept-unconditional-writes"),
        "{stderr}"
    );
    let Place::Cloud(cloud, bucket) = &place else { unreachable!() };
    assert_eq!(cloud.list(bucket, PREFIX), Default::default(), "refused before writing anything");
    let accepted = finish(start(place.export(&[SCALE, &["--accept-unconditional-writes"]].concat())));
    assert_success(&accepted);
    assert!(String::from_utf8_lossy(&accepted.stderr).contains("running without a lease"));
    check(&place, &[accepted], &[], &solo(SCALE));
}

/// A run killed while it holds the lease: the next run takes the lease over (its holder is
/// gone) and commits, on a local folder (the kernel released the lock) and on S3 (the lease
/// names a process of this host that no longer exists).
fn a_killed_holder(place: &Place) {
    let mut killed = start(place.export(&["--sandbox-scale", "3000"]));
    let lease_taken = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        leases(place).contains("lease hubspot-")
    });
    assert!(lease_taken, "the first run took its lease");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let started = Instant::now();
    let next = finish(start(place.export(SCALE)));
    assert_success(&next);
    assert!(started.elapsed() < Duration::from_secs(60), "no wait for a stale interval");
    assert_success(&place.verify());
}

fn leases(place: &Place) -> String {
    let out = run(place.command().args(["lease", "list", &place.dest()]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_killed_holders_lease_is_taken_over_on_a_local_folder() {
    a_killed_holder(&Place::local());
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn a_killed_holders_lease_is_taken_over_on_s3() {
    a_killed_holder(&Place::cloud(Cloud::s3(), "killed-holder"));
}

#[test]
#[ignore = "needs Azurite: run scripts/test"]
fn a_killed_holders_lease_is_taken_over_on_azure() {
    a_killed_holder(&Place::cloud(Cloud::azure(), "killed-holder"));
}

/// A run paused past the stale limit (SIGSTOP) loses its lease to a waiting run, which
/// commits; resumed (SIGCONT), the paused run finds its lease gone and stops without
/// committing: the folder and the watermarks are the second run's.
#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn a_run_paused_past_the_stale_limit_cannot_commit() {
    let place = Place::cloud(Cloud::s3(), "paused");
    let stale = ["--lease-stale-after", "3s"];
    let paused = start(place.export(&[&["--sandbox-scale", "3000"][..], &stale].concat()));
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(paused.id() as i32, libc::SIGSTOP) };
    let waiter = finish(start(place.export(&[SCALE, &stale, &["--wait-for-lease", "1m"]].concat())));
    assert_success(&waiter);
    let committed = place.manifest();
    unsafe { libc::kill(paused.id() as i32, libc::SIGCONT) };
    let paused = finish(paused);
    let stderr = String::from_utf8_lossy(&paused.stderr);
    assert_eq!(paused.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("lost its lease"), "{stderr}");
    assert_eq!(place.manifest(), committed, "the paused run did not commit");
    check(&place, &[waiter], &[], &solo(SCALE));
}

/// `crmdump lease break` removes a lease after saying whose it was; a live local lock cannot
/// be broken.
#[test]
fn a_lease_is_listed_and_broken_by_hand() {
    let place = Place::local();
    let mut holder = start(place.export(&["--sandbox-scale", "3000"]));
    let listed = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let l = leases(&place);
        l.contains("held by a live process").then_some(l)
    });
    let listed = listed.expect("the running export's lease is listed");
    let name = listed.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    assert!(name.starts_with("hubspot-"), "{listed}");
    let out = run(crmdump().args(["lease", "break", &place.dest(), &name]));
    assert_eq!(out.status.code(), Some(75), "a live lock is not broken: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop that process"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = run(crmdump().args(["lease", "break", &place.dest(), &name]));
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("crmdump export (pid"), "says whose it was");
}
