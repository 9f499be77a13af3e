//! The sandbox answers like HubSpot and Pipedrive: every answer to the requests an exporter
//! (or any other client) makes is validated against the vendors' own OpenAPI specs, vendored under
//! `fixtures/specs/`, by an independent checker (`tests/reader/conformance.py`, openapi-core).
//! Where the live API departs from its spec, the checker follows the live API and says why.

use std::process::Command;

use crate::support::*;

/// Runs the checker against a sandbox started with `args`; returns its report (one line per
/// answer) after asserting that every answer conformed and that most were checked.
fn conformance(flavor: &str, args: &[&str], at_least: usize) -> String {
    let sandbox = SandboxProcess::start(args);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(python())
        .arg(format!("{root}/tests/reader/conformance.py"))
        .args([&sandbox.base_url, flavor, &format!("{root}/fixtures/specs")])
        .output()
        .expect("the conformance checker runs");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = report.lines().find(|l| l.contains("answers checked")).unwrap_or("no summary");
    assert!(
        out.status.success(),
        "{summary}\n{}\n{}",
        report.lines().filter(|l| l.starts_with("FAIL")).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // The checker really checked: the requests have an operation in the specs.
    let checked: usize = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(checked >= at_least, "{summary}");
    report
}

#[test]
fn the_hubspot_sandbox_answers_to_hubspots_openapi_specs() {
    let report = conformance("hubspot", &["--scale", "60"], 50);
    // The compatibility routes older clients use are among them and answered.
    for route in ["/crm/v3/objects/contact?", "/crm/v3/properties/contact", "associations=companies"] {
        assert!(report.lines().any(|l| l.starts_with("ok") && l.contains(route)), "{route} not answered:\n{report}");
    }
}

/// Every Pipedrive endpoint the sandbox serves, v1 and v2, pages of 100 records of every
/// entity, against Pipedrive's v1 and v2 specs.
#[test]
fn the_pipedrive_sandbox_answers_to_pipedrives_openapi_specs() {
    let report = conformance("pipedrive", &["--flavor", "pipedrive", "--scale", "400"], 30);
    for route in ["/api/v2/dealFields", "/api/v1/leads?", "/api/v1/notes?", "/changelog", "/api/v2/deals/products"] {
        assert!(report.lines().any(|l| l.starts_with("ok") && l.contains(route)), "{route} not answered:\n{report}");
    }
}

/// The legacy properties endpoints that older clients (singer's tap-hubspot, Airbyte's
/// source) call answer a bare array of definitions, the same as the v3 endpoint's.
#[test]
fn the_legacy_properties_endpoints_answer_like_the_v3_one() {
    let sandbox = SandboxProcess::start(&["--scale", "20"]);
    let get = |path: &str| -> serde_json::Value {
        let url = format!("{}{path}", sandbox.base_url);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new().get(&url).bearer_auth("any").send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json().await.unwrap()
        })
    };
    let v3 = get("/crm/v3/properties/deals");
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    let expected = names(&v3["results"]);
    assert!(expected.len() > 5);
    for legacy in ["/properties/v1/deals/properties", "/properties/v2/deals/properties"] {
        assert_eq!(names(&get(legacy)), expected, "{legacy}");
    }
    let one = get("/crm/v3/objects/deal?limit=1");
    let id = one["results"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(get(&format!("/crm/v3/objects/deals/{id}"))["id"], id);
}

/// The Pipedrive sandbox honours what its v2 spec offers other clients: `status` and
/// `pipeline_id` filters, `sort_by=update_time` in both directions, the `api_token` query
/// parameter, and the `x-daily-requests-left` header.
#[test]
fn the_pipedrive_sandbox_filters_and_sorts_as_its_spec_says() {
    let sandbox = SandboxProcess::start(&["--flavor", "pipedrive", "--scale", "120"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let get = |path: &str| -> (reqwest::header::HeaderMap, serde_json::Value) {
        let url = format!("{}{path}", sandbox.base_url);
        rt.block_on(async {
            let r = reqwest::Client::new().get(&url).header("x-api-token", "any").send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            (r.headers().clone(), r.json().await.unwrap())
        })
    };
    let data = |v: &serde_json::Value| v["data"].as_array().cloned().unwrap_or_default();
    let (headers, all) = get("/api/v2/deals?limit=500&status=open,won,lost");
    assert!(headers.contains_key("x-daily-requests-left"));
    let all = data(&all);
    let won = data(&get("/api/v2/deals?limit=500&status=won").1);
    assert!(!won.is_empty() && won.len() < all.len(), "{} won of {}", won.len(), all.len());
    assert!(won.iter().all(|d| d["status"] == "won"));
    assert_eq!(won.len(), all.iter().filter(|d| d["status"] == "won").count());
    let pipeline = all[0]["pipeline_id"].clone();
    let in_pipeline = data(&get(&format!("/api/v2/deals?limit=500&pipeline_id={pipeline}")).1);
    assert!(!in_pipeline.is_empty() && in_pipeline.iter().all(|d| d["pipeline_id"] == pipeline));
    let times = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter().map(|d| d["update_time"].as_str().unwrap().to_string()).collect()
    };
    let ascending = times(&data(&get("/api/v2/persons?limit=500&sort_by=update_time").1));
    let mut sorted = ascending.clone();
    sorted.sort();
    assert_eq!(ascending, sorted, "sort_by=update_time answers in update_time order");
    let descending = times(&data(&get("/api/v2/persons?limit=500&sort_by=update_time&sort_direction=desc").1));
    assert_eq!(descending, sorted.iter().rev().cloned().collect::<Vec<_>>());
    let with_query_token = rt.block_on(async {
        reqwest::get(format!("{}/api/v1/users/me?api_token=any", sandbox.base_url)).await.unwrap().status()
    });
    assert!(with_query_token.is_success(), "api_token in the query authenticates: {with_query_token}");
}
