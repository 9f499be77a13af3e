//! `crmdump listen` end to end: the sandbox sends HubSpot's and Pipedrive's webhooks over
//! loopback HTTP, the listener keeps them in a real local folder, and an independent reader
//! (DuckDB, `tests/reader/read_journal.py`) reads the journal back to compare it with the
//! sandbox's ground truth of what it sent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{SandboxProcess, crmdump, python, run};

pub(crate) const SECRET: &str = "test-client-secret-5c1e";
pub(crate) const USER: &str = "pd-hook";
pub(crate) const PASSWORD: &str = "pd-hook-password-91";
pub(crate) const PUBLIC: &str = "https://hooks.example.test";

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `crmdump listen` process, killed on drop.
pub(crate) struct Listener {
    child: Option<Child>,
    port: u16,
    pub(crate) dest: PathBuf,
    /// `--dest` when it is not the local `dest` (an S3 URL).
    dest_url: Option<String>,
    spool: PathBuf,
    extra: Vec<String>,
    /// The environment that reaches a cloud destination (its endpoint and credentials).
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Listener {
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> Listener {
        Listener::start_at(dir, dir.join("dest"), extra)
    }

    /// A listener into `dest`, its spool in `dir`.
    pub(crate) fn start_at(dir: &Path, dest: PathBuf, extra: &[&str]) -> Listener {
        let mut l = Listener {
            child: None,
            port: free_port(),
            dest,
            dest_url: None,
            spool: dir.join("spool"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        };
        l.spawn();
        l
    }

    /// A listener writing to `dest_url` on the S3 server at `endpoint`.
    fn start_s3(dir: &Path, dest_url: &str, endpoint: &str, extra: &[&str]) -> Listener {
        Listener::start_cloud(dir, dest_url, crate::s3::with_aws_at(Command::new("env"), endpoint), extra)
    }

    /// A listener writing to `dest_url`, reached with the environment `env` sets.
    pub(crate) fn start_cloud(dir: &Path, dest_url: &str, env: Command, extra: &[&str]) -> Listener {
        let env = env.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))).collect();
        let mut l = Listener {
            child: None,
            port: free_port(),
            dest: dir.join("dest"),
            dest_url: Some(dest_url.to_string()),
            spool: dir.join("spool"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
        };
        l.spawn();
        l
    }

    fn spawn(&mut self) {
        let dest = self.dest_url.clone().unwrap_or_else(|| self.dest.to_str().unwrap().to_string());
        let mut child = crmdump()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["listen", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--dest", &dest, "--spool", self.spool.to_str().unwrap()])
            .args(["--flush-interval", "100ms"])
            .args(&self.extra)
            .env("CRMDUMP_HUBSPOT_CLIENT_SECRET", SECRET)
            .env("CRMDUMP_PIPEDRIVE_WEBHOOK_USER", USER)
            .env("CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("crmdump listen starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("Listening on"), "unexpected first line: {line}");
        self.child = Some(child);
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn health(&self) -> Value {
        get(&self.url("/healthz"))
    }

    /// SIGTERM (how orchestrators stop a service), waiting for the listener to drain and exit;
    /// its exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap().code()
    }

    /// SIGKILL, then the same listener again (same port, spool and destination).
    fn kill_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

pub(crate) fn get(url: &str) -> Value {
    block_on(async { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() })
}

pub(crate) fn post(url: &str, body: Value) -> Value {
    block_on(async {
        reqwest::Client::new().post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
    })
}

/// Waits for `done`, panicking with `what` after a minute.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(90), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the sandbox has delivered everything (nothing in flight) and the listener
/// has drained its spool.
pub(crate) fn settle(sandboxes: &[&SandboxProcess], listener: &Listener) {
    wait_until("the sandboxes delivered every batch", || {
        sandboxes.iter().all(|s| s.stats()["webhooks"]["in_flight"] == 0)
    });
    wait_until("the listener drained its spool", || listener.health()["spool"]["pending"] == 0);
}

/// The journal as DuckDB reads it.
pub(crate) fn read_journal(dest: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/read_journal.py");
    let out = Command::new(python()).arg(script).arg(dest).output().expect("python runs");
    assert!(out.status.success(), "read_journal.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["damaged"], json!([]), "parts that do not match their markers");
    journal
}

/// An event without its delivery attempt's number (which changes between deliveries).
fn without_attempt(mut event: Value) -> Value {
    if let Some(o) = event.as_object_mut() {
        o.remove("attemptNumber");
    }
    if let Some(meta) = event.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("attempt");
    }
    event
}

/// The journal's events of `account`, by key, each once (a second copy fails).
pub(crate) fn journal_events(journal: &Value, source: &str, account: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in journal["events"].as_array().unwrap() {
        if e["source"] == source && e["account"] == account {
            let key = e["key"].as_str().unwrap().to_string();
            let previous = out.insert(key.clone(), without_attempt(e["event"].clone()));
            assert!(previous.is_none(), "{key} is twice in the journal");
        }
    }
    out
}

/// The sandbox's ground truth, by the same keys.
pub(crate) fn sent_events(sandbox: &SandboxProcess, key: impl Fn(&Value) -> String) -> BTreeMap<String, Value> {
    let truth = get(&format!("{}/_sandbox/webhooks", sandbox.base_url));
    let events = truth["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["acknowledged"] == true), "an event was never acknowledged");
    events.iter().map(|e| (key(&e["event"]), without_attempt(e["event"].clone()))).collect()
}

/// Panics naming the first differences between the journal and the ground truth.
pub(crate) fn assert_same(what: &str, kept: &BTreeMap<String, Value>, sent: &BTreeMap<String, Value>) {
    let missing: Vec<&String> = sent.keys().filter(|k| !kept.contains_key(*k)).take(3).collect();
    let extra: Vec<&String> = kept.keys().filter(|k| !sent.contains_key(*k)).take(3).collect();
    let differ: Vec<&String> = sent.keys().filter(|k| kept.get(*k).is_some_and(|v| v != &sent[*k])).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: {} sent, {} in the journal; missing {missing:?}, not sent {extra:?}, different {:?}",
        sent.len(),
        kept.len(),
        differ.iter().map(|k| (&sent[*k], &kept[*k])).collect::<Vec<_>>()
    );
}

/// The portal of a sandbox's events.
pub(crate) fn portal_of(sent: &BTreeMap<String, Value>) -> String {
    sent.values().next().expect("events were sent")["portalId"].to_string()
}

/// A Pipedrive sandbox sending its webhooks to `listener`.
fn pipedrive_sandbox(scale: u64, listener: &Listener) -> SandboxProcess {
    let (url, scale) = (listener.url("/pipedrive"), scale.to_string());
    SandboxProcess::start(&[
        "--flavor",
        "pipedrive",
        "--scale",
        &scale,
        "--webhook-url",
        &url,
        "--webhook-user",
        USER,
        "--webhook-password",
        PASSWORD,
        "--webhook-retries",
        "200ms,500ms,1s",
    ])
}

pub(crate) fn hubspot_key(e: &Value) -> String {
    format!("{}/{}/{}", e["portalId"], e["subscriptionId"], e["eventId"])
}

pub(crate) fn hubspot_sandbox(seed: u64, scale: u64, listener: &Listener, extra: &[&str]) -> SandboxProcess {
    let url = listener.url("/hubspot");
    let signed = format!("{PUBLIC}/hubspot");
    let (seed, scale) = (seed.to_string(), scale.to_string());
    let mut args = vec!["--seed", &seed, "--scale", &scale, "--webhook-url", &url, "--webhook-signed-url", &signed];
    args.extend_from_slice(&["--webhook-secret", SECRET, "--webhook-collide-ids"]);
    args.extend_from_slice(if extra.is_empty() { &["--webhook-retries", "200ms,200ms,500ms,1s"] } else { extra });
    SandboxProcess::start(&args)
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn every_hubspot_event_lands_once_by_portal_behind_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &["--public-url", PUBLIC]);
    let first = hubspot_sandbox(1, 2500, &listener, &[]);
    let second = hubspot_sandbox(2, 2500, &listener, &[]);
    first.hook("touch", json!({"objectType": "contacts", "count": 2000, "spreadMs": 60000}));
    first.hook("archive", json!({"objectType": "companies", "count": 50}));
    second.hook("touch", json!({"objectType": "contacts", "count": 300}));
    settle(&[&first, &second], &listener);
    // Deliveries again, as HubSpot makes when it missed an acknowledgement.
    assert_eq!(post(&format!("{}/_sandbox/webhooks/resend", first.base_url), json!({"count": 8}))["resent"], 8);
    settle(&[&first, &second], &listener);

    let journal = read_journal(&listener.dest);
    let mut portals = BTreeSet::new();
    for sandbox in [&first, &second] {
        let sent = sent_events(sandbox, hubspot_key);
        let portal = portal_of(&sent);
        assert_same(&format!("portal {portal}"), &journal_events(&journal, "hubspot", &portal), &sent);
        portals.insert(portal);
    }
    assert_eq!(portals.len(), 2);
    let first_sent = sent_events(&first, hubspot_key);
    assert_eq!(first_sent.len(), 2050, "2,000 property changes and 50 deletions");
    let kinds: BTreeSet<&str> = first_sent.values().map(|e| e["subscriptionType"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["company.deletion", "contact.propertyChange"]));
    // The ids did collide: across subscriptions, and across portals.
    let ids_by_subscription: BTreeMap<String, BTreeSet<String>> =
        first_sent.values().fold(BTreeMap::new(), |mut m, e| {
            m.entry(e["eventId"].to_string()).or_default().insert(e["subscriptionId"].to_string());
            m
        });
    assert!(ids_by_subscription.values().any(|s| s.len() > 1), "no event id in two subscriptions");
    let health = listener.health();
    let stats = first.stats()["webhooks"].clone();
    assert!(stats["resent_events"].as_u64().unwrap() >= 8 * 50, "{stats}");
    assert_eq!(health["duplicates"], stats["resent_events"], "every resent event dropped once: {health}");
    assert_eq!(health["refused"], json!({}), "{health}");
    assert_eq!(stats["acknowledged"], stats["batches"].as_u64().unwrap() + 8, "{stats}");
    let out = run(crmdump().args(["verify", listener.dest.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn every_pipedrive_event_lands_once_and_verify_finds_damage() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &[]);
    let sandbox = pipedrive_sandbox(2000, &listener);
    sandbox.hook("touch", json!({"objectType": "persons", "count": 2000}));
    sandbox.hook("archive", json!({"objectType": "deals", "count": 50}));
    settle(&[&sandbox], &listener);
    assert_eq!(post(&format!("{}/_sandbox/webhooks/resend", sandbox.base_url), json!({"count": 30}))["resent"], 30);
    settle(&[&sandbox], &listener);

    let journal = read_journal(&listener.dest);
    let sent = sent_events(&sandbox, |e| e["meta"]["id"].as_str().unwrap().to_string());
    assert_eq!(sent.len(), 2050);
    let company = sent.values().next().unwrap()["meta"]["company_id"].as_str().unwrap().to_string();
    assert_same("pipedrive", &journal_events(&journal, "pipedrive", &company), &sent);
    assert_eq!(listener.health()["duplicates"], 30);

    // verify finds a flipped byte and a missing part.
    let folder = std::fs::read_dir(listener.dest.join("_webhooks/pipedrive").join(&company))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    let mut bytes = std::fs::read(&parts[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&parts[0], bytes).unwrap();
    std::fs::remove_file(&parts[1]).unwrap();
    let out = run(crmdump().args(["verify", listener.dest.to_str().unwrap()]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.lines().any(|l| l.contains(&name(&parts[0])) && l.contains("sha256")), "{text}");
    assert!(text.lines().any(|l| l.contains(&name(&parts[1])) && l.contains("missing")), "{text}");
}

pub(crate) fn v3(body: &[u8], url: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("POST{url}").as_bytes());
    mac.update(body);
    mac.update(timestamp.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn forged_stale_and_unauthenticated_requests_are_refused_and_nothing_of_them_kept() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &["--public-url", PUBLIC, "--max-body", "64KiB"]);
    let hubspot = listener.url("/hubspot");
    let signed_url = format!("{PUBLIC}/hubspot");
    let body = json!([{"eventId": 1, "subscriptionId": 2, "portalId": 77, "occurredAt": 1, "subscriptionType": "contact.creation", "objectId": 9}]).to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let send = |url: &str, body: Vec<u8>, headers: Vec<(&str, String)>| -> u16 {
        block_on(async {
            let mut request = reqwest::Client::new().post(url).body(body);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            request.send().await.unwrap().status().as_u16()
        })
    };
    let signed =
        |sig: String, ts: i64| vec![("X-HubSpot-Signature-v3", sig), ("X-HubSpot-Request-Timestamp", ts.to_string())];
    let b = body.as_bytes().to_vec();
    let forged = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    assert_eq!(send(&hubspot, b.clone(), signed(forged, now)), 401, "a forged signature");
    let other = v3(b"[]", &signed_url, now);
    assert_eq!(send(&hubspot, b.clone(), signed(other, now)), 401, "a signature over another body");
    let old = now - 6 * 60 * 1000;
    assert_eq!(send(&hubspot, b.clone(), signed(v3(&b, &signed_url, old), old)), 401, "six minutes old");
    let direct = v3(&b, &hubspot, now);
    assert_eq!(
        send(&hubspot, b.clone(), signed(direct, now)),
        401,
        "signed for the inside address, not the public one"
    );
    let basic = |user: &str, password: &str| {
        vec![(
            "Authorization",
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))),
        )]
    };
    let pipedrive = listener.url("/pipedrive");
    let pd_body = json!({"meta": {"action": "change", "entity": "deal", "entity_id": "1", "id": "3f1c", "company_id": "5"}, "data": {"id": 1}, "previous": {}}).to_string().into_bytes();
    assert_eq!(send(&pipedrive, pd_body.clone(), basic(USER, "wrong")), 401, "wrong basic auth");
    assert_eq!(send(&pipedrive, pd_body.clone(), vec![]), 401, "no basic auth");
    // Oversized: 413.
    let big = vec![b'['; 100 * 1024];
    assert_eq!(send(&hubspot, big.clone(), signed(v3(&big, &signed_url, now), now)), 413);
    // Garbage from an authentic sender: acknowledged, kept as a dead letter.
    let garbage = b"{\"not\": \"a batch\"".to_vec();
    assert_eq!(send(&hubspot, garbage.clone(), signed(v3(&garbage, &signed_url, now), now)), 200);
    // And the genuine requests pass.
    assert_eq!(send(&hubspot, b.clone(), signed(v3(&b, &signed_url, now), now)), 200);
    assert_eq!(send(&pipedrive, pd_body, basic(USER, PASSWORD)), 200);
    wait_until("the listener drained its spool", || listener.health()["spool"]["pending"] == 0);
    let health = listener.health();
    assert_eq!(health["refused"], json!({"bad_signature": 3, "stale": 1, "bad_credentials": 2}), "{health}");
    assert_eq!(health["too_large"], 1);
    assert_eq!(health["dead_letters"], 1);
    let journal = read_journal(&listener.dest);
    let keys: BTreeSet<&str> =
        journal["events"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, BTreeSet::from(["77/2/1", "3f1c"]), "only the authentic events");
    let dead = journal["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["body"], String::from_utf8(garbage).unwrap());
    assert_eq!(dead[0]["source"], "hubspot");
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn a_listener_killed_while_the_sandbox_sends_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::start(dir.path(), &["--public-url", PUBLIC]);
    let sandbox = hubspot_sandbox(3, 12000, &listener, &["--webhook-retries", &["200ms"; 40].join(",")]);
    for _ in 0..3 {
        // 100 batches in flight, 10 at a time: killed as soon as the first is acknowledged.
        sandbox.hook("touch", json!({"objectType": "contacts", "count": 10000}));
        let start = Instant::now();
        while listener.health()["accepted"].as_u64().unwrap() < 1 {
            assert!(start.elapsed() < Duration::from_secs(60), "nothing acknowledged");
            std::thread::sleep(Duration::from_millis(2));
        }
        listener.kill_and_restart();
    }
    sandbox.hook("archive", json!({"objectType": "contacts", "count": 50}));
    settle(&[&sandbox], &listener);
    let stats = sandbox.stats()["webhooks"].clone();
    assert_eq!(stats["gave_up"], 0, "{stats}");
    assert!(stats["failed"].as_u64().unwrap() > 0, "no delivery failed: the kills came too late ({stats})");
    let journal = read_journal(&listener.dest);
    assert_eq!(journal["uncommitted"], json!([]), "parts left without a marker after the restart");
    let sent = sent_events(&sandbox, hubspot_key);
    assert_eq!(sent.len(), 30050);
    assert_same("after kills", &journal_events(&journal, "hubspot", &portal_of(&sent)), &sent);
    let out = run(crmdump().args(["verify", listener.dest.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Calls the sandbox's HubSpot API as the exporter does.
pub(crate) fn api(sandbox: &SandboxProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", sandbox.base_url);
    block_on(async {
        let client = reqwest::Client::new();
        let request = match method {
            "GET" => client.get(&url),
            _ => client.post(&url).json(&body.unwrap_or(Value::Null)),
        };
        let response = request.bearer_auth("sandbox-token").send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    })
}

/// Every id a list of the type serves (`archived` for the recycle bin).
pub(crate) fn listed(sandbox: &SandboxProcess, object_type: &str, archived: bool) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = String::new();
    loop {
        let cursor = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let path = format!("/crm/v3/objects/{object_type}?limit=100&archived={archived}{cursor}");
        let (status, page) = api(sandbox, "GET", &path, None);
        assert_eq!(status, 200, "{page}");
        ids.extend(page["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = next.to_string(),
            None => return ids,
        }
    }
}

/// A record's properties by batch read (`None` when the read answers it is not there).
fn batch_read(sandbox: &SandboxProcess, object_type: &str, id: &str, properties: &[&str]) -> Option<Value> {
    let body = json!({"inputs": [{"id": id}], "properties": properties});
    let (_, answer) = api(sandbox, "POST", &format!("/crm/v3/objects/{object_type}/batch/read"), Some(body));
    answer["results"].as_array().and_then(|r| r.first()).cloned()
}

/// The ids of `to` associated with `id` (v4 batch read, as the exporter reads them).
fn associated(sandbox: &SandboxProcess, from: &str, id: &str, to: &str) -> BTreeSet<String> {
    let id = id.to_string();
    associations_of(sandbox, from, &[&id], to).remove(&id).unwrap_or_default()
}

/// The ids of `to` associated with each of `ids` (v4 batch reads of 100), every id a key.
pub(crate) fn associations_of(
    sandbox: &SandboxProcess,
    from: &str,
    ids: &[&String],
    to: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut all: BTreeMap<String, BTreeSet<String>> = ids.iter().map(|id| ((*id).clone(), BTreeSet::new())).collect();
    // Each input's associations come in pages: ask again with its `after` until none is left.
    let mut pending: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    while !pending.is_empty() {
        let chunk: Vec<Value> = pending.drain(..pending.len().min(100)).collect();
        let (status, answer) = api(
            sandbox,
            "POST",
            &format!("/crm/v4/associations/{from}/{to}/batch/read"),
            Some(json!({ "inputs": chunk })),
        );
        assert!(status == 200 || status == 207, "{answer}");
        for r in answer["results"].as_array().unwrap() {
            let id = text_id(&r["from"]["id"]);
            all.get_mut(&id)
                .expect("an id asked for")
                .extend(r["to"].as_array().unwrap().iter().map(|t| text_id(&t["toObjectId"])));
            if let Some(after) = r["paging"]["next"]["after"].as_str() {
                pending.push(json!({"id": id, "after": after}));
            }
        }
    }
    all
}

/// Asserts that `links` (`(from type, from, to type, to)`) holds exactly the current
/// associations, to every other of `types` (`(object type, type id)`), of each record in
/// `records` (type id -> ids), by the sandbox's v4 reads. Returns how many it compared.
pub(crate) fn assert_every_association_of(
    sandbox: &SandboxProcess,
    links: &BTreeSet<(String, String, String, String)>,
    records: &BTreeMap<String, BTreeSet<String>>,
    types: &[(&str, &str)],
) -> usize {
    let mut checked = 0;
    for &(from, from_id) in types {
        let ids: Vec<&String> = records.get(from_id).into_iter().flatten().collect();
        for (to, to_id) in types.iter().filter(|(_, t)| *t != from_id) {
            for (id, truth) in associations_of(sandbox, from, &ids, to) {
                let folder: BTreeSet<String> = links
                    .iter()
                    .filter(|l| l.0 == from_id && l.1 == id && l.2 == *to_id)
                    .map(|l| l.3.clone())
                    .collect();
                checked += truth.len();
                assert_eq!(folder, truth, "{from} {id}: its {to} in the folder");
            }
        }
    }
    checked
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn every_hubspot_hook_changes_the_api_as_its_ground_truth_says_and_sends_its_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &["--public-url", PUBLIC]);
    let sandbox = hubspot_sandbox(5, 400, &listener, &[]);
    let contacts_before = listed(&sandbox, "contacts", false);
    let archived_deals = listed(&sandbox, "deals", true);

    let deleted = strings(&sandbox.hook("delete", json!({"objectType": "contacts", "count": 10}))["ids"]);
    let private = strings(&sandbox.hook("privacy-delete", json!({"objectType": "contacts", "count": 5}))["ids"]);
    let merges = sandbox.hook("merge", json!({"objectType": "companies", "count": 5}))["merges"].clone();
    let restored = strings(&sandbox.hook("restore", json!({"objectType": "deals", "count": 3}))["ids"]);
    // Associations changed: what the records looked like before, to see that they do not move.
    let linked =
        sandbox.hook("associate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 10}));
    let unlinked =
        sandbox.hook("dissociate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 10}));

    // Deleted and privacy-deleted contacts: in no list, no read, no recycle bin.
    let contacts = listed(&sandbox, "contacts", false);
    let bin = listed(&sandbox, "contacts", true);
    for id in deleted.iter().chain(&private) {
        assert!(contacts_before.contains(id) && !contacts.contains(id) && !bin.contains(id), "{id}");
        assert_eq!(batch_read(&sandbox, "contacts", id, &[]), None, "{id} still reads");
    }
    assert_eq!(contacts.len(), contacts_before.len() - 15);
    // Merges: the merged-away id reads as the survivor, which lists it in hs_merged_object_ids.
    let companies = listed(&sandbox, "companies", false);
    for m in merges.as_array().unwrap() {
        let (survivor, merged) = (m["survivor"].as_str().unwrap(), m["merged"].as_str().unwrap());
        assert!(companies.contains(survivor) && !companies.contains(merged));
        let read = batch_read(&sandbox, "companies", merged, &["hs_merged_object_ids"]).expect("the survivor");
        assert_eq!(read["id"], survivor);
        assert_eq!(read["properties"]["hs_merged_object_ids"], merged);
        let (status, one) = api(&sandbox, "GET", &format!("/crm/v3/objects/companies/{merged}"), None);
        assert_eq!((status, one["id"].as_str()), (200, Some(survivor)));
    }
    // Restored deals: live again, out of the recycle bin.
    let deals = listed(&sandbox, "deals", false);
    for id in &restored {
        assert!(archived_deals.contains(id) && deals.contains(id) && !listed(&sandbox, "deals", true).contains(id));
    }
    // Associations: added and removed, neither end's last-modified date moved.
    for (answer, removed) in [(&linked, false), (&unlinked, true)] {
        for pair in answer["pairs"].as_array().unwrap() {
            let (contact, company) = (pair["from"].as_str().unwrap(), pair["to"].as_str().unwrap());
            assert_eq!(associated(&sandbox, "contacts", contact, "companies").contains(company), !removed, "{pair}");
            assert_eq!(associated(&sandbox, "companies", company, "contacts").contains(contact), !removed, "{pair}");
        }
    }
    let truth = |object_type: &str| get(&format!("{}/_sandbox/changes?objectType={object_type}", sandbox.base_url));
    let kinds = |object_type: &str| -> BTreeMap<String, String> {
        truth(object_type)["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_string(), c["kind"].as_str().unwrap().to_string()))
            .collect()
    };
    let contact_kinds = kinds("contacts");
    assert_eq!(contact_kinds.len(), 15, "association changes move no record: {contact_kinds:?}");
    assert!(
        deleted.iter().all(|id| contact_kinds[id] == "deleted")
            && private.iter().all(|id| contact_kinds[id] == "privacy_deleted")
    );
    let company_truth = truth("companies");
    let merged_truth: BTreeSet<(String, String)> = company_truth["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "merged")
        .map(|c| (c["mergedInto"].as_str().unwrap().to_string(), c["id"].as_str().unwrap().to_string()))
        .collect();
    let merged_hooks: BTreeSet<(String, String)> = merges
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["survivor"].as_str().unwrap().to_string(), m["merged"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(merged_truth, merged_hooks);
    assert!(restored.iter().all(|id| kinds("deals")[id] == "restored"));
    let link_truth = get(&format!("{}/_sandbox/association-changes", sandbox.base_url));
    assert_eq!(link_truth["changes"].as_array().unwrap().len(), 20);

    // The journal holds the events HubSpot would have sent for each.
    settle(&[&sandbox], &listener);
    let journal = read_journal(&listener.dest);
    let sent = sent_events(&sandbox, hubspot_key);
    let kept = journal_events(&journal, "hubspot", &portal_of(&sent));
    assert_same("hooks", &kept, &sent);
    let count = |kind: &str| kept.values().filter(|e| e["subscriptionType"] == kind).count();
    assert_eq!(count("contact.deletion"), 15, "a privacy deletion also fires a plain deletion");
    assert_eq!(count("contact.privacyDeletion"), 5);
    assert_eq!(count("company.merge"), 5);
    assert_eq!(count("deal.restore"), 3);
    assert_eq!(count("contact.associationChange") + count("company.associationChange"), 40, "both ends of 20 changes");
    let merge_ids: BTreeSet<(String, String)> = kept
        .values()
        .filter(|e| e["subscriptionType"] == "company.merge")
        .map(|e| (e["primaryObjectId"].to_string(), e["mergedObjectIds"][0].to_string()))
        .collect();
    assert_eq!(merge_ids, merged_hooks);
    let removals = kept.values().filter(|e| e["associationRemoved"] == true).count();
    assert_eq!(removals, 20);
}

/// A TCP proxy in front of the S3 server that can be taken down (the port refuses
/// connections, open ones are cut) and brought back, as an S3 outage.
struct Outage {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
    _thread: std::thread::JoinHandle<()>,
}

impl Outage {
    fn new(target: &str) -> Outage {
        let port = free_port();
        let target = target.trim_start_matches("http://").to_string();
        let (up, watch) = tokio::sync::watch::channel(true);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(proxy(port, target, watch));
        });
        std::thread::sleep(Duration::from_millis(200));
        Outage { port, up, _thread: thread }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_up(&self, up: bool) {
        self.up.send(up).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn proxy(port: u16, target: String, mut up: tokio::sync::watch::Receiver<bool>) {
    loop {
        if !*up.borrow() {
            if up.changed().await.is_err() {
                return;
            }
            continue;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { continue };
                    let target = target.clone();
                    connections.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
                changed = up.changed() => {
                    if changed.is_err() || !*up.borrow() {
                        break;
                    }
                }
            }
        }
        connections.abort_all();
        drop(listener);
    }
}

#[test]
#[ignore = "needs S3 (moto): run scripts/test"]
fn an_s3_outage_under_a_steady_stream_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = "crmdump-listen-outage";
    crate::s3::create_bucket(bucket);
    let outage = Outage::new(&crate::s3::endpoint());
    // A prefix of its own: the S3 server may hold the journal of an earlier run of this test.
    let prefix = format!("journal-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let dest = format!("s3://{bucket}/{prefix}");
    let listener =
        Listener::start_s3(dir.path(), &dest, &outage.endpoint(), &["--public-url", PUBLIC, "--spool-limit", "200KiB"]);
    let retries = ["250ms"; 400].join(",");
    let sandbox = hubspot_sandbox(7, 6000, &listener, &["--webhook-retries", &retries]);
    let touch = |n: u64| {
        sandbox.hook("touch", json!({"objectType": "contacts", "count": n}));
        std::thread::sleep(Duration::from_millis(50));
    };
    for _ in 0..10 {
        touch(20);
    }
    outage.set_up(false);
    // A steady stream while S3 is down: the spool fills, then the listener answers 503.
    let start = Instant::now();
    while listener.health()["unavailable"].as_u64().unwrap() < 5 {
        assert!(start.elapsed() < Duration::from_secs(60), "the spool never filled: {}", listener.health());
        touch(50);
    }
    let health = listener.health();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["spool"]["pending"].as_u64().unwrap() > 0, "{health}");
    for _ in 0..10 {
        touch(20);
    }
    // Down for longer than the store client retries (30 s): the lease's renewal before a
    // journal part fails, and the listener, whose lease nobody else took, keeps acknowledging.
    while start.elapsed() < Duration::from_secs(45) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(listener.health()["status"], "degraded", "the listener still answers");
    outage.set_up(true);
    for _ in 0..10 {
        touch(20);
    }
    settle(&[&sandbox], &listener);
    let stats = sandbox.stats()["webhooks"].clone();
    assert_eq!(stats["gave_up"], 0, "{stats}");
    assert!(stats["failed"].as_u64().unwrap() >= 5, "{stats}");
    let local = dir.path().join("downloaded");
    crate::s3::download(bucket, &prefix, &local);
    let journal = read_journal(&local);
    let sent = sent_events(&sandbox, hubspot_key);
    assert_same("after the outage", &journal_events(&journal, "hubspot", &portal_of(&sent)), &sent);
    let out = run(crate::s3::with_aws(crmdump()).args(["verify", &dest]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Every record a Pipedrive list serves (`path` with its query): v2 lists by cursor, v1
/// lists (leads) by offset.
pub(crate) fn pipedrive_records(sandbox: &SandboxProcess, path: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut next = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}limit=500{next}", sandbox.base_url);
        let page = block_on(async {
            reqwest::Client::new()
                .get(&url)
                .header("x-api-token", "t")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
        assert_eq!(page["success"], true, "{url}: {page}");
        records.extend(page["data"].as_array().into_iter().flatten().cloned());
        let more = &page["additional_data"];
        if let Some(cursor) = more["next_cursor"].as_str() {
            next = format!("&cursor={cursor}");
        } else if more["more_items_in_collection"] == true {
            next = format!("&start={}", records.len());
        } else {
            return records;
        }
    }
}

pub(crate) fn text_id(v: &Value) -> String {
    v.to_string().trim_matches('"').to_string()
}

/// Every id a Pipedrive list serves (`path` with its query).
pub(crate) fn pipedrive_listed(sandbox: &SandboxProcess, path: &str) -> BTreeSet<String> {
    pipedrive_records(sandbox, path).iter().map(|r| text_id(&r["id"])).collect()
}

/// Every association of a Pipedrive account, `(from type, from id, to type, to id)`, from its
/// records' foreign keys and the deals' line items, as the API lists them.
pub(crate) fn pipedrive_links(sandbox: &SandboxProcess) -> BTreeSet<(String, String, String, String)> {
    // (pointing type, its lists, its keys with the type each points at)
    type Keys = [(&'static str, &'static str)];
    let keys: &[(&str, &[&str], &Keys)] = &[
        (
            "deal",
            &["/api/v2/deals?status=open,won,lost,deleted", "/api/v2/deals/archived"],
            &[("person_id", "person"), ("org_id", "organization")],
        ),
        ("person", &["/api/v2/persons"], &[("org_id", "organization")]),
        (
            "activity",
            &["/api/v2/activities"],
            &[("deal_id", "deal"), ("person_id", "person"), ("org_id", "organization")],
        ),
        (
            "lead",
            &["/api/v1/leads", "/api/v1/leads/archived"],
            &[("person_id", "person"), ("organization_id", "organization")],
        ),
    ];
    let mut links = BTreeSet::new();
    let mut deals = Vec::new();
    for (from, lists, keys) in keys {
        for list in *lists {
            for r in pipedrive_records(sandbox, list) {
                let id = text_id(&r["id"]);
                if *from == "deal" {
                    deals.push(id.clone());
                }
                for (key, to) in *keys {
                    if !r[key].is_null() {
                        links.insert((from.to_string(), id.clone(), to.to_string(), text_id(&r[key])));
                    }
                }
            }
        }
    }
    for chunk in deals.chunks(100) {
        for item in pipedrive_records(sandbox, &format!("/api/v2/deals/products?deal_ids={}", chunk.join(","))) {
            links.insert(("deal".into(), text_id(&item["deal_id"]), "product".into(), text_id(&item["product_id"])));
        }
    }
    links
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn every_pipedrive_hook_changes_the_api_as_its_ground_truth_says_and_sends_its_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &[]);
    let sandbox = pipedrive_sandbox(300, &listener);
    let persons_before = pipedrive_listed(&sandbox, "/api/v2/persons");
    let archived_before = pipedrive_listed(&sandbox, "/api/v2/deals/archived");
    let deleted_persons = strings(&sandbox.hook("delete", json!({"objectType": "persons", "count": 10}))["ids"]);
    let deleted_deals = strings(&sandbox.hook("delete", json!({"objectType": "deals", "count": 5}))["ids"]);
    let merges = sandbox.hook("merge", json!({"objectType": "organizations", "count": 5}))["merges"].clone();
    let restored = strings(&sandbox.hook("restore", json!({"objectType": "deals", "count": 3}))["ids"]);

    let persons = pipedrive_listed(&sandbox, "/api/v2/persons");
    assert_eq!(persons.len(), persons_before.len() - 10);
    assert!(deleted_persons.iter().all(|id| persons_before.contains(id) && !persons.contains(id)));
    let deals = pipedrive_listed(&sandbox, "/api/v2/deals");
    let deleted_listed = pipedrive_listed(&sandbox, "/api/v2/deals?status=deleted");
    assert!(
        deleted_deals.iter().all(|id| !deals.contains(id) && deleted_listed.contains(id)),
        "deleted deals listed as deleted"
    );
    let organizations = pipedrive_listed(&sandbox, "/api/v2/organizations");
    for m in merges.as_array().unwrap() {
        assert!(
            organizations.contains(m["survivor"].as_str().unwrap())
                && !organizations.contains(m["merged"].as_str().unwrap())
        );
    }
    let archived = pipedrive_listed(&sandbox, "/api/v2/deals/archived");
    assert!(restored.iter().all(|id| archived_before.contains(id) && !archived.contains(id) && deals.contains(id)));
    let truth = |object_type: &str| -> BTreeMap<String, Value> {
        get(&format!("{}/_sandbox/changes?objectType={object_type}", sandbox.base_url))["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    };
    let person_truth = truth("persons");
    assert!(deleted_persons.iter().all(|id| person_truth[id]["kind"] == "deleted"));
    let org_truth = truth("organizations");
    for m in merges.as_array().unwrap() {
        let merged = &org_truth[m["merged"].as_str().unwrap()];
        assert_eq!((&merged["kind"], &merged["mergedInto"]), (&json!("merged"), &m["survivor"]));
        assert_eq!(org_truth[m["survivor"].as_str().unwrap()]["kind"], "modified", "the survivor's update_time moved");
    }
    let deal_truth = truth("deals");
    assert!(restored.iter().all(|id| deal_truth[id]["kind"] == "restored"));

    settle(&[&sandbox], &listener);
    let journal = read_journal(&listener.dest);
    let sent = sent_events(&sandbox, |e| e["meta"]["id"].as_str().unwrap().to_string());
    let company = sent.values().next().unwrap()["meta"]["company_id"].as_str().unwrap().to_string();
    let kept = journal_events(&journal, "pipedrive", &company);
    assert_same("pipedrive hooks", &kept, &sent);
    let count = |entity: &str, action: &str| {
        kept.values().filter(|e| e["meta"]["entity"] == entity && e["meta"]["action"] == action).count()
    };
    assert_eq!((count("person", "delete"), count("deal", "delete")), (10, 5));
    assert_eq!((count("organization", "delete"), count("organization", "change")), (5, 5));
    assert_eq!(count("deal", "change"), 3);
    let merged_to: BTreeSet<(String, String)> = kept
        .values()
        .filter_map(|e| {
            e["meta"]["merged_to_id"]
                .as_str()
                .map(|to| (to.to_string(), e["meta"]["entity_id"].as_str().unwrap().to_string()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = merges
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["survivor"].as_str().unwrap().to_string(), m["merged"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(merged_to, expected);
}

/// `(KIND, SOURCE, MERGEDINTO)` of every `DELETED_OBJECTS` row of a day folder, by record id
/// (of one type, when given: Pipedrive's ids repeat across entities).
pub(crate) fn deleted_rows_of(
    day: &Path,
    object_type: Option<&str>,
) -> BTreeMap<String, Vec<(String, String, Option<String>)>> {
    let export = crate::support::read_export(day, &["DELETED_OBJECTS"]);
    let (columns, rows) = crate::support::rows(&export, "DELETED_OBJECTS");
    let c = |n: &str| crate::support::col(&columns, n);
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in rows.into_iter().filter(|r| object_type.is_none_or(|t| r[c("OBJECTTYPEID")].as_deref() == Some(t))) {
        out.entry(r[c("OBJECTID")].clone().unwrap()).or_default().push((
            r[c("KIND")].clone().unwrap(),
            r[c("SOURCE")].clone().unwrap(),
            r[c("MERGEDINTO")].clone(),
        ));
    }
    out
}

pub(crate) fn deleted_rows(day: &Path) -> BTreeMap<String, Vec<(String, String, Option<String>)>> {
    deleted_rows_of(day, None)
}

fn event_ids(day: &Path) -> BTreeSet<String> {
    let export = crate::support::read_export(day, &["CHANGE_EVENTS"]);
    let (columns, rows) = crate::support::rows(&export, "CHANGE_EVENTS");
    let id = crate::support::col(&columns, "EVENTID");
    rows.into_iter().map(|r| r[id].clone().unwrap()).collect()
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn deletions_merges_and_every_event_reach_the_next_day_folder() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &["--public-url", PUBLIC]);
    let sandbox = hubspot_sandbox(11, 1500, &listener, &[]);
    let objects = ["--objects", "contacts,companies,deals", "--no-history"];
    crate::support::assert_success(&sandbox.export(&listener.dest, "2026-11-20", &objects));
    let first = listener.dest.join("2026-11-20");
    let archived = listed(&sandbox, "contacts", true);
    let recycled = deleted_rows(&first);
    assert!(!archived.is_empty());
    assert!(archived.iter().all(|id| recycled.get(id).is_some_and(|r| r.contains(&(
        "archived".into(),
        "recycle_bin".into(),
        None
    )))));
    assert!(!first.join("CHANGE_EVENTS").exists(), "no journal yet, no CHANGE_EVENTS");

    // Between two nightly runs: 100 records deleted for good (20 of them privacy deletions), 50
    // merges, 300 associations changed between otherwise unchanged records, 1,000 changes.
    let deleted = strings(&sandbox.hook("delete", json!({"objectType": "contacts", "count": 80}))["ids"]);
    let private = strings(&sandbox.hook("privacy-delete", json!({"objectType": "contacts", "count": 20}))["ids"]);
    // Before the settle lag, so that the next run's window holds the survivors and touches.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let merges = sandbox.hook("merge", json!({"objectType": "companies", "count": 50, "at": at}))["merges"].clone();
    let touched = strings(&sandbox.hook("touch", json!({"objectType": "contacts", "count": 1000, "at": at}))["ids"]);
    let linked =
        sandbox.hook("associate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 150}));
    let unlinked =
        sandbox.hook("dissociate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 150}));
    settle(&[&sandbox], &listener);

    crate::support::assert_success(&sandbox.export(&listener.dest, "2026-11-21", &objects));
    let second = listener.dest.join("2026-11-21");
    let gone = deleted_rows(&second);
    for id in &deleted {
        assert_eq!(gone[id], vec![("deleted".to_string(), "webhook".to_string(), None)], "{id}");
    }
    for id in &private {
        assert_eq!(gone[id], vec![("privacy_deleted".to_string(), "webhook".to_string(), None)], "one row for {id}");
    }
    for m in merges.as_array().unwrap() {
        let (survivor, merged) = (m["survivor"].as_str().unwrap().to_string(), m["merged"].as_str().unwrap());
        // The event and the survivor's hs_merged_object_ids both say it: one row per kind.
        let rows = &gone[merged];
        assert_eq!(rows.len(), 1, "{merged}: one row per record and kind: {rows:?}");
        let (kind, source, into) = &rows[0];
        assert_eq!((kind.as_str(), into.as_ref()), ("merged", Some(&survivor)), "{merged}");
        assert!(["webhook", "merge_property"].contains(&source.as_str()), "{merged}: {source}");
    }
    // Association changes between otherwise unchanged records: both ends read by id, with
    // their current associations.
    let export = crate::support::read_export(&second, &["OBJECTS", "ASSOCIATIONS"]);
    let (columns, rows) = crate::support::rows(&export, "OBJECTS");
    let c = |n: &str| crate::support::col(&columns, n);
    let mut held_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        held_of.entry(r[c("OBJECTTYPEID")].clone().unwrap()).or_default().insert(r[c("OBJECTID")].clone().unwrap());
    }
    let held: BTreeSet<String> = held_of.values().flatten().cloned().collect();
    assert!(touched.iter().all(|id| held.contains(id)), "every changed record in the folder");
    let (columns, rows) = crate::support::rows(&export, "ASSOCIATIONS");
    let c = |n: &str| crate::support::col(&columns, n);
    let typed_links: BTreeSet<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let v = |n: &str| r[c(n)].clone().unwrap();
            (v("FROMOBJECTTYPEID"), v("FROMOBJECTID"), v("TOOBJECTTYPEID"), v("TOOBJECTID"))
        })
        .collect();
    let links: BTreeSet<(String, String)> = typed_links.iter().map(|l| (l.1.clone(), l.3.clone())).collect();
    // The last change of each pair, by the ground truth (a pair may be added, then removed).
    let mut last: BTreeMap<(String, String), bool> = BTreeMap::new();
    for c in get(&format!("{}/_sandbox/association-changes", sandbox.base_url))["changes"].as_array().unwrap() {
        let pair = (c["fromId"].as_str().unwrap().to_string(), c["toId"].as_str().unwrap().to_string());
        last.insert(pair, c["removed"].as_bool().unwrap());
    }
    assert_eq!(linked["pairs"].as_array().unwrap().len() + unlinked["pairs"].as_array().unwrap().len(), 300);
    for ((contact, company), removed) in &last {
        let pair = format!("{contact} - {company}");
        assert!(held.contains(contact) && held.contains(company), "{pair}: both ends in the day folder");
        assert_eq!(links.contains(&(contact.clone(), company.clone())), !removed, "{pair}");
        assert_eq!(links.contains(&(company.clone(), contact.clone())), !removed, "{pair}, the other direction");
    }
    // Every record the folder holds comes with exactly its current associations, to every type.
    let types = [("contacts", "0-1"), ("companies", "0-2"), ("deals", "0-3")];
    let checked = assert_every_association_of(&sandbox, &typed_links, &held_of, &types);
    assert!(checked > 1000, "associations checked: {checked}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(second.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["associations"], "of_records");
    let manifest: Value = serde_json::from_slice(&std::fs::read(first.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["associations"], "all");

    let journal = read_journal(&listener.dest);
    let journal_keys: BTreeSet<String> =
        journal["events"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        journal_keys.len(),
        80 + 20 * 2 + 50 + 1000 + 300 * 2,
        "{} {}",
        sandbox.stats()["webhooks"],
        listener.health()
    );
    assert_eq!(event_ids(&second), journal_keys, "CHANGE_EVENTS holds every event of the journal once");
    // A re-run of the date consumes the same events again.
    crate::support::assert_success(&sandbox.export(&listener.dest, "2026-11-21", &objects));
    assert_eq!(event_ids(&second), journal_keys);
    // The next night: no new event, and the survivors, modified again, do not report their
    // merged records again through the merge property.
    let companies = listed(&sandbox, "companies", false).len();
    let at = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    sandbox.hook("touch", json!({"objectType": "companies", "count": companies, "at": at}));
    settle(&[&sandbox], &listener);
    crate::support::assert_success(&sandbox.export(&listener.dest, "2026-11-22", &objects));
    let third = listener.dest.join("2026-11-22");
    let new_events = event_ids(&third);
    let all_keys: BTreeSet<String> = read_journal(&listener.dest)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(new_events.len(), companies, "the touches' events");
    assert_eq!(new_events, all_keys.difference(&journal_keys).cloned().collect(), "the events since the last run");
    assert!(new_events.iter().all(|k| !journal_keys.contains(k)), "no event consumed twice by nightly runs");
    let export = crate::support::read_export(&third, &["OBJECTS_COMPANIES"]);
    let (columns, rows) = crate::support::rows(&export, "OBJECTS_COMPANIES");
    let merged_ids = crate::support::col(&columns, "PROPERTY_HS_MERGED_OBJECT_IDS");
    assert_eq!(rows.iter().filter(|r| r[merged_ids].is_some()).count(), 50, "the survivors are in the folder");
    assert!(deleted_rows(&third).values().flatten().all(|(_, source, _)| source != "merge_property"), "reported once");

    // Replaying every day folder, oldest first, by the association rule and DELETED_OBJECTS
    // gives the sandbox's current state.
    replay_gives_the_current_state(&sandbox, &[&first, &second, &third], &types);
    let out = run(crmdump().args(["verify", listener.dest.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Replays HubSpot day folders, oldest first: a record's newest row, less the records
/// `DELETED_OBJECTS` says are gone, and its associations from the newest folder that holds it
/// or holds every association (less those with a record gone). Asserts that this is the
/// sandbox's current state: the live records and every association of each, for `types`
/// (`(object type, type id)`).
pub(crate) fn replay_gives_the_current_state(sandbox: &SandboxProcess, days: &[&PathBuf], types: &[(&str, &str)]) {
    let mut latest: BTreeMap<String, (usize, bool, String)> = BTreeMap::new();
    let mut removed = BTreeSet::new();
    // Per folder: whether it holds every association, and its (from type, from, to type, to).
    type Links = BTreeSet<(String, String, String, String)>;
    let mut links: Vec<(bool, Links)> = Vec::new();
    for (n, day) in days.iter().enumerate() {
        let export = crate::support::read_export(day, &["OBJECTS", "ASSOCIATIONS", "DELETED_OBJECTS"]);
        let (columns, rows) = crate::support::rows(&export, "OBJECTS");
        let c = |n: &str| crate::support::col(&columns, n);
        for r in &rows {
            let archived = r[c("ARCHIVED")].as_deref() == Some("true");
            latest.insert(r[c("OBJECTID")].clone().unwrap(), (n, archived, r[c("OBJECTTYPEID")].clone().unwrap()));
        }
        for (id, found) in deleted_rows(day) {
            if found.iter().any(|(kind, _, _)| kind != "archived") {
                removed.insert(id);
            }
        }
        let (columns, rows) = crate::support::rows(&export, "ASSOCIATIONS");
        let c = |n: &str| crate::support::col(&columns, n);
        let pairs = rows
            .iter()
            .map(|r| {
                let v = |n: &str| r[c(n)].clone().unwrap();
                (v("FROMOBJECTTYPEID"), v("FROMOBJECTID"), v("TOOBJECTTYPEID"), v("TOOBJECTID"))
            })
            .collect();
        let manifest: Value = serde_json::from_slice(&std::fs::read(day.join("_manifest.json")).unwrap()).unwrap();
        links.push((manifest["associations"] == "all", pairs));
    }
    let mut replayed_links = 0;
    for &(object_type, type_id) in types {
        let live: BTreeSet<String> = latest
            .iter()
            .filter(|(id, (_, archived, t))| t == type_id && !archived && !removed.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let truth = listed(sandbox, object_type, false);
        let (extra, missing): (Vec<_>, Vec<_>) = (live.difference(&truth).collect(), truth.difference(&live).collect());
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{object_type}: replayed but gone {extra:?}, live but not replayed {missing:?}"
        );
        // A record's associations: those of the newest folder that holds it or holds them all,
        // less those with a record since deleted or merged away.
        let ids: Vec<&String> = live.iter().collect();
        for (to, to_id) in types.iter().filter(|(_, t)| *t != type_id) {
            for (id, truth) in associations_of(sandbox, object_type, &ids, to) {
                let holder = (0..days.len())
                    .rev()
                    .find(|&n| links[n].0 || latest.get(&id).is_some_and(|(d, _, _)| *d == n))
                    .unwrap();
                let replayed: BTreeSet<String> = links[holder]
                    .1
                    .iter()
                    .filter(|l| l.0 == type_id && l.1 == id && l.2 == *to_id && !removed.contains(&l.3))
                    .map(|l| l.3.clone())
                    .collect();
                replayed_links += truth.len();
                assert_eq!(replayed, truth, "{object_type} {id}: its {to}, replayed");
            }
        }
    }
    assert!(replayed_links > 1000, "associations replayed: {replayed_links}");
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn pipedrive_deletions_and_merges_reach_the_next_day_folder() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &[]);
    let sandbox = pipedrive_sandbox(300, &listener);
    let extra = ["--no-history", "--rate-limit", "none"];
    crate::support::assert_success(&sandbox.export_pipedrive(&listener.dest, "2026-11-20", &extra));
    let deleted = strings(&sandbox.hook("delete", json!({"objectType": "persons", "count": 30}))["ids"]);
    // Before the settle lag, so that the next run's window holds the survivors and touches.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let merges = sandbox.hook("merge", json!({"objectType": "organizations", "count": 20, "at": at}))["merges"].clone();
    sandbox.hook("touch", json!({"objectType": "deals", "count": 100, "at": at}));
    // More persons than are looked up one by one (their pointing lists are read whole), fewer
    // organizations (looked up by key), and products (looked up through their deals).
    let persons = strings(&sandbox.hook("touch", json!({"objectType": "persons", "count": 150, "at": at}))["ids"]);
    let products = strings(&sandbox.hook("touch", json!({"objectType": "products", "count": 5, "at": at}))["ids"]);
    settle(&[&sandbox], &listener);
    crate::support::assert_success(&sandbox.export_pipedrive(&listener.dest, "2026-11-21", &extra));
    let second = listener.dest.join("2026-11-21");
    // The association rule from both sides: for every record the folder holds, the folder holds
    // every association the API has of it, those pointing at it included.
    let export = crate::support::read_export(&second, &["OBJECTS", "ASSOCIATIONS"]);
    let (columns, rows) = crate::support::rows(&export, "OBJECTS");
    let c = |n: &str| crate::support::col(&columns, n);
    let held: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r[c("OBJECTTYPEID")].clone().unwrap(), r[c("OBJECTID")].clone().unwrap())).collect();
    for (kind, ids) in [("person", &persons), ("product", &products)] {
        assert!(ids.iter().all(|id| held.contains(&(kind.to_string(), id.clone()))), "every touched {kind} held");
    }
    let held_orgs = held.iter().filter(|(t, _)| t == "organization").count();
    assert!(held_orgs > 0 && held_orgs <= 25, "organizations looked up one by one: {held_orgs}");
    let (columns, rows) = crate::support::rows(&export, "ASSOCIATIONS");
    let c = |n: &str| crate::support::col(&columns, n);
    let folder: BTreeSet<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let v = |n: &str| r[c(n)].clone().unwrap();
            (v("FROMOBJECTTYPEID"), v("FROMOBJECTID"), v("TOOBJECTTYPEID"), v("TOOBJECTID"))
        })
        .collect();
    assert_eq!(folder.len(), rows.len(), "no association row twice");
    let truth = pipedrive_links(&sandbox);
    let of = |links: &BTreeSet<(String, String, String, String)>, t: &str, id: &str| -> Vec<_> {
        links.iter().filter(|l| (l.0 == t && l.1 == id) || (l.2 == t && l.3 == id)).cloned().collect()
    };
    let mut pointing = 0;
    for (t, id) in &held {
        let expected = of(&truth, t, id);
        pointing += expected.iter().filter(|l| l.2 == *t && l.3 == *id).count();
        assert_eq!(of(&folder, t, id), expected, "{t} {id}: every association, from both ends");
    }
    assert!(pointing > 300, "the check covers associations pointing at held records: {pointing}");
    let gone = deleted_rows_of(&second, Some("person"));
    for id in &deleted {
        assert_eq!(gone[id], vec![("deleted".to_string(), "webhook".to_string(), None)], "{id}");
    }
    let gone = deleted_rows_of(&second, Some("organization"));
    for m in merges.as_array().unwrap() {
        let (survivor, merged) = (m["survivor"].as_str().unwrap(), m["merged"].as_str().unwrap());
        assert_eq!(gone[merged], vec![("merged".to_string(), "webhook".to_string(), Some(survivor.to_string()))]);
    }
    let journal = read_journal(&listener.dest);
    let keys: BTreeSet<String> =
        journal["events"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys.len(), 30 + 20 * 2 + 100 + 150 + 5);
    assert_eq!(event_ids(&second), keys);
    let out = run(crmdump().args(["verify", listener.dest.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn a_backfill_day_takes_the_events_that_occurred_that_day() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &["--public-url", PUBLIC]);
    let sandbox = hubspot_sandbox(13, 300, &listener, &[]);
    let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let noon = format!("{yesterday}T12:00:00.000Z");
    let touched = strings(&sandbox.hook("touch", json!({"objectType": "contacts", "count": 40, "at": noon}))["ids"]);
    sandbox.hook("touch", json!({"objectType": "contacts", "count": 10}));
    settle(&[&sandbox], &listener);
    let day = yesterday.to_string();
    let out = run(crmdump()
        .args(["backfill", "--source", "hubspot", "--base-url", &sandbox.base_url, "--rate-limit", "none"])
        .args(["--dest", listener.dest.to_str().unwrap(), "--from", &day, "--to", &day])
        .args(["--objects", "contacts", "--no-history"])
        .env("HUBSPOT_ACCESS_TOKEN", "sandbox-token"));
    crate::support::assert_success(&out);
    let folder = listener.dest.join(&day);
    let export = crate::support::read_export(&folder, &["CHANGE_EVENTS"]);
    let (columns, rows) = crate::support::rows(&export, "CHANGE_EVENTS");
    let id = crate::support::col(&columns, "OBJECTID");
    let objects: BTreeSet<String> = rows.iter().map(|r| r[id].clone().unwrap()).collect();
    assert_eq!(objects, touched.into_iter().collect(), "the 40 changes of that day, not today's 10");
}
