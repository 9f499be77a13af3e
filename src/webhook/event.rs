//! The events of an authenticated webhook request: which account each belongs to and the
//! key that makes a delivery of it the same event as any other delivery of it.
//!
//! HubSpot posts a JSON array of up to 100 events, each with `portalId` (the account),
//! `subscriptionId` and `eventId`; `eventId` alone is not unique, so an event is
//! `(portal, subscription, event id)`. It retries a whole batch, with `attemptNumber` raised,
//! which is no part of the key. Pipedrive's v2 posts one event per request, keyed by its
//! `meta.id` (a UUID), the account being `meta.company_id`. Pipedrive's v1 has no event id: its
//! key is the webhook, the object, the action and the microsecond timestamp.
//!
//! A body that is not one of these shapes is no event: the listener keeps it aside as a dead
//! letter instead of losing it or refusing an authentic sender, who would only retry it.

use serde_json::Value;
use serde_json::value::RawValue;

/// One event of a webhook request.
#[derive(Debug, Clone)]
pub struct Event {
    /// The account it belongs to: HubSpot's portal id, Pipedrive's company id.
    pub account: String,
    /// Equal for every delivery of the same event, different for any other event.
    pub key: String,
    /// When it happened (epoch milliseconds), when the sender says.
    pub occurred_at_ms: Option<i64>,
    /// `contact.propertyChange`, `deal.change`, ...
    pub kind: String,
    /// The record it is about, when it names one.
    pub object_id: Option<String>,
    /// The event's bytes as sent, insignificant whitespace removed ([`minified`]).
    pub body: Box<RawValue>,
}

/// `json` (valid JSON) without insignificant whitespace: every token (numbers, strings with
/// their escapes, keys in their order) exactly as written, so that a journal keeps an event as
/// its sender sent it, on one line (JSON strings hold no raw line breaks).
pub fn minified(json: &str) -> Box<RawValue> {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    RawValue::from_string(out).expect("whitespace removed outside strings leaves valid JSON")
}

/// Why a body is no event (it goes to the dead letters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook event: {0}")]
pub struct Unparseable(pub String);

/// Text of a JSON value that is an id: numbers and strings alike.
fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The events of a HubSpot request body.
pub fn hubspot(body: &[u8]) -> Result<Vec<Event>, Unparseable> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| Unparseable(format!("not JSON: {e}")))?;
    if !parsed.is_array() {
        return Err(Unparseable("HubSpot sends a JSON array of events".into()));
    }
    // Each event's own bytes, beside its parsed fields.
    let raw: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| Unparseable(format!("not JSON: {e}")))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let event: Value = serde_json::from_str(raw.get()).map_err(|e| Unparseable(format!("event {i}: {e}")))?;
            let field = |k: &str| id_text(event.get(k));
            let missing = |k: &str| Unparseable(format!("event {i} has no {k}"));
            let account = field("portalId").ok_or_else(|| missing("portalId"))?;
            let subscription = field("subscriptionId").ok_or_else(|| missing("subscriptionId"))?;
            let event_id = field("eventId").ok_or_else(|| missing("eventId"))?;
            // HubSpot's reference calls it `eventType`; its examples send `subscriptionType`.
            let kind = event
                .get("subscriptionType")
                .or_else(|| event.get("eventType"))
                .and_then(Value::as_str)
                .ok_or_else(|| missing("subscriptionType"))?
                .to_string();
            Ok(Event {
                key: format!("{account}/{subscription}/{event_id}"),
                account,
                occurred_at_ms: event.get("occurredAt").and_then(Value::as_i64),
                kind,
                object_id: field("objectId"),
                body: minified(raw.get()),
            })
        })
        .collect()
}

/// The event of a Pipedrive request body (v2, or v1).
pub fn pipedrive(body: &[u8]) -> Result<Vec<Event>, Unparseable> {
    let event: Value = serde_json::from_slice(body).map_err(|e| Unparseable(format!("not JSON: {e}")))?;
    let text = std::str::from_utf8(body).map_err(|e| Unparseable(format!("not UTF-8: {e}")))?;
    let meta = event.get("meta").filter(|m| m.is_object()).ok_or_else(|| Unparseable("no meta object".into()))?;
    let field = |k: &str| id_text(meta.get(k));
    let missing = |k: &str| Unparseable(format!("meta has no {k}"));
    let account = field("company_id").ok_or_else(|| missing("company_id"))?;
    let v1 = meta.get("v").is_some() || event.get("v").is_some() || meta.get("object").is_some();
    let (key, kind, object_id) = if v1 {
        let object = meta.get("object").and_then(Value::as_str).ok_or_else(|| missing("object"))?;
        let action = meta.get("action").and_then(Value::as_str).ok_or_else(|| missing("action"))?;
        let time = field("timestamp_micro").or_else(|| field("timestamp")).ok_or_else(|| missing("timestamp"))?;
        let webhook = field("webhook_id").unwrap_or_default();
        let id = field("id");
        let key = format!("v1/{webhook}/{object}/{}/{action}/{time}", id.clone().unwrap_or_default());
        (key, format!("{object}.{action}"), id)
    } else {
        let id = field("id").ok_or_else(|| missing("id"))?;
        let entity = meta.get("entity").and_then(Value::as_str).ok_or_else(|| missing("entity"))?;
        let action = meta.get("action").and_then(Value::as_str).ok_or_else(|| missing("action"))?;
        (id, format!("{entity}.{action}"), field("entity_id"))
    };
    let occurred_at_ms = meta.get("timestamp").and_then(|t| match t {
        // v2's example is ISO 8601; its text says a 10-character (seconds) timestamp.
        Value::String(s) => crate::schema::parse_instant(s).map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64().map(|s| if s < 100_000_000_000 { s * 1000 } else { s }),
        _ => None,
    });
    Ok(vec![Event { account, key, occurred_at_ms, kind, object_id, body: minified(text.trim()) }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hubspot_events_are_keyed_by_portal_subscription_and_event_id() {
        let body = json!([
            {"eventId": 7, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1564113600000_i64,
             "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 123,
             "propertyName": "email", "propertyValue": "a@b.test"},
            {"eventId": 7, "subscriptionId": 2, "portalId": 62515, "occurredAt": 1564113600001_i64,
             "eventType": "contact.deletion", "attemptNumber": 3, "objectId": 124},
            {"eventId": 7, "subscriptionId": 1, "portalId": 99, "subscriptionType": "deal.creation", "objectId": 5}
        ]);
        let events = hubspot(body.to_string().as_bytes()).unwrap();
        let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["62515/1/7", "62515/2/7", "99/1/7"], "the same event id in other subscriptions and portals");
        assert_eq!(events[1].kind, "contact.deletion");
        assert_eq!(events[0].occurred_at_ms, Some(1564113600000));
        assert_eq!(events[2].account, "99");
        assert_eq!(events[0].object_id.as_deref(), Some("123"));
        // A retried delivery is the same event.
        let retried = json!([{"eventId": 7, "subscriptionId": 1, "portalId": 62515, "attemptNumber": 4,
                              "subscriptionType": "contact.propertyChange", "objectId": 123}]);
        assert_eq!(hubspot(retried.to_string().as_bytes()).unwrap()[0].key, events[0].key);
    }

    /// The journal keeps an event as sent: numbers, key order and escapes byte for byte, only
    /// the whitespace between tokens gone.
    #[test]
    fn events_keep_their_bytes_as_sent() {
        let body = "{ \"meta\": {\"id\": \"u-1\", \"company_id\": 7, \"entity\": \"deal\", \"action\": \"change\",\n \"entity_id\": \"5\"},\n \"data\": {\"value\": 1500.50, \"z\": 1e2, \"a\": 123456789012345678901234567890, \"s\": \"x \\\" \\u00e9\\n y\"} }";
        let event = &pipedrive(body.as_bytes()).unwrap()[0];
        assert_eq!(
            event.body.get(),
            r#"{"meta":{"id":"u-1","company_id":7,"entity":"deal","action":"change","entity_id":"5"},"data":{"value":1500.50,"z":1e2,"a":123456789012345678901234567890,"s":"x \" \u00e9\n y"}}"#
        );
        let batch = r#"[ {"eventId": 1, "subscriptionId": 2, "portalId": 3, "subscriptionType": "deal.propertyChange", "propertyValue": "1500.50", "amount": 1500.50} ]"#;
        let event = &hubspot(batch.as_bytes()).unwrap()[0];
        assert_eq!(
            event.body.get(),
            r#"{"eventId":1,"subscriptionId":2,"portalId":3,"subscriptionType":"deal.propertyChange","propertyValue":"1500.50","amount":1500.50}"#
        );
    }

    #[test]
    fn what_is_not_a_hubspot_batch_is_unparseable() {
        assert!(hubspot(b"not json").is_err());
        assert!(hubspot(br#"{"eventId": 1}"#).is_err());
        assert!(hubspot(br#"[{"eventId": 1, "subscriptionId": 2, "subscriptionType": "contact.creation"}]"#).is_err());
        assert!(hubspot(b"[]").unwrap().is_empty());
    }

    #[test]
    fn pipedrive_v2_is_keyed_by_meta_id_and_v1_by_its_fields() {
        let v2 = json!({
            "meta": {"action": "change", "entity": "deal", "entity_id": "42", "id": "b2c9f0a4-6a8e-4b35-9f3a-1d2e3f4a5b6c",
                     "company_id": "777", "webhook_id": "9", "timestamp": "2023-01-01T00:00:00.000Z", "attempt": 2, "version": "2.0"},
            "data": {"id": 42, "title": "Deal"}, "previous": {"title": "Old"}
        });
        let e = &pipedrive(v2.to_string().as_bytes()).unwrap()[0];
        assert_eq!(
            (e.account.as_str(), e.key.as_str(), e.kind.as_str()),
            ("777", "b2c9f0a4-6a8e-4b35-9f3a-1d2e3f4a5b6c", "deal.change")
        );
        assert_eq!(e.object_id.as_deref(), Some("42"));
        assert_eq!(e.occurred_at_ms, Some(1672531200000));
        let v1 = json!({"v": 1, "meta": {"v": 1, "action": "updated", "object": "deal", "id": 42, "company_id": 777,
                        "webhook_id": 9, "timestamp": 1672531200, "timestamp_micro": 1672531200123456_i64},
                        "current": {"id": 42}, "previous": {}});
        let e = &pipedrive(v1.to_string().as_bytes()).unwrap()[0];
        assert_eq!(e.key, "v1/9/deal/42/updated/1672531200123456");
        assert_eq!(e.occurred_at_ms, Some(1672531200000));
        assert!(pipedrive(br#"{"meta": {"id": "x"}}"#).is_err(), "no company");
        assert!(pipedrive(b"[1, 2]").is_err());
    }
}
