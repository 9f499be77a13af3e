//! Bad input and bad credentials: clear errors, the right exit codes, no secret in the
//! output, and no manifest that would make a failed export look complete.

use crate::support::*;

#[test]
fn a_rejected_token_exits_3_says_what_to_do_and_never_prints_the_token() {
    let sandbox = SandboxProcess::start(&["--token", "the-right-token", "--scale", "50"]);
    let dir = tempfile::tempdir().unwrap();
    let secret = "pat-na1-wrong-secret-0123456789";
    let out = run(crmdump()
        .args([
            "export",
            "--source",
            "hubspot",
            "--base-url",
            &sandbox.base_url,
            "--date",
            DATE,
        ])
        .args(["--dest", dir.path().to_str().unwrap()])
        .env("HUBSPOT_ACCESS_TOKEN", secret));
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("HUBSPOT_ACCESS_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret) && !String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(!dir.path().join(DATE).join("_manifest.json").exists());
}

#[test]
fn a_missing_token_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump().args([
        "export",
        "--source",
        "hubspot",
        "--dest",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HUBSPOT_ACCESS_TOKEN is not set"));
}

#[test]
fn an_unknown_object_type_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump()
        .args([
            "export",
            "--source",
            "sandbox",
            "--sandbox-scale",
            "10",
            "--objects",
            "contacts,unicorns",
        ])
        .args(["--dest", dir.path().to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unicorns") && stderr.contains("cars") && stderr.contains("line_items"),
        "{stderr}"
    );
}

#[test]
fn a_bad_size_is_refused_before_any_work() {
    let out = run(crmdump().args([
        "export",
        "--dest",
        "/tmp/never",
        "--max-file-size",
        "15 parsecs",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsecs"));
}

/// The same export through a sandbox in another process, as from a real account: the
/// contacts' 250 properties overflow one URL, so they must come through batch reads, and
/// no URL may exceed 8 KiB.
#[test]
fn a_separate_sandbox_exports_like_an_account_and_urls_stay_under_8_kib() {
    let sandbox = SandboxProcess::start(&["--scale", "250", "--seed", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump()
        .args([
            "export",
            "--source",
            "hubspot",
            "--base-url",
            &sandbox.base_url,
            "--date",
            DATE,
            "--rate-limit",
            "none",
        ])
        .args(["--dest", dir.path().to_str().unwrap()])
        .env("HUBSPOT_ACCESS_TOKEN", "any-token"));
    assert_success(&out);
    let stats = sandbox.stats();
    let max_url = stats["max_url_bytes"].as_u64().unwrap();
    assert!(max_url > 1000 && max_url <= 8192, "longest URL {max_url}");
    let batch_reads = stats["by_endpoint"]["POST /crm/v3/objects/{object_type}/batch/read"]
        .as_u64()
        .unwrap();
    assert_eq!(batch_reads, 3, "250 contacts need 3 batch reads: {stats}");
    let export = read_export(&dir.path().join(DATE), &["OBJECTS_CONTACTS"]);
    assert_eq!(
        export["manifest"]["requests"].as_u64(),
        stats["requests"].as_u64()
    );
    let (_, rows) = rows(&export, "OBJECTS_CONTACTS");
    assert_eq!(rows.len(), 250);
}
