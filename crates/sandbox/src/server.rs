//! HTTP side of the sandbox: routes, authentication, paging, limits and request counting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

mod hooks;
mod legacy;

use super::changes::ChangeKind;
use super::faults::Fault;
use super::generator::{Defect, Flavor, Generator, SandboxConfig};
use super::search::{self as search_api, SearchBody};

/// Stands for bytes that are not UTF-8 until the body is serialized (JSON cannot hold them).
pub(super) const INVALID_UTF8_MARK: &str = "\u{E000}\u{E001}";
/// Size of a bad record's huge value.
pub(super) const HUGE_VALUE: usize = 2 << 20;

/// A JSON answer; with bad records on, the invalid-UTF-8 marks become real invalid bytes.
pub(super) fn json_answer(g: &Generator, status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut bytes = serde_json::to_vec(body).expect("JSON serializes");
    if g.config.bad_records > 0.0 {
        let mark = INVALID_UTF8_MARK.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(mark) {
                out.extend_from_slice(&[0xFF, 0xFE]);
                i += mark.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    (status, [("content-type", "application/json")], bytes).into_response()
}

/// The object type a request's path names in its first type parameter (`{object_type}`,
/// `{from}`), by API name.
fn named_type(g: &Generator, template: &str, path: &str) -> Option<String> {
    let at = template.split('/').position(|p| p == "{object_type}" || p == "{from}")?;
    let name = path.split('/').nth(at)?;
    g.type_index(name).map(|t| g.types[t].api_name.to_string())
}

/// Associations returned per input of a v4 batch read before `paging` is set.
const ASSOCIATIONS_PER_INPUT: usize = 100;

/// Request counters served at `GET /_sandbox/stats`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    /// Requests per object type a path names (its first type: the `from` of an association
    /// read), by API name; requests naming no type are not counted here.
    #[serde(default)]
    pub by_object_type: BTreeMap<String, u64>,
    pub throttled: u64,
    pub throttled_after_10s: u64,
    pub faults: BTreeMap<String, u64>,
    /// Longest request URL (path and query) seen, in bytes.
    pub max_url_bytes: u64,
    /// Ids of the records `--search-churn` modified while searches (and Pipedrive's lists of
    /// changed records) were paged.
    pub churned: Vec<String>,
    /// What the webhook sender did, when it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<super::webhooks::WebhookStats>,
}

impl AppState {
    /// Records ids `--search-churn` modified (for `/_sandbox/stats`).
    pub(super) fn churned(&self, ids: Vec<String>) {
        self.stats.lock().expect("stats lock").churned.extend(ids);
    }
}

pub(super) struct AppState {
    pub(super) generator: Generator,
    /// The Pipedrive account, with `--flavor pipedrive`.
    pub(super) pipedrive: Option<super::pipedrive::World>,
    /// Pipedrive tokens spent so far (for the daily budget).
    tokens: std::sync::atomic::AtomicU64,
    stats: Mutex<Stats>,
    /// When the searches of the last second came in (HubSpot allows 5 per second).
    searches: Mutex<std::collections::VecDeque<std::time::Instant>>,
    /// When the other API requests of the rolling period came in (with `rate_limit`).
    window: Mutex<std::collections::VecDeque<std::time::Instant>>,
    first_request: std::sync::OnceLock<std::time::Instant>,
    /// Draws made for fault injection so far.
    fault_draws: std::sync::atomic::AtomicU64,
    /// API requests answered so far (for the daily limit).
    api_requests: std::sync::atomic::AtomicU64,
    /// Sends the webhooks of the changes test hooks make.
    webhooks: Option<Arc<super::webhooks::Sender>>,
}

/// Searches HubSpot allows per second per account.
const SEARCHES_PER_SECOND: usize = 5;

pub(super) type Shared = Arc<AppState>;

/// A running sandbox server.
pub struct SandboxServer {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxServer {
    /// Binds 127.0.0.1:`port` (0 for an ephemeral port) and serves in the background.
    pub async fn start(config: SandboxConfig, port: u16) -> std::io::Result<SandboxServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let addr = listener.local_addr()?;
        let pipedrive = (config.flavor == Flavor::Pipedrive).then(|| super::pipedrive::World::new(&config));
        let webhooks = config.webhooks.clone().map(super::webhooks::Sender::new);
        let state = Arc::new(AppState {
            webhooks,
            pipedrive,
            tokens: Default::default(),
            generator: Generator::new(config),
            stats: Mutex::new(Stats::default()),
            searches: Mutex::new(Default::default()),
            window: Mutex::new(Default::default()),
            first_request: Default::default(),
            fault_draws: Default::default(),
            api_requests: Default::default(),
        });
        let app = router(state);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "Sandbox server stopped.");
            }
        });
        Ok(SandboxServer { addr, task: Some(task) })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the process is stopped.
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other),
            None => Ok(()),
        }
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn router(state: Shared) -> Router {
    let api = match state.generator.config.flavor {
        Flavor::Hubspot => hubspot_routes(),
        Flavor::Pipedrive => super::pipedrive::api::routes(state.clone()),
    };
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), chaos))
        .route_layer(middleware::from_fn_with_state(state.clone(), redirect));
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/touch", post(touch))
        .route("/_sandbox/archive", post(archive))
        .route("/_sandbox/add-property", post(add_property))
        .route("/_sandbox/changes", get(changes))
        .merge(hooks::routes())
        .route("/_sandbox/webhooks", get(webhooks_sent))
        .route("/_sandbox/webhooks/resend", post(webhooks_resend))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

fn hubspot_routes() -> Router<Shared> {
    legacy::routes()
        .route("/crm/v3/schemas", get(schemas))
        .route("/crm-object-schemas/v3/schemas", get(schemas))
        .route("/crm/v3/properties/{object_type}", get(properties))
        .route("/crm/v3/objects/{object_type}", get(list_objects))
        .route("/crm/v3/objects/{object_type}/batch/read", post(batch_read))
        .route("/crm/v3/objects/{object_type}/search", post(search))
        .route("/crm/v3/objects/{object_type}/{object_id}", get(get_object))
        .route("/properties/v1/{object_type}/properties", get(legacy_properties))
        .route("/properties/v2/{object_type}/properties", get(legacy_properties))
        .route("/crm/v4/associations/{from}/{to}/batch/read", post(association_batch_read))
        .route("/crm/v4/associations/{from}/{to}/labels", get(association_labels))
        // Where the v4 schema spec puts the same operation.
        .route("/crm/associations/v4/{from}/{to}/labels", get(association_labels))
        .route("/crm/v3/owners", get(owners))
        .route("/crm/v3/owners/", get(owners))
        .route("/crm/v3/pipelines/{object_type}", get(pipelines))
        .route("/account-info/v3/details", get(account_details))
        .route("/crm/v3/lists/search", post(lists_search))
        .route("/crm/v3/lists/{list_id}/memberships", get(list_memberships))
        .route("/events/v3/events/event-types", get(event_types))
        .route("/events/v3/events", get(events))
        .route("/events/v3/event-definitions", get(event_definitions))
        .route("/settings/v3/users/teams", get(teams))
}

/// A request the sandbox refuses, answered with HubSpot's error body.
pub(super) struct Rejection {
    status: StatusCode,
    category: &'static str,
    message: String,
    /// HubSpot's `context` (for example `missingScopes`).
    context: Option<Value>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut body = json!({
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id(),
            "category": self.category,
        });
        if let Some(context) = self.context {
            body["context"] = context;
        }
        (self.status, Json(body)).into_response()
    }
}

pub(super) fn reject(status: StatusCode, category: &'static str, message: impl Into<String>) -> Rejection {
    Rejection { status, category, message: message.into(), context: None }
}

/// 403 with HubSpot's missing-scope body when the token lacks `scope`.
pub(super) fn require(g: &Generator, scope: &str) -> std::result::Result<(), Rejection> {
    if !g.scope_missing(scope) {
        return Ok(());
    }
    let mut r = reject(
        StatusCode::FORBIDDEN,
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
    );
    r.context = Some(json!({ "missingScopes": [scope] }));
    Err(r)
}

fn error(status: StatusCode, category: &'static str, message: impl Into<String>) -> Response {
    reject(status, category, message).into_response()
}

pub(super) type Answer = std::result::Result<Response, Rejection>;

fn rand_id() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

/// A fresh UUID (version 4 in form) for an error's `correlationId`, as HubSpot sends.
fn correlation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    super::webhooks::uuid(rand_id() ^ n.rotate_left(32))
}

/// `--redirect-to URL`: every API request is answered `307 Temporary Redirect` to the same
/// path and query under `URL`, as a compromised proxy or a misconfigured load balancer might,
/// so that a client can be tested for what it sends there (its token must not follow).
async fn redirect(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(to) = &state.generator.config.redirect_to else {
        return next.run(request).await;
    };
    let target =
        format!("{}{}", to.trim_end_matches('/'), request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, target)]).into_response()
}

async fn count(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let url_bytes = request.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(0);
    if !endpoint.starts_with("/_sandbox") {
        let mut s = state.stats.lock().expect("stats lock");
        s.requests += 1;
        *s.by_endpoint.entry(format!("{} {endpoint}", request.method())).or_default() += 1;
        if let Some(t) = named_type(&state.generator, &endpoint, request.uri().path()) {
            *s.by_object_type.entry(t).or_default() += 1;
        }
        s.max_url_bytes = s.max_url_bytes.max(url_bytes as u64);
    }
    if url_bytes > state.generator.config.max_url_bytes {
        return error(StatusCode::URI_TOO_LONG, "VALIDATION_ERROR", "URI Too Long");
    }
    next.run(request).await
}

/// The account's rolling request limit, then the injected faults, for API requests (not the
/// test hooks). Every answer carries the flavour's rate-limit headers: the configured limit,
/// or a Starter private app's 100 per 10 s (Pipedrive: 40 per 2 s) when none is enforced.
async fn chaos(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let now = std::time::Instant::now();
    state.first_request.get_or_init(|| now);
    let flavor = state.generator.config.flavor;
    let is_search = request.uri().path().ends_with("/search") && request.uri().path().starts_with("/crm/v3/objects/");
    let default_limit = match flavor {
        Flavor::Hubspot => (100, std::time::Duration::from_secs(10)),
        Flavor::Pipedrive => (40, std::time::Duration::from_secs(2)),
    };
    let (max, interval) = state.generator.config.rate_limit.unwrap_or(default_limit);
    let mut remaining = max.saturating_sub(1);
    // HubSpot counts requests against the daily limit, Pipedrive each operation's token cost.
    let cost = match flavor {
        Flavor::Hubspot => 1,
        Flavor::Pipedrive => {
            let route = request.extensions().get::<MatchedPath>().map_or(request.uri().path(), MatchedPath::as_str);
            super::pipedrive::prices::tokens(request.method().as_str(), route)
        }
    };
    let spent = state.tokens.fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
    state.api_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let daily = state.generator.config.daily_limit;
    if daily.is_some_and(|daily| spent + cost > daily) {
        count_throttled(&state, now);
        let mut r = throttled_response(flavor, "DAILY", None);
        rate_headers(&mut r, flavor, (max, interval, 0), daily.map(|d| (d, 0)));
        return r;
    }
    let budget = daily.map(|d| (d, d.saturating_sub(spent + cost)));
    if let Some((limit, period)) = state.generator.config.rate_limit.filter(|_| !is_search) {
        let mut window = state.window.lock().expect("window lock");
        while window.front().is_some_and(|t| now.duration_since(*t) >= period) {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            drop(window);
            count_throttled(&state, now);
            let mut r = throttled_response(flavor, "TEN_SECONDLY_ROLLING", None);
            rate_headers(&mut r, flavor, (max, interval, 0), budget);
            return r;
        }
        window.push_back(now);
        remaining = limit.saturating_sub(window.len() as u32);
    }
    let faults = &state.generator.config.faults;
    let fault = if faults.any() {
        let n = state.fault_draws.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let draw = super::generator::mix(state.generator.config.seed ^ 0xFA17 ^ n.wrapping_mul(0x9E37_79B9));
        faults.pick((draw >> 11) as f64 / (1u64 << 53) as f64, super::generator::mix(draw))
    } else {
        None
    };
    if let Some(f) = fault {
        *state.stats.lock().expect("stats lock").faults.entry(f.name().to_string()).or_default() += 1;
    }
    let mut response = match fault {
        None => next.run(request).await,
        Some(Fault::ServerError(502)) => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Some(Fault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match flavor {
                Flavor::Hubspot => error(status, "INTERNAL_ERROR", "internal error (injected by the sandbox)"),
                Flavor::Pipedrive => super::pipedrive::api::pd_error(
                    status,
                    "Internal server error (injected by the sandbox)",
                    "Please try again later",
                ),
            }
        }
        Some(Fault::Throttle) => throttled_response(flavor, "TEN_SECONDLY_ROLLING", Some(faults.retry_after)),
        Some(Fault::Malformed) => {
            ([("content-type", "application/json")], "{\"results\": [{\"id\": \"1\", \"properties\": <html>oops")
                .into_response()
        }
        Some(Fault::Slow) => {
            tokio::time::sleep(faults.slow_delay).await;
            next.run(request).await
        }
        Some(Fault::Drop) => cut_short(Response::new(axum::body::Body::empty()), 0).await,
        Some(Fault::Truncate) => {
            let full = next.run(request).await;
            cut_short(full, 2).await
        }
    };
    rate_headers(&mut response, flavor, (max, interval, remaining), budget);
    response
}

/// A response that declares its full length but sends only `1/divisor` of its body (none
/// for 0) before the connection breaks.
async fn cut_short(response: Response, divisor: usize) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let sent = bytes.len().checked_div(divisor).unwrap_or(0);
    let head = bytes.slice(..sent);
    let chunks: Vec<std::result::Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection dropped (injected by the sandbox)")),
    ];
    let mut r = Response::from_parts(parts, axum::body::Body::from_stream(futures::stream::iter(chunks)));
    r.headers_mut().insert("content-length", axum::http::HeaderValue::from(bytes.len().max(1)));
    if divisor == 0 {
        *r.status_mut() = StatusCode::OK;
    }
    r
}

/// The flavour's 429 for `policy` (`TEN_SECONDLY_ROLLING` or `DAILY`), with the wait when
/// given: HubSpot's `Retry-After`, Pipedrive's `x-ratelimit-reset` (fractional seconds, so
/// tests stay fast).
fn throttled_response(flavor: Flavor, policy: &str, retry_after: Option<std::time::Duration>) -> Response {
    let daily = policy == "DAILY";
    let body = match flavor {
        Flavor::Hubspot => json!({
            "status": "error",
            "message": format!("You have reached your {} limit.", policy.to_lowercase()),
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(), "policyName": policy,
            "groupName": "publicapi:private-app:sandbox",
        }),
        Flavor::Pipedrive => json!({
            "success": false,
            "error": if daily { "daily request budget exceeded" } else { "Request over limit" },
            "errorCode": 429,
        }),
    };
    let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Some(wait) = retry_after {
        let value = format!("{:.3}", wait.as_secs_f64());
        let name = if flavor == Flavor::Hubspot { "retry-after" } else { "x-ratelimit-reset" };
        r.headers_mut().insert(name, axum::http::HeaderValue::from_str(&value).expect("ascii"));
    }
    r
}

/// The flavour's rate-limit headers: (limit, period, remaining), and Pipedrive's daily
/// token budget (limit, remaining) when one is enforced.
fn rate_headers(
    r: &mut Response,
    flavor: Flavor,
    (max, interval, remaining): (u32, std::time::Duration, u32),
    budget: Option<(u64, u64)>,
) {
    let mut headers = match flavor {
        Flavor::Hubspot => vec![
            ("x-hubspot-ratelimit-max", max.to_string()),
            ("x-hubspot-ratelimit-interval-milliseconds", interval.as_millis().to_string()),
            ("x-hubspot-ratelimit-remaining", remaining.to_string()),
            ("x-hubspot-ratelimit-daily", "250000".to_string()),
            ("x-hubspot-ratelimit-daily-remaining", "249000".to_string()),
        ],
        Flavor::Pipedrive => {
            vec![("x-ratelimit-limit", max.to_string()), ("x-ratelimit-remaining", remaining.to_string())]
        }
    };
    if flavor == Flavor::Pipedrive {
        if !r.headers().contains_key("x-ratelimit-reset") {
            headers.push(("x-ratelimit-reset", interval.as_secs().max(1).to_string()));
        }
        // Requests left today for POST and PUT (the sandbox serves reads only).
        headers.push(("x-daily-requests-left", "10000".to_string()));
        if let Some((limit, left)) = budget {
            headers.push(("x-daily-ratelimit-token-limit", limit.to_string()));
            headers.push(("x-daily-ratelimit-token-remaining", left.to_string()));
        }
    }
    let h = r.headers_mut();
    for (name, value) in headers {
        h.insert(name, axum::http::HeaderValue::from_str(&value).expect("ascii"));
    }
}

/// HubSpot: `Authorization: Bearer`. Pipedrive: `x-api-token` (or an OAuth Bearer token).
async fn authenticate(State(state): State<Shared>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let flavor = state.generator.config.flavor;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let api_token: Option<String> =
        Query::parse(request.uri().query().map(str::to_string)).get("api_token").map(str::to_string);
    let token = match flavor {
        Flavor::Hubspot => bearer,
        // Pipedrive also takes the token as the `api_token` query parameter.
        Flavor::Pipedrive => header("x-api-token").or(bearer).or(api_token.as_deref()),
    }
    .filter(|t| !t.is_empty());
    let ok = match (&state.generator.config.token, token) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(expected), Some(given)) => expected == given,
    };
    if !ok {
        return match flavor {
            Flavor::Hubspot => error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            ),
            Flavor::Pipedrive => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"success": false, "error": "unauthorized access", "errorCode": 401})),
            )
                .into_response(),
        };
    }
    next.run(request).await
}

async fn not_found(State(state): State<Shared>) -> Response {
    match state.generator.config.flavor {
        Flavor::Hubspot => error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "resource not found"),
        Flavor::Pipedrive => super::pipedrive::api::pd_error(
            StatusCode::NOT_FOUND,
            "Unknown method .",
            "Please check developers.pipedrive.com",
        ),
    }
}

async fn stats(State(state): State<Shared>) -> Response {
    let mut s = state.stats.lock().expect("stats lock").clone();
    s.webhooks = state.webhooks.as_ref().map(|w| w.stats());
    Json(s).into_response()
}

/// The webhook sender, or the answer that there is none.
fn sender(state: &AppState) -> std::result::Result<&Arc<super::webhooks::Sender>, Rejection> {
    state.webhooks.as_ref().ok_or_else(|| {
        reject(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "this sandbox sends no webhooks: start it with --webhook-url")
    })
}

/// `GET /_sandbox/webhooks`: every event the sandbox built, as first sent, and whether a
/// delivery of it was acknowledged.
async fn webhooks_sent(State(state): State<Shared>) -> Answer {
    Ok(Json(sender(&state)?.ground_truth()).into_response())
}

#[derive(Deserialize, Default)]
struct ResendBody {
    /// The last this many acknowledged batches (default: all).
    count: Option<usize>,
}

/// `POST /_sandbox/webhooks/resend`: delivers acknowledged batches again, as a sender that
/// missed the acknowledgement would.
async fn webhooks_resend(State(state): State<Shared>, body: Option<Json<ResendBody>>) -> Answer {
    let Json(body) = body.unwrap_or_default();
    let n = sender(&state)?.resend(body.count, state.pipedrive.is_some());
    Ok(Json(json!({"resent": n})).into_response())
}

/// When each of `n` records of a touch changed: spread over `spread_ms` from `at`.
fn touch_times(at: chrono::DateTime<chrono::Utc>, n: usize, spread_ms: i64) -> Vec<chrono::DateTime<chrono::Utc>> {
    (0..n as i64).map(|k| at + chrono::Duration::milliseconds(spread_ms * k / n.max(1) as i64)).collect()
}

/// Query pairs, with repeated keys and comma lists both accepted (as HubSpot does).
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<String>) -> Query {
        Query(url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect())
    }
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub(super) fn list(&self, key: &str) -> Option<Vec<String>> {
        let values: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(',').map(str::to_string))
            .filter(|v| !v.is_empty())
            .collect();
        self.0.iter().any(|(k, _)| k == key).then_some(values)
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }
    fn limit(&self, default: usize, max: usize) -> std::result::Result<usize, Rejection> {
        match self.get("limit") {
            None => Ok(default),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(reject(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    format!("limit must be between 1 and {max}, got {l}"),
                )),
            },
        }
    }
}

pub(super) fn resolve_type(g: &Generator, name: &str) -> std::result::Result<usize, Rejection> {
    g.type_index(name).ok_or_else(|| {
        reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("Unable to infer object type from: {name}"))
    })
}

fn property_json(g: &Generator, t: usize, p: usize) -> Value {
    let def = &g.types[t].properties[p];
    let created = g.config.anchor - chrono::Duration::days(1000 + p as i64);
    json!({
        "name": def.name,
        "label": def.label,
        "type": def.ty,
        "fieldType": def.field_type,
        "groupName": def.group,
        "description": format!("{} (sandbox)", def.label),
        "options": def.options.iter().enumerate().map(|(i, (label, value))| json!({
            "label": label, "value": value, "displayOrder": i, "hidden": false
        })).collect::<Vec<_>>(),
        "calculated": def.calculated,
        "hubspotDefined": def.hubspot_defined,
        "hasUniqueValue": def.has_unique_value,
        "hidden": false,
        "archived": false,
        "formField": true,
        "dataSensitivity": "non_sensitive",
        "createdAt": super::iso(created),
        "updatedAt": super::iso(created + chrono::Duration::days(3)),
        "displayOrder": p,
        "modificationMetadata": {"archivable": !def.hubspot_defined, "readOnlyDefinition": def.hubspot_defined, "readOnlyValue": false}
    })
}

async fn schemas(State(state): State<Shared>) -> Response {
    let g = &state.generator;
    let results: Vec<Value> = g
        .types
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_custom())
        .map(|(t, ty)| {
            let associations: Vec<Value> = (0..g.types.len())
                .flat_map(|other| {
                    g.association_labels(t, other).into_iter().map(move |a| (other, a))
                })
                .map(|(other, a)| {
                    json!({"id": a.type_id.to_string(), "fromObjectTypeId": ty.type_id, "toObjectTypeId": g.types[other].type_id, "name": a.label})
                })
                .collect();
            json!({
                "id": ty.type_id.trim_start_matches("2-"),
                "objectTypeId": ty.type_id,
                "name": ty.api_name,
                "fullyQualifiedName": ty.fully_qualified_name,
                "labels": {"singular": ty.singular_label, "plural": ty.plural_label},
                "primaryDisplayProperty": ty.primary_display_property,
                "requiredProperties": [ty.primary_display_property],
                "searchableProperties": [ty.primary_display_property],
                "secondaryDisplayProperties": [],
                "properties": (0..ty.properties.len()).filter(|&p| g.is_defined(t, p)).map(|p| property_json(g, t, p)).collect::<Vec<_>>(),
                "associations": associations,
                "archived": false,
                "createdAt": super::iso(g.config.anchor - chrono::Duration::days(800)),
                "updatedAt": super::iso(g.config.anchor - chrono::Duration::days(20)),
            })
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn properties(State(state): State<Shared>, Path(object_type): Path<String>) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let results: Vec<Value> =
        (0..g.types[t].properties.len()).filter(|&p| g.is_defined(t, p)).map(|p| property_json(g, t, p)).collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// A record as HubSpot's `SimplePublicObject`, with the requested properties.
/// A record as HubSpot's `SimpleObject`; `defects` serves bad records as configured (list
/// and batch read; search answers ids and dates only).
/// One record as HubSpot's `SimplePublicObject`, serialized straight into the response
/// (building a `serde_json::Value` per record first took most of the sandbox's CPU).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    properties: Entries<'a, Option<String>>,
    created_at: String,
    updated_at: String,
    archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    archived_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties_with_history: Option<Entries<'a, Vec<super::generator::HistoryEntry>>>,
    /// With `associations=` on a list or a single read: `{<type>: {results: [{id, type}]}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    associations: Option<Map<String, Value>>,
}

/// A JSON object from (name, value) pairs, in their order.
struct Entries<'a, V>(Vec<(&'a str, V)>);

impl<V: serde::Serialize> serde::Serialize for Entries<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A page of records with HubSpot's `paging.next` cursor.
#[derive(serde::Serialize)]
struct ObjectPage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    results: Vec<ObjectJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Value>,
}

/// `paging` pointing at `after`.
fn next_paging(after: impl std::fmt::Display) -> Value {
    json!({"next": {"after": after.to_string(), "link": format!("?after={after}")}})
}

fn object_json<'g>(
    g: &'g Generator,
    t: usize,
    index: u64,
    wanted: &[usize],
    history: &[usize],
    defects: bool,
) -> ObjectJson<'g> {
    let r = g.record(t, index);
    let defect = if defects { g.defect(t, index) } else { None };
    // The defective value goes in the touched property (looked up only for bad records).
    let touched = defect.map(|_| g.touch_property(t));
    let props = &g.types[t].properties;
    let defective = |p: usize| match defect {
        Some(Defect::InvalidUtf8) if Some(p) == touched => Some(format!("bad {INVALID_UTF8_MARK} bytes")),
        Some(Defect::Huge) if Some(p) == touched => Some("h".repeat(HUGE_VALUE)),
        _ => None,
    };
    let mut values = Vec::with_capacity(wanted.len());
    for &p in wanted {
        let value = defective(p).or_else(|| g.property_value(t, index, p));
        values.push((props[p].name.as_str(), value));
    }
    let with_history = (!history.is_empty()).then(|| {
        let mut with_history = Vec::with_capacity(history.len());
        for &p in history {
            let mut entries = g.history(t, index, p);
            // The current value is the newest entry, defective values too.
            if let (Some(value), Some(newest)) = (defective(p), entries.first_mut()) {
                newest.value = value;
            }
            // HubSpot does not promise an order: odd records get theirs oldest first.
            if index % 2 == 1 {
                entries.reverse();
            }
            if !entries.is_empty() {
                with_history.push((props[p].name.as_str(), entries));
            }
        }
        Entries(with_history)
    });
    ObjectJson {
        id: (defect != Some(Defect::NoId)).then(|| r.id.to_string()),
        properties: Entries(values),
        created_at: if defect == Some(Defect::BadTimestamp) { Defect::BAD_TIMESTAMP.to_string() } else { r.created_at },
        updated_at: r.updated_at,
        archived: r.archived,
        archived_at: r.archived_at,
        properties_with_history: with_history,
        associations: None,
    }
}

/// The `associations` of a v3 object read (`associations=companies,deals`): each associated
/// record once per association type, typed `contact_to_company` (HubSpot's primary type),
/// `contact_to_company_unlabeled`, or the label's name.
fn associations_json(g: &Generator, t: usize, index: u64, to: &[usize]) -> Map<String, Value> {
    let singular = |u: usize| g.types[u].singular_label.to_lowercase().replace(' ', "_");
    to.iter()
        .filter_map(|&u| {
            let pair = format!("{}_to_{}", singular(t), singular(u));
            let results: Vec<Value> = g
                .associations(t, index, u)
                .into_iter()
                .flat_map(|(j, types)| {
                    let id = g.types[u].id_of(j).to_string();
                    let pair = pair.clone();
                    types.into_iter().map(move |a| {
                        let kind = match a.label {
                            Some("Primary") => pair.clone(),
                            Some(label) => label.to_lowercase().replace(' ', "_"),
                            None => format!("{pair}_unlabeled"),
                        };
                        json!({"id": id, "type": kind})
                    })
                })
                .collect();
            (!results.is_empty()).then(|| (g.types[u].api_name.to_string(), json!({ "results": results })))
        })
        .collect()
}

/// A record as a v3 object read answers it, with the associations `associations=` asked for.
fn object_with_associations<'g>(
    g: &'g Generator,
    t: usize,
    index: u64,
    wanted: &[usize],
    history: &[usize],
    targets: &[usize],
) -> ObjectJson<'g> {
    let mut object = object_json(g, t, index, wanted, history, true);
    if !targets.is_empty() {
        object.associations = Some(associations_json(g, t, index, targets));
    }
    object
}

/// The types named by `associations=` (unknown names ignored, as HubSpot does).
fn association_targets(g: &Generator, q: &Query) -> Vec<usize> {
    q.list("associations").unwrap_or_default().iter().filter_map(|name| g.type_index(name)).collect()
}

/// Indexes of the requested properties; HubSpot ignores unknown names and always includes
/// `hs_object_id`, `createdate` and the last-modified date.
fn wanted_properties(g: &Generator, t: usize, requested: Option<Vec<String>>) -> Vec<usize> {
    let props = &g.types[t].properties;
    let always =
        |name: &str| matches!(name, "hs_object_id" | "createdate" | "lastmodifieddate" | "hs_lastmodifieddate");
    let requested: std::collections::HashSet<String> =
        requested.map(|r| r.into_iter().collect()).unwrap_or_else(|| {
            // Without `properties`, HubSpot answers a small default set.
            props.iter().take(6).map(|p| p.name.clone()).collect()
        });
    props.iter().enumerate().filter(|(_, p)| always(&p.name) || requested.contains(&p.name)).map(|(i, _)| i).collect()
}

async fn list_objects(State(state): State<Shared>, Path(object_type): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    let q = Query::parse(q);
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let history_names = q.list("propertiesWithHistory");
    let limit = q.limit(10, if history_names.is_some() { 50 } else { 100 })?;
    let archived = q.flag("archived");
    let mut index: u64 = match q.get("after").map(str::parse) {
        None => 0,
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "invalid after cursor"));
        }
    };
    let wanted = wanted_properties(g, t, q.list("properties"));
    let history = history_names.map(|h| named_properties(g, t, &h)).unwrap_or_default();
    let targets = association_targets(g, &q);
    let mut results = Vec::with_capacity(limit);
    while index < g.count(t) && results.len() < limit {
        // `archived=true` lists only archived records; the default only live ones.
        if !g.is_gone(t, index) && g.is_archived(t, index) == archived {
            results.push(object_with_associations(g, t, index, &wanted, &history, &targets));
        }
        index += 1;
    }
    while index < g.count(t) && (g.is_gone(t, index) || g.is_archived(t, index) != archived) {
        index += 1;
    }
    let paging = (index < g.count(t)).then(|| next_paging(index));
    Ok(json_answer(g, StatusCode::OK, &ObjectPage { total: None, results, paging }))
}

/// `GET /crm/v3/objects/{type}/{id}`: one record (`idProperty` is not supported: ids only).
async fn get_object(
    State(state): State<Shared>,
    Path((object_type, object_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let g = &state.generator;
    let q = Query::parse(q);
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let found = object_id.parse::<i64>().ok().and_then(|id| g.types[t].index_of(id));
    // A merged-away id answers the survivor, as HubSpot does.
    let Some(index) = found.and_then(|i| g.survivor(t, i)).filter(|&i| g.is_archived(t, i) == q.flag("archived"))
    else {
        return Err(reject(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "resource not found"));
    };
    let wanted = wanted_properties(g, t, q.list("properties"));
    let history = q.list("propertiesWithHistory").map(|h| named_properties(g, t, &h)).unwrap_or_default();
    let object = object_with_associations(g, t, index, &wanted, &history, &association_targets(g, &q));
    Ok(json_answer(g, StatusCode::OK, &object))
}

/// The legacy `GET /properties/v1/{type}/properties` and `/properties/v2/{type}/properties`
/// that older clients still call: a bare array of definitions.
pub(super) async fn legacy_properties(State(state): State<Shared>, Path(object_type): Path<String>) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let results: Vec<Value> = (0..g.types[t].properties.len())
        .filter(|&p| g.is_defined(t, p))
        .map(|p| {
            let mut v = property_json(g, t, p);
            let def = &g.types[t].properties[p];
            v["readOnlyValue"] = json!(false);
            v["readOnlyDefinition"] = json!(def.hubspot_defined);
            v["mutableDefinitionNotDeletable"] = json!(def.hubspot_defined);
            v["deleted"] = json!(false);
            v["favorited"] = json!(false);
            v
        })
        .collect();
    Ok(Json(results).into_response())
}

/// Indexes of the named properties of type `t` (unknown names ignored).
fn named_properties(g: &Generator, t: usize, names: &[String]) -> Vec<usize> {
    let props = &g.types[t].properties;
    props.iter().enumerate().filter(|(_, p)| names.contains(&p.name)).map(|(i, _)| i).collect()
}

#[derive(Deserialize)]
struct IdInput {
    id: String,
    after: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchReadBody {
    inputs: Vec<IdInput>,
    #[serde(default)]
    properties: Vec<String>,
    #[serde(default)]
    properties_with_history: Vec<String>,
}

async fn batch_read(
    State(state): State<Shared>,
    Path(object_type): Path<String>,
    RawQuery(q): RawQuery,
    body: Result<Json<BatchReadBody>, JsonRejection>,
) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let archived = Query::parse(q).flag("archived");
    let Json(body) = body.map_err(invalid_json)?;
    let max = if body.properties_with_history.is_empty() { 100 } else { 50 };
    if body.inputs.len() > max {
        return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("Batch size must be at most {max}")));
    }
    let wanted = wanted_properties(g, t, Some(body.properties));
    let history = named_properties(g, t, &body.properties_with_history);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &body.inputs {
        let found = input.id.parse::<i64>().ok().and_then(|id| g.types[t].index_of(id));
        match found.and_then(|i| g.survivor(t, i)).filter(|&i| g.is_archived(t, i) == archived) {
            Some(i) => results.push(object_json(g, t, i, &wanted, &history, true)),
            None => errors.push(json!({
                "status": "error", "category": "OBJECT_NOT_FOUND", "message": format!("Could not get some {} objects, they may be deleted or not exist.", object_type),
                "context": {"ids": [input.id]}, "errors": [], "links": {}
            })),
        }
    }
    /// `BatchResponseSimplePublicObject(WithErrors)`.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct BatchAnswer<'a> {
        status: &'static str,
        results: Vec<ObjectJson<'a>>,
        started_at: String,
        completed_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        num_errors: Option<usize>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Value>,
    }
    let now = super::iso(chrono::Utc::now());
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    let num_errors = (!errors.is_empty()).then_some(errors.len());
    let out =
        BatchAnswer { status: "COMPLETE", results, started_at: now.clone(), completed_at: now, num_errors, errors };
    Ok(json_answer(g, status, &out))
}

/// A body that is no JSON of the expected shape: HubSpot's JSON 400, never axum's plain text.
fn invalid_json(why: JsonRejection) -> Rejection {
    reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("Invalid input JSON: {}", why.body_text()))
}

#[derive(Deserialize)]
struct AssociationBody {
    inputs: Vec<IdInput>,
}

async fn association_batch_read(
    State(state): State<Shared>,
    Path((from, to)): Path<(String, String)>,
    body: Result<Json<AssociationBody>, JsonRejection>,
) -> Answer {
    let g = &state.generator;
    let (f, t) = (resolve_type(g, &from)?, resolve_type(g, &to)?);
    require(g, &g.types[f].scope)?;
    require(g, &g.types[t].scope)?;
    let Json(body) = body.map_err(invalid_json)?;
    if body.inputs.len() > 1000 {
        return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "The maximum number of inputs is 1000"));
    }
    let mut results = Vec::new();
    for input in &body.inputs {
        let Some(i) = input.id.parse::<i64>().ok().and_then(|id| g.types[f].index_of(id)) else {
            continue;
        };
        let all = g.associations(f, i, t);
        let start: usize = input.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0);
        if all.is_empty() || start >= all.len() {
            continue;
        }
        let end = (start + ASSOCIATIONS_PER_INPUT).min(all.len());
        let to_json: Vec<Value> = all[start..end]
            .iter()
            .map(|(j, types)| {
                json!({
                    "toObjectId": g.types[t].id_of(*j).to_string(),
                    "associationTypes": types.iter().map(|a| json!({"category": a.category, "typeId": a.type_id, "label": a.label})).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut result = json!({"from": {"id": input.id}, "to": to_json});
        if end < all.len() {
            result["paging"] = json!({"next": {"after": end.to_string(), "link": null}});
        }
        results.push(result);
    }
    let now = super::iso(chrono::Utc::now());
    Ok(Json(json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now})).into_response())
}

async fn association_labels(State(state): State<Shared>, Path((from, to)): Path<(String, String)>) -> Answer {
    let g = &state.generator;
    for name in [&from, &to] {
        require(g, &g.types[resolve_type(g, name)?].scope)?;
    }
    let (f, t) = (resolve_type(g, &from)?, resolve_type(g, &to)?);
    let results: Vec<Value> = g
        .association_labels(f, t)
        .iter()
        .map(|a| json!({"category": a.category, "typeId": a.type_id, "label": a.label}))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

async fn owners(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    let q = Query::parse(q);
    let limit = q.limit(100, 500)?;
    let archived = q.flag("archived");
    let matching: Vec<_> = g.owners.iter().filter(|o| o.archived == archived).collect();
    let start: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let end = (start + limit).min(matching.len());
    let results: Vec<Value> = matching[start.min(end)..end]
        .iter()
        .map(|o| {
            let mut v = json!({
                "id": o.id.to_string(), "type": "PERSON", "email": o.email, "firstName": o.first_name,
                "lastName": o.last_name, "userId": o.user_id, "userIdIncludingInactive": o.user_id,
                "createdAt": o.created_at, "updatedAt": o.updated_at, "archived": o.archived,
                "teams": o.teams.iter().map(|(id, name, primary)| json!({"id": id, "name": name, "primary": primary})).collect::<Vec<_>>(),
            });
            // A deactivated user's owner has no `userId` (HubSpot leaves it out).
            if o.archived {
                v.as_object_mut().map(|m| m.remove("userId"));
            }
            v
        })
        .collect();
    let mut body = json!({ "results": results });
    if end < matching.len() {
        body["paging"] = json!({"next": {"after": end.to_string()}});
    }
    Ok(Json(body).into_response())
}

async fn pipelines(State(state): State<Shared>, Path(object_type): Path<String>) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    let pipelines = g.pipelines(t);
    if pipelines.is_empty() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("{object_type} does not have pipelines"),
        ));
    }
    let results: Vec<Value> = pipelines
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "label": p.label, "displayOrder": p.display_order, "archived": false,
                "createdAt": p.created_at, "updatedAt": p.updated_at,
                "stages": p.stages.iter().enumerate().map(|(i, (id, label, meta))| json!({
                    "id": id, "label": label, "displayOrder": i, "archived": false,
                    "metadata": meta.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "createdAt": p.created_at, "updatedAt": p.updated_at, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

async fn account_details(State(state): State<Shared>) -> Answer {
    Ok(Json(json!({
        "portalId": state.generator.portal_id,
        "accountType": "SANDBOX",
        "timeZone": "UTC",
        "companyCurrency": "USD",
        "additionalCurrencies": [],
        "utcOffset": "+00:00",
        "utcOffsetMilliseconds": 0,
        "uiDomain": "app.hubspot.com",
        "dataHostingLocation": "na1"
    }))
    .into_response())
}

const LISTS_SCOPE: &str = "crm.lists.read";
const EVENTS_SCOPE: &str = "analytics.behavioral_events.read";
const TEAMS_SCOPE: &str = "settings.users.teams.read";

#[derive(Deserialize)]
struct ListSearchBody {
    #[serde(default)]
    offset: usize,
    count: Option<usize>,
}

async fn lists_search(State(state): State<Shared>, body: Result<Json<ListSearchBody>, JsonRejection>) -> Answer {
    let g = &state.generator;
    require(g, LISTS_SCOPE)?;
    let Json(body) = body.map_err(invalid_json)?;
    let count = body.count.unwrap_or(20);
    if count == 0 || count > 500 {
        return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "count must be between 1 and 500"));
    }
    let lists = g.lists();
    let end = (body.offset + count).min(lists.len());
    let page: Vec<Value> = lists[body.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let size = g.list_members(body.offset + i).len();
            json!({
                "listId": l.list_id, "listVersion": 3, "name": l.name,
                "objectTypeId": g.types[l.object_type].type_id,
                "processingStatus": "COMPLETE", "processingType": l.processing_type,
                "additionalProperties": {"hs_list_size": size.to_string()},
                "createdAt": l.created_at, "createdById": "9000001",
                "updatedAt": l.updated_at, "updatedById": "9000002",
                "filtersUpdatedAt": l.updated_at,
            })
        })
        .collect();
    Ok(Json(json!({"lists": page, "hasMore": end < lists.len(), "offset": end, "total": lists.len()})).into_response())
}

async fn list_memberships(State(state): State<Shared>, Path(list_id): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    require(g, LISTS_SCOPE)?;
    let q = Query::parse(q);
    let limit = q.limit(100, 250)?;
    let Some(k) = g.lists().iter().position(|l| l.list_id == list_id) else {
        return Err(reject(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", format!("List {list_id} does not exist")));
    };
    let list = &g.lists()[k];
    let t = list.object_type;
    // The cursor is the record index to resume at, so a page costs its own records, not a
    // walk through every member before it (at a million members that walk was the bench).
    let mut i: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut results: Vec<Value> = Vec::with_capacity(limit);
    while i < g.count(t) && results.len() < limit {
        if g.is_list_member(list, k, i) {
            results.push(
                json!({"recordId": g.types[t].id_of(i).to_string(), "membershipTimestamp": g.membership_time(k, i)}),
            );
        }
        i += 1;
    }
    while i < g.count(t) && !g.is_list_member(list, k, i) {
        i += 1;
    }
    let total = (0..g.count(t)).filter(|&j| g.is_list_member(list, k, j)).count();
    let mut body = json!({"results": results, "total": total});
    if i < g.count(t) {
        body["paging"] = json!({"next": {"after": i.to_string()}});
    }
    Ok(Json(body).into_response())
}

async fn event_types(State(state): State<Shared>) -> Answer {
    let g = &state.generator;
    require(g, EVENTS_SCOPE)?;
    let names: Vec<&str> = g.event_types().iter().map(|e| e.name.as_str()).collect();
    Ok(Json(json!({ "eventTypes": names })).into_response())
}

async fn event_definitions(State(state): State<Shared>) -> Answer {
    let g = &state.generator;
    require(g, EVENTS_SCOPE)?;
    let results: Vec<Value> = g
        .event_types()
        .iter()
        .filter(|e| e.custom)
        .map(|e| {
            json!({
                "id": e.name, "name": e.name, "fullyQualifiedName": e.name,
                "labels": {"singular": e.label},
                "objectTypeId": g.types[e.object_type].type_id, "archived": false, "associations": [],
                "properties": e.properties.iter().map(|(n, l, t)| event_property(n, l, t)).collect::<Vec<_>>(),
                "createdAt": super::iso(g.config.anchor - chrono::Duration::days(120)),
            })
        })
        .collect();
    Ok(Json(json!({"results": results, "total": results.len()})).into_response())
}

/// A property of a custom event definition, with the fields HubSpot's `Property` requires.
fn event_property(name: &str, label: &str, ty: &str) -> Value {
    let field_type = match ty {
        "number" => "number",
        "bool" => "booleancheckbox",
        "enumeration" => "select",
        "datetime" | "date" => "date",
        _ => "text",
    };
    json!({"name": name, "label": label, "type": ty, "fieldType": field_type, "description": "",
           "groupName": "event_properties", "options": []})
}

async fn events(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    require(g, EVENTS_SCOPE)?;
    let q = Query::parse(q);
    let limit = q.limit(100, 1000)?;
    let types = g.event_types();
    let Some(e) = q.get("eventType").and_then(|name| types.iter().position(|t| t.name == name)) else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "eventType is required and must be a known event type",
        ));
    };
    let def = &types[e];
    let bound = |key: &str| -> std::result::Result<Option<i64>, Rejection> {
        q.get(key)
            .map(|v| {
                crate::time::instant(v).map(|t| t.timestamp_millis()).ok_or_else(|| {
                    reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("{key} is not a timestamp: {v}"))
                })
            })
            .transpose()
    };
    let (after_ms, before_ms) = (bound("occurredAfter")?, bound("occurredBefore")?);
    let in_range = |ev: &super::generator::Event| {
        let at = crate::time::instant(&ev.occurred_at).map(|t| t.timestamp_millis()).unwrap_or(0);
        after_ms.is_none_or(|a| at >= a) && before_ms.is_none_or(|b| at < b)
    };
    let mut j: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut page = Vec::with_capacity(limit);
    while j < def.count && page.len() < limit {
        let ev = g.event(e, j);
        if in_range(&ev) {
            page.push(ev);
        }
        j += 1;
    }
    let object = g.types[def.object_type].singular_label.to_lowercase();
    let results: Vec<Value> = page
        .into_iter()
        .map(|ev| {
            // A property without a value is left out, as HubSpot does.
            let props: Map<String, Value> =
                ev.properties.into_iter().filter_map(|(k, v)| Some((k, Value::String(v?)))).collect();
            json!({"id": ev.id, "eventType": def.name, "objectType": object,
                   "objectId": g.types[def.object_type].id_of(ev.object_index).to_string(),
                   "occurredAt": ev.occurred_at, "properties": props})
        })
        .collect();
    let mut body = json!({ "results": results });
    if j < def.count {
        body["paging"] = json!({"next": {"after": j.to_string()}});
    }
    Ok(Json(body).into_response())
}

async fn teams(State(state): State<Shared>) -> Answer {
    let g = &state.generator;
    require(g, TEAMS_SCOPE)?;
    let results: Vec<Value> = g
        .teams()
        .into_iter()
        .map(|(id, name, users, secondary)| json!({"id": id, "name": name, "userIds": users, "secondaryUserIds": secondary}))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// Takes one search from the per-second budget; when it is spent, HubSpot's secondly 429.
fn search_throttled(state: &AppState) -> Option<Response> {
    let now = std::time::Instant::now();
    let mut recent = state.searches.lock().expect("searches lock");
    while recent.front().is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1)) {
        recent.pop_front();
    }
    if recent.len() < SEARCHES_PER_SECOND {
        recent.push_back(now);
        return None;
    }
    drop(recent);
    count_throttled(state, now);
    Some(throttled_response(Flavor::Hubspot, "SECONDLY", None))
}

/// Counts a 429 the account's limits caused (not an injected one).
fn count_throttled(state: &AppState, now: std::time::Instant) {
    let first = *state.first_request.get_or_init(|| now);
    let mut s = state.stats.lock().expect("stats lock");
    s.throttled += 1;
    if now.duration_since(first) > std::time::Duration::from_secs(10) {
        s.throttled_after_10s += 1;
    }
}

async fn search(
    State(state): State<Shared>,
    Path(object_type): Path<String>,
    body: Result<Json<SearchBody>, JsonRejection>,
) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, &object_type)?;
    require(g, &g.types[t].scope)?;
    if let Some(throttled) = search_throttled(&state) {
        return Ok(throttled);
    }
    let Json(mut body) = body.map_err(invalid_json)?;
    if g.config.search_ignores_filters {
        // --search-ignores-filters: answered as if no filter had been sent.
        body.filter_groups.clear();
    }
    let ty = &g.types[t];
    let modified = if ty.api_name == "contacts" { "lastmodifieddate" } else { "hs_lastmodifieddate" };
    let index = g.modified_index(t);
    // --index-delay: a change is searchable only that long after it was made.
    let delay = g.config.index_delay_ms;
    let lagging: Vec<(i64, i64)>;
    let index: &[(i64, i64)] = if delay > 0 {
        let visible_until = chrono::Utc::now().timestamp_millis() - delay;
        lagging = index.iter().filter(|e| e.0 <= visible_until).copied().collect();
        &lagging
    } else {
        &index
    };
    let page = search_api::search(index, modified, &body, g.config.search_disorder_ms)
        .map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
    // Search answers only the properties asked for (plus the always-sent ones), never history.
    let wanted = wanted_properties(g, t, Some(body.properties));
    let indexes: Vec<u64> = page.ids.iter().filter_map(|&id| ty.index_of(id)).collect();
    let results: Vec<ObjectJson> = indexes.iter().map(|&i| object_json(g, t, i, &wanted, &[], false)).collect();
    let out = ObjectPage { total: Some(page.total as u64), results, paging: page.next_after.map(next_paging) };
    let answer = Json(out).into_response();
    // --search-churn: records this page returned are modified before the next page is asked.
    let churn = g.config.search_churn as usize;
    let on_modified = || body.filter_groups.iter().flat_map(|g| &g.filters).any(|f| f.property_name == modified);
    if churn > 0 && page.next_after.is_some() && on_modified() {
        let changed = g.touch_records(t, &indexes[..churn.min(indexes.len())], chrono::Utc::now());
        state.churned(changed.into_iter().map(|id| id.to_string()).collect());
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookBody {
    object_type: String,
    /// Default: 1.
    #[serde(default = "one_record")]
    count: u64,
    /// Default: now.
    at: Option<String>,
    /// Spread the new `updatedAt` values over this many milliseconds after `at` (touch
    /// only; default 0: every record in the same millisecond).
    #[serde(default)]
    spread_ms: i64,
}

fn one_record() -> u64 {
    1
}

impl HookBody {
    fn at(&self) -> std::result::Result<chrono::DateTime<chrono::Utc>, Rejection> {
        match &self.at {
            None => Ok(chrono::Utc::now()),
            Some(a) => crate::time::instant(a).ok_or_else(|| {
                reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("at is not a timestamp: {a}"))
            }),
        }
    }
}

/// `POST /_sandbox/add-property {"objectType": "contacts"}`: defines the type's late property
/// (`customer_tier`) from `at` on; touches after it set its value.
async fn add_property(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let g = &state.generator;
    let Json(body) = body.map_err(invalid_json)?;
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let name = g.add_property(t, at).map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
    Ok(Json(json!({"objectType": body.object_type, "property": name, "at": super::iso(at)})).into_response())
}

/// `POST /_sandbox/touch`: modifies records (a property value and `updatedAt`).
async fn touch(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let g = &state.generator;
    let Json(body) = body.map_err(invalid_json)?;
    if let Some(w) = &state.pipedrive {
        let e = pipedrive_entity(w, &body.object_type)?;
        let at = body.at()?;
        let (field, value, ids) = w
            .touch(e, body.count, at, body.spread_ms.max(0))
            .map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
        if let Some(sender) = &state.webhooks {
            let times = touch_times(at, ids.len(), body.spread_ms.max(0));
            let changes = ids
                .iter()
                .zip(times)
                .map(|(id, t)| {
                    let t = chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
                    let data = json!({"id": id.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(id)),
                                      field.clone(): value, "update_time": super::iso(t), "custom_fields": {}});
                    (id.clone(), t, data, json!({}))
                })
                .collect();
            sender.send_pipedrive(sender.pipedrive_events(w.company_id, super::pipedrive::ENTITIES[e].name, changes));
        }
        return Ok(Json(json!({
            "objectType": super::pipedrive::ENTITIES[e].plural, "property": field, "value": value,
            "at": super::iso(at), "spreadMs": body.spread_ms.max(0), "ids": ids,
        }))
        .into_response());
    }
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let (property, value, ids) = g
        .touch(t, body.count, at, body.spread_ms.max(0))
        .map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
    if let Some(sender) = &state.webhooks {
        let times = touch_times(at, ids.len(), body.spread_ms.max(0));
        let changes: Vec<(String, i64)> =
            ids.iter().zip(times).map(|(id, t)| (id.to_string(), t.timestamp_millis())).collect();
        let events = sender.hubspot_events(
            g.portal_id,
            &g.types[t].type_id,
            "propertyChange",
            Some((&property, &value)),
            &changes,
        );
        sender.send_hubspot(events);
    }
    Ok(Json(json!({
        "objectType": g.types[t].api_name, "property": property, "value": value, "at": super::iso(at),
        "spreadMs": body.spread_ms.max(0), "ids": ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `POST /_sandbox/archive`: archives records (`archivedAt` = `at`; `updatedAt` unchanged,
/// as in HubSpot).
async fn archive(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let g = &state.generator;
    let Json(body) = body.map_err(invalid_json)?;
    if let Some(w) = &state.pipedrive {
        let e = pipedrive_entity(w, &body.object_type)?;
        let at = body.at()?;
        let ids = w.archive(e, body.count, at).map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
        if let Some(sender) = &state.webhooks {
            // Archiving a deal or lead is a change in Pipedrive, not a deletion.
            let t = chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
            let changes = ids
                .iter()
                .map(|id| {
                    let data = json!({"id": id.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(id)),
                                      "is_archived": true, "archive_time": super::iso(t), "custom_fields": {}});
                    (id.clone(), t, data, json!({"is_archived": false}))
                })
                .collect();
            sender.send_pipedrive(sender.pipedrive_events(w.company_id, super::pipedrive::ENTITIES[e].name, changes));
        }
        return Ok(Json(json!({"objectType": super::pipedrive::ENTITIES[e].plural, "at": super::iso(at), "ids": ids}))
            .into_response());
    }
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let ids = g.archive(t, body.count, at).map_err(|m| reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m))?;
    if let Some(sender) = &state.webhooks {
        // HubSpot reports an archived record (in the recycle bin) as a deletion.
        let changes: Vec<(String, i64)> = ids.iter().map(|id| (id.to_string(), at.timestamp_millis())).collect();
        sender.send_hubspot(sender.hubspot_events(g.portal_id, &g.types[t].type_id, "deletion", None, &changes));
    }
    Ok(Json(json!({
        "objectType": g.types[t].api_name, "at": super::iso(at),
        "ids": ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /_sandbox/changes?objectType=contacts`: the ground truth of what changed, for checking
/// incremental runs. Each change has the instant it was made (`at`, the record's new
/// last-modified time, or its archiving time) and the instant from which an exporter can read
/// it (`readableAt`: search shows a modification only after `--index-delay`; an archiving is in
/// the recycle bin at once). A run whose window is `[from, to)` and which started at `S` must
/// hold every change with `from <= at < to` and `readableAt <= S`; the next run holds the rest
/// through its lookback. A record changed again keeps only its last change.
async fn changes(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let q = Query::parse(q);
    let name = q.get("objectType").ok_or_else(|| {
        reject(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "objectType is required, e.g. ?objectType=contacts".to_string(),
        )
    })?;
    let g = &state.generator;
    let (plural, log, id): (String, _, Box<dyn Fn(u64) -> String + '_>) = match &state.pipedrive {
        Some(w) => {
            let e = pipedrive_entity(w, name)?;
            (super::pipedrive::ENTITIES[e].plural.to_string(), w.changes_of(e), Box::new(move |i| w.id(e, i)))
        }
        None => {
            let t = resolve_type(g, name)?;
            (g.types[t].api_name.to_string(), g.changes_of(t), Box::new(move |i| g.types[t].id_of(i).to_string()))
        }
    };
    // Only HubSpot's search has an index that lags.
    let lag = if state.pipedrive.is_some() { 0 } else { g.config.index_delay_ms };
    let changes: Vec<Value> = log
        .iter()
        .map(|c| {
            let lagged = c.at + chrono::Duration::milliseconds(lag);
            let (kind, readable) = match c.kind {
                ChangeKind::Modified => ("modified", lagged),
                ChangeKind::Restored => ("restored", lagged),
                ChangeKind::Archived => ("archived", c.at),
                ChangeKind::Deleted => ("deleted", c.at),
                ChangeKind::PrivacyDeleted => ("privacy_deleted", c.at),
                ChangeKind::Merged => ("merged", c.at),
            };
            let mut change =
                json!({"id": id(c.index), "kind": kind, "at": super::iso(c.at), "readableAt": super::iso(readable)});
            if let Some(into) = c.into {
                change["mergedInto"] = json!(id(into));
            }
            change
        })
        .collect();
    Ok(Json(json!({"objectType": plural, "changes": changes})).into_response())
}

fn pipedrive_entity(w: &super::pipedrive::World, name: &str) -> std::result::Result<usize, Rejection> {
    w.entity_index(name).ok_or_else(|| {
        reject(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("{name} is not a Pipedrive entity of the sandbox (persons, organizations, deals, activities, products, leads, notes)"),
        )
    })
}
