//! Instants as the sandbox reads and writes them. Written apart from the exporter's own
//! parsing on purpose: the sandbox is the ground truth the exporter is checked against, so
//! it shares no code with it.

use chrono::{DateTime, SecondsFormat, Utc};

/// HubSpot's form: RFC 3339 in UTC with milliseconds (`2026-11-23T10:00:00.000Z`).
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An instant as HubSpot accepts one in a filter or a hook: epoch milliseconds or RFC 3339.
pub fn instant(text: &str) -> Option<DateTime<Utc>> {
    match text.parse::<i64>() {
        Ok(ms) => DateTime::from_timestamp_millis(ms),
        Err(_) => text.parse::<DateTime<chrono::FixedOffset>>().ok().map(|t| t.with_timezone(&Utc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_from_milliseconds_and_rfc_3339() {
        let t = instant("2026-11-23T10:00:00.250+01:00").unwrap();
        assert_eq!(iso(t), "2026-11-23T09:00:00.250Z");
        assert_eq!(instant(&t.timestamp_millis().to_string()), Some(t));
        assert_eq!(instant("yesterday"), None);
    }
}
