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
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
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
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
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

/// HubSpot's legacy company and deal endpoints (singer's tap-hubspot reads through them)
/// answer the records the v3 API answers, in the legacy shape: every live record once across
/// the offset pages, each property that has a value as `{value, timestamp, versions}` with
/// instants in epoch milliseconds, and the deal's associated companies as the v4 API gives them.
#[test]
fn the_legacy_company_and_deal_endpoints_answer_the_v3_records() {
    let sandbox = SandboxProcess::start(&["--scale", "120"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| -> serde_json::Value {
        let url = format!("{}{path}", sandbox.base_url);
        rt.block_on(async {
            let mut r = client.request(method, &url).bearer_auth("any");
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json().await.unwrap()
        })
    };
    let get = |path: &str| call(reqwest::Method::GET, path, None);
    let millis = |iso: &str| {
        chrono::DateTime::parse_from_rfc3339(iso)
            .unwrap_or_else(|e| panic!("{iso}: {e}"))
            .timestamp_millis()
            .to_string()
    };

    for (kind, paged, id_key, more_key, list_key) in [
        ("companies", "/companies/v2/companies/paged?limit=50&properties=name", "companyId", "has-more", "companies"),
        (
            "deals",
            "/deals/v1/deal/paged?limit=50&includeAllProperties=True&includeAssociations=True",
            "dealId",
            "hasMore",
            "deals",
        ),
    ] {
        let definitions = get(&format!("/crm/v3/properties/{kind}"));
        let types: std::collections::HashMap<String, String> = definitions["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["type"].as_str().unwrap().to_string()))
            .collect();
        let names: Vec<&str> = types.keys().map(String::as_str).collect();
        // Every live record once, through the offsets.
        let mut legacy = std::collections::BTreeMap::new();
        let mut offset = 0;
        loop {
            let page = get(&format!("{paged}&offset={offset}"));
            for r in page[list_key].as_array().unwrap() {
                assert!(legacy.insert(r[id_key].as_i64().unwrap().to_string(), r.clone()).is_none());
            }
            if page[more_key] != true {
                break;
            }
            offset = page["offset"].as_u64().unwrap();
        }
        let mut v3 = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let page = get(&format!("/crm/v3/objects/{kind}?limit=100&properties={}{cursor}", names.join(",")));
            for r in page["results"].as_array().unwrap() {
                v3.insert(r["id"].as_str().unwrap().to_string(), r["properties"].clone());
            }
            after = page["paging"]["next"]["after"].as_str().map(str::to_string);
            if after.is_none() {
                break;
            }
        }
        assert_eq!(legacy.keys().collect::<Vec<_>>(), v3.keys().collect::<Vec<_>>(), "{kind}: the same live records");
        // Values: the paged companies carry only what was asked; a company's own read and the
        // deals' pages carry every property with a value.
        for (id, properties) in v3.iter().take(15) {
            let full =
                if kind == "companies" { get(&format!("/companies/v2/companies/{id}")) } else { legacy[id].clone() };
            if kind == "companies" {
                let asked: Vec<&String> = legacy[id]["properties"].as_object().unwrap().keys().collect();
                assert!(asked.iter().all(|k| *k == "name"), "{id}: only the asked properties, got {asked:?}");
            }
            let got = full["properties"].as_object().unwrap();
            for (name, value) in properties.as_object().unwrap() {
                let Some(value) = value.as_str() else {
                    assert!(!got.contains_key(name), "{kind} {id}: {name} has no value, so no entry");
                    continue;
                };
                let want = match types[name].as_str() {
                    "datetime" if value.contains('T') => millis(value),
                    "date" if !value.is_empty() => millis(&format!("{value}T00:00:00Z")),
                    _ => value.to_string(),
                };
                let entry = &got[name];
                assert_eq!(entry["value"].as_str(), Some(want.as_str()), "{kind} {id} {name}");
                assert!(entry["timestamp"].is_i64() && !entry["versions"].as_array().unwrap().is_empty());
            }
        }
        if kind == "deals" {
            let ids: Vec<&String> = v3.keys().take(20).collect();
            let body =
                serde_json::json!({"inputs": ids.iter().map(|i| serde_json::json!({"id": i})).collect::<Vec<_>>()});
            let links = call(reqwest::Method::POST, "/crm/v4/associations/deals/companies/batch/read", Some(body));
            for result in links["results"].as_array().unwrap() {
                let from = result["from"]["id"].as_str().unwrap();
                let mut want: Vec<i64> = result["to"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        t["toObjectId"]
                            .as_str()
                            .map_or_else(|| t["toObjectId"].as_i64().unwrap(), |s| s.parse().unwrap())
                    })
                    .collect();
                let mut got: Vec<i64> = legacy[from]["associations"]["associatedCompanyIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                want.sort();
                got.sort();
                assert_eq!(got, want, "deal {from}: its companies");
            }
        }
    }
}
