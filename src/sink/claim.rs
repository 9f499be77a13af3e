//! A day folder belongs to one export: what a run checks before it touches a date that is
//! already committed, and how a destination URL names the account it holds.
//!
//! A run for another source or account into a committed day folder would replace that
//! export's manifest and combined tables with its own and strand the other's table folders;
//! a run that reads fewer streams would silently drop the others from the day, after the
//! watermarks already said they were delivered. Both are refused here, before anything is
//! written.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Sink;
use super::manifest::Manifest;
use crate::error::{Error, Result};

/// What a run is an export of.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub source: &'a str,
    pub account: &'a str,
    /// The streams the run reads (object and event tables).
    pub streams: &'a [String],
}

/// How a run relates to the committed export of its date.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nothing committed for the date: the folder is the run's.
    Free,
    /// The same export again, reading at least the streams the committed one read.
    Rerun,
    /// The same account, but the committed export read these streams and this run would
    /// not (and these object types, to read them again).
    Narrower { streams: Vec<String>, objects: Vec<String> },
}

/// Checks `owner` against the committed manifest of the date (`None` when there is none).
/// Another source or account is an error (a usage error: exit 2) naming both and what to do.
pub fn check(committed: Option<&Manifest>, owner: &Owner<'_>, place: &str) -> Result<Claim> {
    let Some(m) = committed else {
        return Ok(Claim::Free);
    };
    if m.source != owner.source || m.account != owner.account {
        return Err(Error::Config(format!(
            "{place} holds the committed export of {} account {} for {}; this run reads {} account {}, and nothing was touched. \
             Give each account its own destination, for example --dest 's3://bucket/crm/{{source}}/{{account}}'",
            m.source, m.account, m.export_date, owner.source, owner.account
        )));
    }
    let streams: Vec<String> = m.streams.iter().filter(|s| !owner.streams.contains(s)).cloned().collect();
    if streams.is_empty() {
        return Ok(Claim::Rerun);
    }
    Ok(Claim::Narrower { streams, objects: m.objects.clone() })
}

/// Which account's run may write a date's day folder: a small object per date, written with a
/// conditional create, so that of two accounts racing for one date (each holding its own
/// lease) one wins and the other refuses before it writes anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateClaim {
    pub source: String,
    pub account: String,
}

/// Where the claim of `date` lives.
pub fn date_claim_key(date: &str) -> String {
    format!("_crmdump/claims/{date}.json")
}

/// The name of the lease of `source`'s `account` (its `_crmdump/lease-<name>` object or lock).
pub fn lease_name(source: &str, account: &str) -> String {
    format!("{source}-{}", safe_segment(account))
}

/// Claims `date` for `owner` (who holds its own lease). A claim of the same account is the
/// owner's already; another account's is taken over only when no run of that account holds
/// its lease (a claim left by a run that ended, committed or not); otherwise the run is
/// refused (exit 2) before anything is written. The committed manifest is checked after the
/// claim is held ([`check`]): once held, nobody else can commit the date.
pub async fn take_date(sink: &Sink, date: &str, owner: &Owner<'_>, place: &str) -> Result<()> {
    let key = date_claim_key(date);
    let ours = DateClaim { source: owner.source.into(), account: owner.account.into() };
    let body = Bytes::from(serde_json::to_vec(&ours).expect("a claim serializes"));
    loop {
        if sink.create(&key, body.clone()).await?.is_some() {
            return Ok(());
        }
        let Some((bytes, version)) = sink.get_versioned(&key).await? else { continue };
        let theirs: Option<DateClaim> = serde_json::from_slice(&bytes).ok();
        if theirs.as_ref() == Some(&ours) {
            return Ok(());
        }
        if let Some(other) = &theirs
            && super::lease::is_held(sink, &lease_name(&other.source, &other.account)).await?
        {
            return Err(Error::Config(format!(
                "{place}: {} account {} is exporting {date} into this destination right now; this run reads {} account {}, \
                 and nothing was touched. Give each account its own destination, for example \
                 --dest 's3://bucket/crm/{{source}}/{{account}}' (if that run is dead, `crmdump lease break` removes its lease)",
                other.source, other.account, owner.source, owner.account
            )));
        }
        if sink.update(&key, body.clone(), &version).await?.is_some() {
            return Ok(());
        }
    }
}

/// Gives back the claim of `date` when it is still `owner`'s (at the end of its run, which
/// still holds its lease): the committed manifest says whose the date is from then on.
pub async fn release_date(sink: &Sink, date: &str, owner: &Owner<'_>) -> Result<()> {
    let key = date_claim_key(date);
    let ours = DateClaim { source: owner.source.into(), account: owner.account.into() };
    match sink.get(&key).await? {
        Some(bytes) if serde_json::from_slice::<DateClaim>(&bytes).ok().as_ref() == Some(&ours) => {
            sink.delete(&key).await
        }
        _ => Ok(()),
    }
}

/// The refusal of a narrower re-run without `--force`.
pub fn narrower_refusal(place: &str, date: &str, streams: &[String]) -> Error {
    let shown: Vec<&str> = streams.iter().take(5).map(String::as_str).collect();
    let more =
        if streams.len() > shown.len() { format!(" and {} more", streams.len() - shown.len()) } else { String::new() };
    Error::Config(format!(
        "the committed export of {date} in {place} also read {}{more}, which this run would drop from the day folder \
         (the watermarks already count them as delivered); nothing was touched. Run with the same --objects as that export, \
         or add --force to re-read the missing streams whole",
        shown.join(", ")
    ))
}

/// An account id as one segment of a key: letters, digits, `-` and `_` kept, anything else
/// (a `/`, a `..`) made `_`.
pub fn safe_segment(account: &str) -> String {
    account.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// `dest` with `{source}` and `{account}` replaced; any other `{...}` is an error.
pub fn resolve_dest(dest: &str, source: &str, account: &str) -> Result<String> {
    let resolved = dest.replace("{source}", source).replace("{account}", &safe_segment(account));
    if let Some(start) = resolved.find('{') {
        let end = resolved[start..].find('}').map_or(resolved.len(), |e| start + e + 1);
        return Err(Error::Config(format!(
            "--dest '{dest}' holds the placeholder '{}', which crmdump does not know: use {{source}} and {{account}}",
            &resolved[start..end]
        )));
    }
    Ok(resolved)
}

/// The part of `dest` before its first placeholder, cut at a folder: the root every account's
/// destination lies under (`s3://lake/crm/{source}/{account}` -> `s3://lake/crm`).
pub fn static_root(dest: &str) -> &str {
    match dest.find('{') {
        None => dest,
        Some(at) => match dest[..at].trim_end_matches(|c| c != '/').trim_end_matches('/') {
            "" => ".",
            root => root,
        },
    }
}

/// Whether `dest` names placeholders to resolve after discovery.
pub fn has_placeholders(dest: &str) -> bool {
    dest.contains('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(source: &str, account: &str, streams: &[&str]) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "crmdump_version": "0", "source": source, "account": account,
            "objects": ["0-1", "0-3"], "streams": streams, "export_date": "2026-11-20", "mode": "full",
            "started_at": "", "finished_at": "", "format": "csv.gz", "tables": [], "requests": 0, "retries": 0,
            "warnings": []
        }))
        .unwrap()
    }

    #[test]
    fn another_account_is_refused_and_a_narrower_rerun_is_told_apart() {
        let streams = vec!["OBJECTS_CONTACTS".to_string()];
        let owner = Owner { source: "hubspot", account: "1", streams: &streams };
        assert_eq!(check(None, &owner, "x/2026-11-20").unwrap(), Claim::Free);
        let other = manifest("pipedrive", "acme", &["OBJECTS_PERSONS"]);
        let e = check(Some(&other), &owner, "x/2026-11-20").unwrap_err();
        assert_eq!(e.class().exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("pipedrive account acme") && text.contains("hubspot account 1"), "{text}");
        let same = manifest("hubspot", "1", &["OBJECTS_CONTACTS"]);
        assert_eq!(check(Some(&same), &owner, "x").unwrap(), Claim::Rerun);
        let wider = manifest("hubspot", "1", &["OBJECTS_CONTACTS", "OBJECTS_DEALS"]);
        assert_eq!(
            check(Some(&wider), &owner, "x").unwrap(),
            Claim::Narrower { streams: vec!["OBJECTS_DEALS".into()], objects: vec!["0-1".into(), "0-3".into()] }
        );
        // A manifest of an older crmdump names no streams: nothing to compare.
        assert_eq!(check(Some(&manifest("hubspot", "1", &[])), &owner, "x").unwrap(), Claim::Rerun);
    }

    #[test]
    fn placeholders_resolve_and_unknown_ones_are_refused() {
        assert_eq!(resolve_dest("s3://lake/{source}/{account}", "hubspot", "123").unwrap(), "s3://lake/hubspot/123");
        assert_eq!(resolve_dest("./x/{account}", "pipedrive", "a/b c").unwrap(), "./x/a_b_c");
        assert!(resolve_dest("./x/{portal}", "hubspot", "1").unwrap_err().to_string().contains("{portal}"));
        assert!(has_placeholders("s3://x/{account}") && !has_placeholders("./x"));
        assert_eq!(static_root("s3://lake/crm/{source}/{account}"), "s3://lake/crm");
        assert_eq!(static_root("./out/x-{account}"), "./out");
        assert_eq!(static_root("s3://lake/crm"), "s3://lake/crm");
    }
}
