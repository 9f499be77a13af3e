//! `crmdump status`: a destination with a gap, a killed run and a stale lease, two accounts
//! found through a `{source}/{account}` template, and `--max-age` as a monitor uses it.

use serde_json::Value;

use crate::support::*;

fn status(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = run(crmdump().arg("status").args(args));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = if args.contains(&"--json") {
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    } else {
        Vec::new()
    };
    (out.status.code(), json, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn status_reports_dates_gaps_killed_runs_stale_leases_and_ages() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("{source}/{account}");
    let export = |date: &str, flavor: &str| {
        assert_success(&run(crmdump()
            .args(["export", "--source", "sandbox", "--sandbox-scale", "20", "--sandbox-flavor", flavor])
            .args(["--sandbox-anchor", ANCHOR, "--no-history", "--date", date, "--dest", template.to_str().unwrap()])));
    };
    export("2026-11-20", "hubspot");
    export("2026-11-23", "hubspot");
    export("2026-11-21", "pipedrive");
    let hubspot = std::fs::read_dir(dir.path().join("hubspot")).unwrap().next().unwrap().unwrap().path();
    // A run of 2026-11-24 killed after writing a part; a lease its process left behind.
    let killed = hubspot.join("2026-11-24/OBJECTS");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::copy(hubspot.join("2026-11-23/OBJECTS/part-00000.csv.gz"), killed.join("part-00000.csv.gz")).unwrap();
    let account = hubspot.file_name().unwrap().to_str().unwrap().to_string();
    let lease = hubspot.join(format!("_crmdump/lease-hubspot-{account}.lock"));
    std::fs::write(
        &lease,
        serde_json::json!({"holder": "x", "host": "elsewhere", "pid": 1, "command": "export",
                           "started_at": "2026-11-24T02:00:00Z", "renewed_at": "2026-11-24T02:00:00Z"})
        .to_string(),
    )
    .unwrap();

    let (code, roots, text) = status(&["--json", template.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(roots.len(), 2, "both accounts the template fills: {text}");
    let hub = roots.iter().find(|r| r["accounts"][0]["source"] == "hubspot").unwrap();
    let a = &hub["accounts"][0];
    let dates: Vec<&str> = a["dates"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-11-20", "2026-11-23"]);
    assert_eq!(a["missing"], serde_json::json!(["2026-11-21", "2026-11-22"]));
    assert_eq!(a["sandbox"], true);
    assert_eq!(a["dates"][0]["mode"], "full");
    assert!(a["dates"][1]["rows"].as_u64().unwrap() > 0 && a["dates"][1]["requests"].as_u64().unwrap() > 0);
    assert_eq!(hub["uncommitted"], serde_json::json!(["2026-11-24"]));
    let leases = hub["leases"].as_array().unwrap();
    assert!(
        leases.iter().any(|l| l["state"] == "stale" && l["holder"].as_str().unwrap().contains("elsewhere")),
        "{leases:?}"
    );
    let pd = roots.iter().find(|r| r["accounts"][0]["source"] == "pipedrive").unwrap();
    assert_eq!(pd["accounts"][0]["dates"][0]["date"], "2026-11-21");

    // Text for people.
    let (_, _, text) = status(&[hubspot.to_str().unwrap()]);
    for expected in ["missing: 2026-11-21, 2026-11-22", "2026-11-24: files without a manifest", "stale"] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    // A monitor: fresh enough, then not.
    let (code, _, text) = status(&["--max-age", "1h", template.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let (code, _, text) = status(&["--max-age", "1s", template.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("older than --max-age") && text.contains("pipedrive"), "{text}");
    // An empty root is stale for a monitor; a template nothing fills is an error.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, text) = status(&["--max-age", "26h", empty.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    let (code, _, _) = status(&[empty.join("{source}/{account}").to_str().unwrap()]);
    assert_ne!(code, Some(0));
}
