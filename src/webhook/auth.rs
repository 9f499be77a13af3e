//! Authentication of webhook senders.
//!
//! HubSpot's v3 signature is an HMAC-SHA256, keyed with the app's client secret, of
//! `METHOD + URI + body + timestamp`, base64-encoded. The URI is the public `https://` URL
//! HubSpot called, which a listener behind a TLS-terminating proxy never sees: the caller
//! passes it. HubSpot decodes a fixed set of percent escapes in the URI before signing, and
//! a signature older than five minutes is refused, since a replay of it would otherwise be
//! accepted forever. The older v1 signature (SHA-256 of `secret + body`) carries no timestamp,
//! so replays cannot be refused: it is accepted only where the user allows it. Pipedrive has
//! no signature: the webhook's basic-auth credentials come with every request.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How old a HubSpot v3 signature may be (HubSpot's own limit).
pub const MAX_SIGNATURE_AGE_MS: i64 = 5 * 60 * 1000;

/// Why a request was refused (answered 401, nothing of it kept). Says nothing of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature header (X-HubSpot-Signature-v3, or X-HubSpot-Signature with v1 allowed)")]
    MissingSignature,
    #[error("the signature does not match the request")]
    BadSignature,
    #[error("the request timestamp is missing or not epoch milliseconds")]
    BadTimestamp,
    #[error("the signature is {age_ms} ms old, more than {MAX_SIGNATURE_AGE_MS} ms (a replay?)")]
    Stale { age_ms: i64 },
    #[error("the signature's timestamp is {ahead_ms} ms ahead of this clock, more than {MAX_SIGNATURE_AGE_MS} ms")]
    Future { ahead_ms: i64 },
    #[error("only a v1 signature, which cannot refuse replays; accepted only when v1 is allowed")]
    V1NotAllowed,
    #[error("missing or wrong basic-auth credentials")]
    BadCredentials,
}

impl Refusal {
    /// A short name, for counting refusals by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "missing_signature",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadTimestamp => "bad_timestamp",
            Refusal::Stale { .. } => "stale",
            Refusal::Future { .. } => "future",
            Refusal::V1NotAllowed => "v1_not_allowed",
            Refusal::BadCredentials => "bad_credentials",
        }
    }
}

/// The headers of a HubSpot request that bear on its authenticity.
#[derive(Debug, Default, Clone)]
pub struct HubSpotSignature<'a> {
    /// `X-HubSpot-Signature-v3` (base64).
    pub v3: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp` (epoch milliseconds).
    pub timestamp: Option<&'a str>,
    /// `X-HubSpot-Signature` (hex), with `X-HubSpot-Signature-Version`.
    pub legacy: Option<&'a str>,
    pub legacy_version: Option<&'a str>,
}

/// Checks a HubSpot request: the v3 signature when there is one, else v1 when `allow_v1`.
/// `uri` is the public URL HubSpot called, query included; `now_ms` the current epoch time.
pub fn verify_hubspot(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &HubSpotSignature,
    allow_v1: bool,
    now_ms: i64,
) -> Result<(), Refusal> {
    if let Some(v3) = signature.v3 {
        let timestamp = signature.timestamp.ok_or(Refusal::BadTimestamp)?;
        let sent_at: i64 = timestamp.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
        let age_ms = now_ms - sent_at;
        if age_ms > MAX_SIGNATURE_AGE_MS {
            return Err(Refusal::Stale { age_ms });
        }
        // A timestamp far ahead is as good as a replay kept for later: refused the same way.
        if -age_ms > MAX_SIGNATURE_AGE_MS {
            return Err(Refusal::Future { ahead_ms: -age_ms });
        }
        let expected = v3_signature(secret, method, uri, body, timestamp.trim());
        return equal(expected.as_bytes(), v3.trim().as_bytes());
    }
    match (signature.legacy, signature.legacy_version.unwrap_or("v1")) {
        (Some(_), "v1" | "V1") if !allow_v1 => Err(Refusal::V1NotAllowed),
        (Some(hex), "v1" | "V1") => {
            equal(v1_signature(secret, body).as_bytes(), hex.trim().to_ascii_lowercase().as_bytes())
        }
        _ => Err(Refusal::MissingSignature),
    }
}

/// HubSpot's v3 signature of a request (base64 HMAC-SHA256).
pub fn v3_signature(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(method.as_bytes());
    mac.update(decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// HubSpot's v1 signature of a body (lower-case hex SHA-256 of `secret + body`).
pub fn v1_signature(secret: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The URI as HubSpot signs it: only these escapes decoded, every other left as it is.
pub fn decode_uri(uri: &str) -> String {
    const DECODED: &[(&str, char)] = &[
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(escape)) {
            Some((_, c)) => out.push(*c),
            None => out.push_str(escape),
        }
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Checks Pipedrive's `Authorization: Basic ...` against the webhook's credentials.
pub fn verify_basic(user: &str, password: &str, authorization: Option<&str>) -> Result<(), Refusal> {
    let given = authorization
        .and_then(|a| {
            // The scheme is case-insensitive (RFC 7235): `Basic`, `basic`, `BASIC`.
            let (scheme, credentials) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(credentials)
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .ok_or(Refusal::BadCredentials)?;
    let expected = format!("{user}:{password}");
    equal(expected.as_bytes(), &given).map_err(|_| Refusal::BadCredentials)
}

/// Constant-time comparison, so that timing tells nothing of the expected value.
fn equal(expected: &[u8], given: &[u8]) -> Result<(), Refusal> {
    if expected.ct_eq(given).into() { Ok(()) } else { Err(Refusal::BadSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://www.example.com/webhook_uri";
    const BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

    fn v3<'a>(signature: &'a str, timestamp: &'a str) -> HubSpotSignature<'a> {
        HubSpotSignature { v3: Some(signature), timestamp: Some(timestamp), ..Default::default() }
    }

    #[test]
    fn hubspot_test_vectors() {
        // HubSpot's published examples.
        assert_eq!(
            v1_signature(SECRET, BODY.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        let body = "{'example_field':'example_value'}";
        assert_eq!(
            v3_signature(SECRET, "POST", URI, body.as_bytes(), "15000000"),
            "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
        );
        assert_eq!(
            v3_signature(SECRET, "POST", URI, BODY.as_bytes(), "1564113600000"),
            "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
        );
    }

    #[test]
    fn a_v3_request_is_accepted_only_fresh_and_unchanged() {
        let ts = "1564113600000";
        let sig = v3_signature(SECRET, "POST", URI, BODY.as_bytes(), ts);
        let now = 1564113600000 + 60_000;
        let check = |secret, uri, body: &str, sig: &HubSpotSignature, now| {
            verify_hubspot(secret, "POST", uri, body.as_bytes(), sig, false, now)
        };
        assert_eq!(check(SECRET, URI, BODY, &v3(&sig, ts), now), Ok(()));
        assert_eq!(check("other-secret", URI, BODY, &v3(&sig, ts), now), Err(Refusal::BadSignature));
        assert_eq!(
            check(SECRET, "https://www.example.com/other", BODY, &v3(&sig, ts), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(check(SECRET, URI, "[]", &v3(&sig, ts), now), Err(Refusal::BadSignature));
        assert_eq!(check(SECRET, URI, BODY, &v3(&sig, "1564113600001"), now), Err(Refusal::BadSignature));
        let six_minutes = 1564113600000 + 6 * 60_000;
        assert_eq!(check(SECRET, URI, BODY, &v3(&sig, ts), six_minutes), Err(Refusal::Stale { age_ms: 360_000 }));
        let ten_minutes_early = 1564113600000 - 10 * 60_000;
        assert_eq!(
            check(SECRET, URI, BODY, &v3(&sig, ts), ten_minutes_early),
            Err(Refusal::Future { ahead_ms: 600_000 })
        );
        assert_eq!(check(SECRET, URI, BODY, &v3(&sig, "soon"), now), Err(Refusal::BadTimestamp));
        assert_eq!(check(SECRET, URI, BODY, &HubSpotSignature::default(), now), Err(Refusal::MissingSignature));
    }

    #[test]
    fn v1_only_behind_the_flag() {
        let hex = v1_signature(SECRET, BODY.as_bytes());
        let sig = HubSpotSignature { legacy: Some(&hex), legacy_version: Some("v1"), ..Default::default() };
        let check = |allow| verify_hubspot(SECRET, "POST", URI, BODY.as_bytes(), &sig, allow, 0);
        assert_eq!(check(false), Err(Refusal::V1NotAllowed));
        assert_eq!(check(true), Ok(()));
        let wrong = HubSpotSignature { legacy: Some("00"), legacy_version: Some("v1"), ..Default::default() };
        assert_eq!(verify_hubspot(SECRET, "POST", URI, BODY.as_bytes(), &wrong, true, 0), Err(Refusal::BadSignature));
    }

    #[test]
    fn uris_are_decoded_as_hubspot_signs_them() {
        assert_eq!(decode_uri("https://x.test/hook%3Fa%3Db%2Cc%20d%2f"), "https://x.test/hook?a%3Db,c%20d/");
        assert_eq!(decode_uri("https://x.test/100%"), "https://x.test/100%");
        let raw = "https://x.test/hook?tag=a%2Cb";
        let ts = "1564113600000";
        let sig = v3_signature(SECRET, "POST", "https://x.test/hook?tag=a,b", b"[]", ts);
        assert_eq!(verify_hubspot(SECRET, "POST", raw, b"[]", &v3(&sig, ts), false, 1564113600000), Ok(()));
    }

    #[test]
    fn pipedrive_basic_auth() {
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("crm:s3cret"));
        assert_eq!(verify_basic("crm", "s3cret", Some(&header)), Ok(()));
        for scheme in ["BASIC", "basic", "bAsIc"] {
            let header = header.replacen("Basic", scheme, 1);
            assert_eq!(verify_basic("crm", "s3cret", Some(&header)), Ok(()), "{scheme}");
        }
        assert_eq!(verify_basic("crm", "other", Some(&header)), Err(Refusal::BadCredentials));
        assert_eq!(verify_basic("crm", "s3cret", None), Err(Refusal::BadCredentials));
        assert_eq!(verify_basic("crm", "s3cret", Some("Bearer x")), Err(Refusal::BadCredentials));
    }
}
