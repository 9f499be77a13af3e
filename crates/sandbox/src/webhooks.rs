//! The sandbox as a webhook sender: for every change a test hook makes, the notifications
//! the real CRM would send, delivered the way it delivers them.
//!
//! HubSpot: a POST of a JSON array of at most 100 events, signed with the app's client
//! secret (`X-HubSpot-Signature-v3` over method, URL, body and timestamp, plus the old v1
//! signature beside it), at most 10 requests in flight, each retried on any non-2xx answer or
//! a timeout with `attemptNumber` raised, until the retry schedule runs out. Pipedrive (v2):
//! one event per POST with the webhook's basic auth, `meta.attempt` counting from 1.
//!
//! The ground truth (`GET /_sandbox/webhooks`) lists every event built, as first sent, with
//! whether a delivery of it was acknowledged. For de-duplication tests the sender can resend
//! acknowledged batches (`POST /_sandbox/webhooks/resend`) and give HubSpot events ids that
//! repeat across subscriptions (`collide_ids`), as HubSpot's do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where and how the sandbox sends webhooks.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where requests go.
    pub url: String,
    /// The URL HubSpot signs (the public one, when `url` is a proxy's inside address).
    pub signed_url: Option<String>,
    /// HubSpot's app client secret.
    pub secret: String,
    /// Pipedrive's basic-auth user and password.
    pub user: String,
    pub password: String,
    /// Waits before each retry; the real HubSpot spreads 10 retries over a day, Pipedrive
    /// retries after 3 s, 30 s and 150 s.
    pub retry_schedule: Vec<Duration>,
    /// How long a request may take before it counts as failed (HubSpot 5 s, Pipedrive 10 s).
    pub timeout: Duration,
    /// HubSpot event ids counted per subscription, so that they repeat across subscriptions.
    pub collide_ids: bool,
}

/// What the sender has done, in `/_sandbox/stats`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct WebhookStats {
    /// Events built.
    pub events: u64,
    /// Batches (HubSpot) or events (Pipedrive) to deliver.
    pub batches: u64,
    /// Requests made, retries included.
    pub requests: u64,
    /// Requests answered 2xx.
    pub acknowledged: u64,
    /// Requests that failed (non-2xx, refused connection, timeout).
    pub failed: u64,
    /// Batches given up after the last retry.
    pub gave_up: u64,
    /// Batches sent again on demand, and the events they hold.
    pub resent: u64,
    pub resent_events: u64,
    /// Batches still being delivered.
    pub in_flight: u64,
}

/// One event of the ground truth.
#[derive(Debug, Clone, serde::Serialize)]
struct Sent {
    event: Value,
    acknowledged: bool,
}

/// The sender.
pub struct Sender {
    config: WebhookConfig,
    client: reqwest::Client,
    permits: Arc<tokio::sync::Semaphore>,
    stats: Mutex<WebhookStats>,
    truth: Mutex<Vec<Sent>>,
    /// Acknowledged batches, by their events' places in the ground truth.
    delivered: Mutex<Vec<Vec<usize>>>,
    next_id: AtomicU64,
    ids_by_subscription: Mutex<std::collections::HashMap<u64, u64>>,
}

/// HubSpot sends at most this many events per request.
const HUBSPOT_BATCH: usize = 100;
/// HubSpot keeps at most this many requests in flight per account.
const IN_FLIGHT: usize = 10;

impl Sender {
    pub fn new(config: WebhookConfig) -> Arc<Sender> {
        let client = reqwest::Client::builder().timeout(config.timeout).build().expect("an HTTP client");
        Arc::new(Sender {
            config,
            client,
            permits: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            stats: Default::default(),
            truth: Default::default(),
            delivered: Default::default(),
            next_id: AtomicU64::new(1),
            ids_by_subscription: Default::default(),
        })
    }

    pub fn stats(&self) -> WebhookStats {
        self.stats.lock().expect("webhook stats").clone()
    }

    /// Every event built, as first sent, with whether it was acknowledged.
    pub fn ground_truth(&self) -> Value {
        json!({"events": *self.truth.lock().expect("webhook truth")})
    }

    /// A HubSpot event id for `subscription`.
    pub fn event_id(&self, subscription: u64) -> u64 {
        if self.config.collide_ids {
            let mut ids = self.ids_by_subscription.lock().expect("event ids");
            let next = ids.entry(subscription).or_insert(1);
            *next += 1;
            *next - 1
        } else {
            self.next_id.fetch_add(1, Ordering::Relaxed)
        }
    }

    /// Sends HubSpot events, in batches of at most 100.
    pub fn send_hubspot(self: &Arc<Self>, events: Vec<Value>) {
        for chunk in events.chunks(HUBSPOT_BATCH) {
            let places = self.record(chunk);
            self.deliver(places, Flavor::Hubspot, 0);
        }
    }

    /// Sends Pipedrive events, one per request.
    pub fn send_pipedrive(self: &Arc<Self>, events: Vec<Value>) {
        for event in events {
            let places = self.record(std::slice::from_ref(&event));
            self.deliver(places, Flavor::Pipedrive, 0);
        }
    }

    /// Sends the last `count` acknowledged batches again (all of them without a count).
    pub fn resend(self: &Arc<Self>, count: Option<usize>, pipedrive: bool) -> usize {
        let batches: Vec<Vec<usize>> = {
            let delivered = self.delivered.lock().expect("delivered");
            let skip = count.map_or(0, |c| delivered.len().saturating_sub(c));
            delivered[skip..].to_vec()
        };
        let flavor = if pipedrive { Flavor::Pipedrive } else { Flavor::Hubspot };
        let mut stats = self.stats.lock().expect("webhook stats");
        stats.resent += batches.len() as u64;
        stats.resent_events += batches.iter().map(|b| b.len() as u64).sum::<u64>();
        drop(stats);
        let n = batches.len();
        for places in batches {
            self.deliver(places, flavor, 1);
        }
        n
    }

    fn record(&self, events: &[Value]) -> Vec<usize> {
        let mut truth = self.truth.lock().expect("webhook truth");
        let start = truth.len();
        truth.extend(events.iter().map(|e| Sent { event: e.clone(), acknowledged: false }));
        let mut stats = self.stats.lock().expect("webhook stats");
        stats.events += events.len() as u64;
        stats.batches += 1;
        (start..truth.len()).collect()
    }

    /// Delivers one batch in the background: attempts until acknowledged or out of retries.
    fn deliver(self: &Arc<Self>, places: Vec<usize>, flavor: Flavor, first_attempt: u64) {
        let sender = self.clone();
        self.stats.lock().expect("webhook stats").in_flight += 1;
        tokio::spawn(async move {
            let events: Vec<Value> = {
                let truth = sender.truth.lock().expect("webhook truth");
                places.iter().map(|&p| truth[p].event.clone()).collect()
            };
            let mut acknowledged = false;
            for attempt in first_attempt..=first_attempt + sender.config.retry_schedule.len() as u64 {
                if attempt > first_attempt {
                    let wait = sender.config.retry_schedule[(attempt - first_attempt - 1) as usize];
                    tokio::time::sleep(wait).await;
                }
                let Ok(_permit) = sender.permits.acquire().await else { break };
                let ok = sender.attempt(&events, flavor, attempt).await;
                let mut stats = sender.stats.lock().expect("webhook stats");
                stats.requests += 1;
                if ok {
                    stats.acknowledged += 1;
                    acknowledged = true;
                    break;
                }
                stats.failed += 1;
            }
            let mut stats = sender.stats.lock().expect("webhook stats");
            stats.in_flight -= 1;
            if acknowledged {
                drop(stats);
                let mut truth = sender.truth.lock().expect("webhook truth");
                for &p in &places {
                    truth[p].acknowledged = true;
                }
                drop(truth);
                sender.delivered.lock().expect("delivered").push(places);
            } else {
                stats.gave_up += 1;
            }
        });
    }

    /// One request; whether it was answered 2xx.
    async fn attempt(&self, events: &[Value], flavor: Flavor, attempt: u64) -> bool {
        let request = match flavor {
            Flavor::Hubspot => {
                let numbered: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e["attemptNumber"] = json!(attempt);
                        e
                    })
                    .collect();
                let body = serde_json::to_vec(&numbered).expect("JSON");
                let timestamp = chrono::Utc::now().timestamp_millis().to_string();
                let url = self.config.signed_url.as_deref().unwrap_or(&self.config.url);
                self.client
                    .post(&self.config.url)
                    .header("content-type", "application/json")
                    .header("X-HubSpot-Signature-v3", v3_signature(&self.config.secret, url, &body, &timestamp))
                    .header("X-HubSpot-Request-Timestamp", timestamp)
                    .header("X-HubSpot-Signature", v1_signature(&self.config.secret, &body))
                    .header("X-HubSpot-Signature-Version", "v1")
                    .body(body)
            }
            Flavor::Pipedrive => {
                let mut event = events[0].clone();
                event["meta"]["attempt"] = json!(attempt + 1);
                let credentials = format!("{}:{}", self.config.user, self.config.password);
                self.client
                    .post(&self.config.url)
                    .header("content-type", "application/json")
                    .header(
                        "authorization",
                        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)),
                    )
                    .body(serde_json::to_vec(&event).expect("JSON"))
            }
        };
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }
}

/// HubSpot's subscription object name of a type (`object` for the generic subscriptions).
fn hubspot_object(type_id: &str) -> &'static str {
    match type_id {
        "0-1" => "contact",
        "0-2" => "company",
        "0-3" => "deal",
        "0-5" => "ticket",
        "0-7" => "product",
        "0-8" => "line_item",
        _ => "object",
    }
}

/// A stable subscription id for a subscription type (and its property).
fn subscription_id(subscription: &str, property: Option<&str>) -> u64 {
    let digest = Sha256::new().chain_update(subscription).chain_update(property.unwrap_or("")).finalize();
    100_000 + u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 900_000
}

/// The HubSpot app the sandbox's subscriptions belong to.
const APP_ID: u64 = 4_250_321;

impl Sender {
    /// One HubSpot event of `kind` (`propertyChange`, `deletion`, `merge`, ...) about a
    /// record of type `type_id`, with the kind's own fields in `extra`.
    pub fn hubspot_event(
        &self,
        portal: i64,
        type_id: &str,
        kind: &str,
        object_id: &str,
        at_ms: i64,
        extra: Value,
    ) -> Value {
        let mut object = hubspot_object(type_id);
        if kind == "associationChange" && object == "product" {
            object = "object";
        }
        let subscription = format!("{object}.{kind}");
        let property = extra.get("propertyName").and_then(Value::as_str);
        let subscription_id = subscription_id(&format!("{type_id}/{subscription}"), property);
        let mut e = json!({
            "eventId": self.event_id(subscription_id),
            "subscriptionId": subscription_id,
            "portalId": portal,
            "appId": APP_ID,
            "occurredAt": at_ms,
            "subscriptionType": subscription,
            "attemptNumber": 0,
            "changeSource": "CRM",
        });
        if kind != "associationChange" {
            e["objectId"] = object_id.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(object_id));
        }
        if object == "object" {
            e["objectTypeId"] = json!(type_id);
        }
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                e[k] = v;
            }
        }
        e
    }

    /// HubSpot's events for changes of records of one type: `kind` is `propertyChange` (with
    /// the property and its new value) or `deletion`; `changes` are record ids with the
    /// epoch milliseconds they changed at.
    pub fn hubspot_events(
        &self,
        portal: i64,
        type_id: &str,
        kind: &str,
        property: Option<(&str, &str)>,
        changes: &[(String, i64)],
    ) -> Vec<Value> {
        let extra = match property {
            Some((name, value)) => json!({"propertyName": name, "propertyValue": value}),
            None if kind == "deletion" => json!({"changeFlag": "DELETED"}),
            None => json!({}),
        };
        changes.iter().map(|(id, at)| self.hubspot_event(portal, type_id, kind, id, *at, extra.clone())).collect()
    }

    /// One Pipedrive v2 event of `company_id` saying `change`.
    pub fn pipedrive_event(&self, company_id: i64, change: PipedriveChange<'_>) -> Value {
        let PipedriveChange { entity, action, id, at, data, previous, meta } = change;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut event = json!({
            "meta": {
                "action": action, "entity": entity, "entity_id": id,
                "id": uuid(company_id as u64 ^ (n << 20)), "correlation_id": uuid(n),
                "company_id": company_id.to_string(), "user_id": "1", "webhook_id": "1",
                "webhook_owner_id": "1", "is_bulk_edit": false, "type": "general", "version": "2.0",
                "change_source": "app", "attempt": 1, "host": "sandbox.pipedrive.com",
                "timestamp": crate::time::iso(at), "permitted_user_ids": ["1"],
            },
            "data": data,
            "previous": previous,
        });
        if let Value::Object(fields) = meta {
            for (k, v) in fields {
                event["meta"][k] = v;
            }
        }
        event
    }

    /// Pipedrive's v2 `change` events: `changes` are record ids with the instant they
    /// changed at, the record's changed fields now and before.
    pub fn pipedrive_events(
        &self,
        company_id: i64,
        entity: &str,
        changes: Vec<(String, chrono::DateTime<chrono::Utc>, Value, Value)>,
    ) -> Vec<Value> {
        changes
            .into_iter()
            .map(|(id, at, data, previous)| {
                let change = PipedriveChange { entity, action: "change", id: &id, at, data, previous, meta: json!({}) };
                self.pipedrive_event(company_id, change)
            })
            .collect()
    }
}

/// What a Pipedrive v2 event says: `action` (`create`, `change`, `delete`) on record `id` of
/// `entity` at `at`, the record now (`data`, null on delete) and before (`previous`), and extra
/// `meta` fields (a merge's `merged_to_id`, `merged_from_id`).
pub struct PipedriveChange<'a> {
    pub entity: &'a str,
    pub action: &'a str,
    pub id: &'a str,
    pub at: chrono::DateTime<chrono::Utc>,
    pub data: Value,
    pub previous: Value,
    pub meta: Value,
}

#[derive(Debug, Clone, Copy)]
enum Flavor {
    Hubspot,
    Pipedrive,
}

/// HubSpot's v3 signature: base64 HMAC-SHA256 of `POST` + URL + body + timestamp.
fn v3_signature(secret: &str, url: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(b"POST");
    mac.update(url.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// HubSpot's v1 signature: hex SHA-256 of secret + body.
fn v1_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(Sha256::new().chain_update(secret).chain_update(body).finalize())
}

/// A UUID-shaped id from a seed, for Pipedrive's `meta.id` and `correlation_id`.
pub fn uuid(seed: u64) -> String {
    let a = crate::generator::mix(seed);
    let b = crate::generator::mix(a ^ 0x5EED);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        8 | (b >> 62),
        (b >> 48) & 0xFFF,
        b & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_hubspots_published_examples() {
        let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
        let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            v1_signature(secret, body.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            v3_signature(
                secret,
                "https://www.example.com/webhook_uri",
                b"{'example_field':'example_value'}",
                "15000000"
            ),
            "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
        );
    }

    #[test]
    fn colliding_ids_repeat_per_subscription() {
        let config = WebhookConfig {
            url: String::new(),
            signed_url: None,
            secret: String::new(),
            user: String::new(),
            password: String::new(),
            retry_schedule: Vec::new(),
            timeout: Duration::from_secs(1),
            collide_ids: true,
        };
        let colliding = Sender::new(config.clone());
        assert_eq!((colliding.event_id(1), colliding.event_id(2), colliding.event_id(1)), (1, 1, 2));
        let unique = Sender::new(WebhookConfig { collide_ids: false, ..config });
        assert_eq!((unique.event_id(1), unique.event_id(2)), (1, 2));
        assert_ne!(uuid(1), uuid(2));
    }
}
