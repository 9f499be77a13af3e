//! The sandbox speaks HubSpot's shapes: its answers parse exactly like the recorded pages
//! of a real portal (fields, string-typed values, paging), checked over HTTP.

use serde_json::Value;

use crate::support::*;

fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    })
}

#[test]
fn sandbox_pages_have_the_recorded_shape() {
    let sandbox = SandboxProcess::start(&["--scale", "30"]);
    let recorded: Value = serde_json::from_str(include_str!("../../fixtures/hubspot/contacts-page.json")).unwrap();
    let recorded = &recorded["api"]["get"]["/crm/v3/objects/contacts"]["response"];
    let (status, page) =
        get(&format!("{}/crm/v3/objects/contacts?limit=10&properties=firstname,email", sandbox.base_url), Some("t"));
    assert_eq!(status, 200);
    let ours = &page["results"][0];
    let theirs = &recorded["results"][0];
    for key in ["id", "properties", "createdAt", "updatedAt", "archived"] {
        assert_eq!(ours[key].is_string(), theirs[key].is_string(), "{key}");
        assert!(!ours[key].is_null(), "{key}");
    }
    assert!(ours["properties"]["hs_object_id"].is_string(), "values are strings");
    assert!(page["paging"]["next"]["after"].is_string());

    let (status, body) = get(&format!("{}/crm/v3/objects/contacts", sandbox.base_url), None);
    assert_eq!(status, 401);
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
    assert!(body["correlationId"].is_string());
}
