//! One HTTP client per source: authentication, a proactive rate limiter, retries with
//! exponential backoff and jitter, and error classing.
//!
//! Never logs or returns the token: errors carry the method, path and API message only.

mod costs;
mod rate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

pub use costs::TokenCosts;
pub use rate::RateLimit;

use crate::error::{Error, Result};

/// The waits between attempts of anything crmdump retries: exponential from `first`, with
/// jitter, at most 30 s each; `retries` of them, or without end for `None` (a listener that
/// keeps trying its destination).
pub fn backoff(first: Duration, retries: Option<usize>) -> impl Iterator<Item = Duration> + Send {
    let builder =
        ExponentialBuilder::default().with_min_delay(first).with_max_delay(Duration::from_secs(30)).with_jitter();
    match retries {
        Some(n) => builder.with_max_times(n),
        None => builder.without_max_times(),
    }
    .build()
}

/// Longest URL crmdump builds by default: a margin below the 16,000 bytes past which HubSpot
/// answers 414 (`--max-url-bytes`). Longer URLs save requests (a page of a wide type with
/// every property name in its URL); a 414 lowers the limit for the rest of the run.
pub const DEFAULT_MAX_URL_BYTES: usize = 15_000;

/// What the limit drops to after a 414: a length every server takes.
pub const SAFE_URL_BYTES: usize = 8 * 1024;

/// How the token travels.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (HubSpot private apps and OAuth, Pipedrive OAuth).
    Bearer(String),
    /// `x-api-token: <token>` (Pipedrive API tokens; kept out of URLs and logs).
    ApiToken(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(<redacted>)")
    }
}

/// Counters reported in the manifest and the summary.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Requests that waited for crmdump's own limiter (the window was full).
    pub paced: AtomicU64,
    /// Requests discovery made (the account, types, properties, association labels, lists,
    /// events and teams), set once it is done.
    pub discovery: AtomicU64,
    /// Pipedrive tokens spent (each request at its operation's price), when priced.
    pub tokens: AtomicU64,
    /// The account's limits as the last response that carried them said.
    pub limits: std::sync::Mutex<Option<RateLimitHeaders>>,
}

/// The account's limits from HubSpot's `X-HubSpot-RateLimit-*` or Pipedrive's
/// `x-ratelimit-*` (a 2-second window) and `x-daily-ratelimit-token-*` headers; every field
/// optional (search responses, OAuth calls and idle Pipedrive accounts leave some out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub max: Option<u64>,
    pub interval_ms: Option<u64>,
    pub remaining: Option<u64>,
    pub daily: Option<u64>,
    pub daily_remaining: Option<u64>,
}

impl RateLimitHeaders {
    fn parse(headers: &reqwest::header::HeaderMap) -> Option<RateLimitHeaders> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let pipedrive = get("x-ratelimit-limit");
        let h = RateLimitHeaders {
            max: get("x-hubspot-ratelimit-max").or(pipedrive),
            interval_ms: get("x-hubspot-ratelimit-interval-milliseconds").or(pipedrive.map(|_| PIPEDRIVE_WINDOW_MS)),
            remaining: get("x-hubspot-ratelimit-remaining").or(get("x-ratelimit-remaining")),
            daily: get("x-hubspot-ratelimit-daily").or(get("x-daily-ratelimit-token-limit")),
            daily_remaining: get("x-hubspot-ratelimit-daily-remaining").or(get("x-daily-ratelimit-token-remaining")),
        };
        (h != RateLimitHeaders::default()).then_some(h)
    }
}

/// Pipedrive's burst limits count requests per rolling 2 seconds.
const PIPEDRIVE_WINDOW_MS: u64 = 2000;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: Url,
    pub auth: Auth,
    pub rate_limit: RateLimit,
    /// CRM search's own limit (HubSpot: 5/s per account, outside the 10-second bucket).
    pub search_rate_limit: RateLimit,
    /// Resize the general limiter to the account's limit from HubSpot's rate-limit headers.
    pub adjust_from_headers: bool,
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// What to tell the user on a 401 (differs per source).
    pub unauthorized_hint: &'static str,
    /// What to tell the user when the daily budget is spent (differs per source).
    pub daily_hint: &'static str,
    /// Prices of requests in tokens (Pipedrive), to count what an export spends.
    pub token_costs: Option<&'static TokenCosts>,
    /// Longest URL to send ([`DEFAULT_MAX_URL_BYTES`]).
    pub max_url_bytes: usize,
}

pub struct HttpClient {
    inner: reqwest::Client,
    options: ClientOptions,
    /// The general limiter and the limit it enforces; replaced when the headers say the
    /// account's limit differs.
    limiter: std::sync::RwLock<(RateLimit, Option<Arc<rate::Limiter>>)>,
    search_limiter: Option<Arc<rate::Limiter>>,
    /// The longest URL to send now: `max_url_bytes`, lowered for the rest of the run by a 414.
    url_limit: std::sync::atomic::AtomicUsize,
    pub stats: Arc<HttpStats>,
}

impl HttpClient {
    pub fn new(options: ClientOptions) -> Result<HttpClient> {
        let inner = reqwest::Client::builder()
            .user_agent(concat!("crmdump/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .gzip(true)
            .pool_max_idle_per_host(16)
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpClient {
            inner,
            limiter: std::sync::RwLock::new((options.rate_limit, rate::Limiter::new(options.rate_limit).map(Arc::new))),
            search_limiter: rate::Limiter::steady(options.search_rate_limit).map(Arc::new),
            url_limit: std::sync::atomic::AtomicUsize::new(options.max_url_bytes),
            options,
            stats: Arc::new(HttpStats::default()),
        })
    }

    /// The full URL of `path` with `query`, as it would be sent.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self
            .options
            .base_url
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::Config(format!("cannot join {path} to the base URL: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        Ok(self.get_json_repaired(path, query).await?.0)
    }

    /// Like [`HttpClient::get_json`], also saying whether the body had invalid UTF-8, which
    /// was replaced by U+FFFD so that the rest of the page could be read.
    pub async fn get_json_repaired<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(T, bool)> {
        let url = self.url(path, query)?;
        let limit = self.url_limit();
        if url.as_str().len() > limit {
            return Err(Error::Internal(format!(
                "refusing to send a {}-byte URL for {path} (limit {limit})",
                url.as_str().len()
            )));
        }
        let length = url.as_str().len();
        let sent = self.send(Method::GET, url, None::<&()>).await;
        if let Err(Error::Api { status: 414, .. }) = &sent {
            self.refused_url(length);
        }
        sent
    }

    /// The longest URL to build now.
    pub fn url_limit(&self) -> usize {
        self.url_limit.load(Ordering::Relaxed)
    }

    /// The server refused a URL of `length` bytes (414): URLs stay at most
    /// [`SAFE_URL_BYTES`], and under that length, for the rest of the run.
    fn refused_url(&self, length: usize) {
        let lower = SAFE_URL_BYTES.min(length.saturating_sub(1));
        let before = self.url_limit.fetch_min(lower, Ordering::Relaxed);
        if before > lower {
            tracing::warn!(
                refused = length,
                limit = lower,
                "The server refused a long URL (414): shorter URLs from now on."
            );
        }
    }

    pub async fn post_json<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        Ok(self.post_json_repaired(path, body).await?.0)
    }

    /// Like [`HttpClient::post_json`], also saying whether invalid UTF-8 was replaced.
    pub async fn post_json_repaired<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(T, bool)> {
        let url = self.url(path, &[])?;
        self.send(Method::POST, url, Some(body)).await
    }

    async fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(T, bool)> {
        let method_name: &'static str = if method == Method::GET { "GET" } else { "POST" };
        let path = display_path(&url);
        let mut backoff = backoff(Duration::from_millis(250), Some(self.options.max_attempts.saturating_sub(1)));
        // CRM search has a budget of its own and no part in the general one.
        let search = is_crm_search(&url);
        loop {
            let limiter =
                if search { self.search_limiter.clone() } else { self.limiter.read().expect("limiter lock").1.clone() };
            let permit = match &limiter {
                Some(l) => Some(l.until_ready().await),
                None => None,
            };
            if permit.as_ref().is_some_and(|p| p.waited) {
                self.stats.paced.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(cost) = self.options.token_costs.and_then(|c| c.cost(method_name, url.path())) {
                self.stats.tokens.fetch_add(cost, Ordering::Relaxed);
            }
            let outcome = self.attempt(&method, method_name, &url, &path, body).await;
            drop(permit);
            let (err, wait) = match outcome {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(e, wait)) => (e, wait),
            };
            let Some(delay) = backoff.next() else {
                return Err(err);
            };
            let delay = wait.unwrap_or(delay);
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(method = method_name, path = %path, delay_ms = delay.as_millis() as u64, error = %err, "Retrying request.");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &Method,
        method_name: &'static str,
        url: &Url,
        path: &str,
        body: Option<&B>,
    ) -> std::result::Result<(T, bool), Attempt> {
        let mut request = self.inner.request(method.clone(), url.clone());
        request = match &self.options.auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiToken(token) => {
                let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                    Attempt::Final(Error::Config("the API token holds characters a header cannot carry".into()))
                })?;
                value.set_sensitive(true);
                request.header("x-api-token", value)
            }
        };
        if let Some(b) = body {
            request = request.json(b);
        }
        let transport = |e: reqwest::Error| {
            let retryable = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode();
            let err = Error::Transport { method: method_name, path: path.to_string(), detail: describe(&e), retryable };
            if retryable { Attempt::Retry(err, None) } else { Attempt::Final(err) }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        // Every request, for counting a run's call plan (`RUST_LOG=crmdump=debug`).
        tracing::debug!(method = method_name, path = %url.path(), status = status.as_u16(), "Answered.");
        let limits = RateLimitHeaders::parse(response.headers());
        if let Some(limits) = &limits {
            self.follow_account_limit(limits);
            *self.stats.limits.lock().expect("limits lock") = Some(limits.clone());
        }
        let seconds = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        };
        // Pipedrive sends no Retry-After; its x-ratelimit-reset says when the window resets.
        let retry_after = seconds("retry-after");
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .map(|l| l.origin().ascii_serialization());
        let reset = seconds("x-ratelimit-reset");
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            let parsed = match serde_json::from_slice(&bytes) {
                Ok(v) => Ok((v, false)),
                // Invalid UTF-8 is one bad value, not a bad page: replace it and read the rest.
                Err(e) if std::str::from_utf8(&bytes).is_err() => {
                    let repaired = String::from_utf8_lossy(&bytes);
                    serde_json::from_str(&repaired).map(|v| (v, true)).map_err(|_| e)
                }
                Err(e) => Err(e),
            };
            return parsed.map_err(|e| {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned();
                let detail = format!("{e}; the body ({} bytes) starts: {head:?}", bytes.len());
                Attempt::Retry(Error::Malformed { method: method_name, path: path.to_string(), detail }, None)
            });
        }
        if status.is_redirection() {
            let to = location.unwrap_or_else(|| "an unnamed location".into());
            return Err(Attempt::Final(Error::Api {
                method: method_name,
                path: path.to_string(),
                status: status.as_u16(),
                message: format!("redirected to {to}, another origin"),
                correlation: None,
                hint: "crmdump does not follow redirects to another origin, where the token would go; point --base-url at the API itself".into(),
            }));
        }
        let mut api = ApiError::parse(&bytes);
        // Pipedrive's spent daily budget: a 429 saying so, or no tokens left in the headers.
        if status == StatusCode::TOO_MANY_REQUESTS
            && (limits.as_ref().is_some_and(|l| l.daily_remaining == Some(0))
                || api.message.as_deref().is_some_and(|m| m.contains("daily")))
        {
            api.policy_name = Some("DAILY".into());
        }
        let err = Error::Api {
            method: method_name,
            path: path.to_string(),
            status: status.as_u16(),
            message: api.message.clone().unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
            correlation: api.correlation_id.clone(),
            hint: self.hint(status, &api),
        };
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after.or(reset).or(match api.policy_name.as_deref() {
                    Some("TEN_SECONDLY_ROLLING") => Some(Duration::from_secs(10)),
                    Some("SECONDLY") => Some(Duration::from_secs(1)),
                    _ => None,
                });
                if api.policy_name.as_deref() == Some("DAILY") {
                    Err(Attempt::Final(Error::DailyLimit(Box::new(err))))
                } else {
                    Err(Attempt::Retry(err, wait))
                }
            }
            s if s.is_server_error() => Err(Attempt::Retry(err, retry_after)),
            _ => Err(Attempt::Final(err)),
        }
    }

    /// Resizes the general limiter when the account's limit (from the headers) differs
    /// from the one enforced, so a higher tier's budget is used and a lower one respected.
    fn follow_account_limit(&self, limits: &RateLimitHeaders) {
        let (Some(max), Some(ms)) = (limits.max, limits.interval_ms) else {
            return;
        };
        if !self.options.adjust_from_headers || max == 0 || ms == 0 {
            return;
        }
        let account =
            RateLimit::PerPeriod { requests: max.min(u32::MAX as u64) as u32, period: Duration::from_millis(ms) };
        let mut current = self.limiter.write().expect("limiter lock");
        if current.0 != account {
            tracing::info!(
                requests = max,
                period_ms = ms,
                "Following the account's rate limit from the response headers."
            );
            let next = rate::Limiter::following(account, current.1.as_deref()).map(Arc::new);
            *current = (account, next);
        }
    }

    fn hint(&self, status: StatusCode, api: &ApiError) -> String {
        match status.as_u16() {
            401 => self.options.unauthorized_hint.to_string(),
            403 => match &api.missing_scopes {
                Some(scopes) if !scopes.is_empty() => {
                    format!("The token lacks the scope(s) {}: add them to the app and retry", scopes.join(", "))
                }
                _ => "The token is not allowed to read this: check the app's scopes".to_string(),
            },
            404 => "Check --base-url and the object type name".to_string(),
            414 => "The request URL was too long; please report this as a crmdump bug".to_string(),
            429 if api.policy_name.as_deref() == Some("DAILY") => self.options.daily_hint.to_string(),
            429 => "The account's rate limit was exceeded; lower --concurrency or --rate-limit".to_string(),
            s if s >= 500 => "The API failed repeatedly; try again later".to_string(),
            _ => "This looks like a crmdump bug; please report it with the correlationId".to_string(),
        }
    }
}

/// Redirects are followed only within the origin (scheme, host and port) they came from:
/// the token travels in a header (`Authorization`, or Pipedrive's `x-api-token`, which
/// reqwest would not strip), so following a redirect elsewhere would hand it to another
/// server, or send it in clear text over plain http. A redirect elsewhere ends the request
/// with its 3xx status, reported with where it pointed.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().last().map(Url::origin);
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if from.as_ref() == Some(&attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

enum Attempt {
    Retry(Error, Option<Duration>),
    Final(Error),
}

/// `POST /crm/v3/objects/{type}/search`.
fn is_crm_search(url: &Url) -> bool {
    url.path().starts_with("/crm/v3/objects/") && url.path().ends_with("/search")
}

/// Path and query of a URL, the part worth showing in messages.
fn display_path(url: &Url) -> String {
    let mut s = url.path().to_string();
    if let Some(q) = url.query() {
        s.push('?');
        if q.len() > 120 {
            s.push_str(&q[..q.floor_char_boundary(120)]);
            s.push('…');
        } else {
            s.push_str(q);
        }
    }
    s
}

/// reqwest's error with its causes, without the URL (already in our message).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.without_url_ref().to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_timeout() {
            "timed out"
        } else if self.is_connect() {
            "could not connect"
        } else if self.is_body() || self.is_decode() {
            "the response body was cut short or unreadable"
        } else {
            "request failed"
        };
        kind.to_string()
    }
}

/// The fields of an API error body we use; every one optional (HubSpot sends some or none).
#[derive(Debug, Default)]
struct ApiError {
    message: Option<String>,
    correlation_id: Option<String>,
    policy_name: Option<String>,
    missing_scopes: Option<Vec<String>>,
}

impl ApiError {
    fn parse(bytes: &[u8]) -> ApiError {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            let text = String::from_utf8_lossy(bytes);
            return ApiError {
                message: (!text.trim().is_empty()).then(|| text.chars().take(300).collect()),
                ..ApiError::default()
            };
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        // Pipedrive: {"success": false, "error": "...", "error_info": "..."}.
        let pipedrive = s("error").map(|e| match s("error_info") {
            Some(info) => format!("{e} ({info})"),
            None => e,
        });
        ApiError {
            message: s("message").or(pipedrive),
            correlation_id: s("correlationId"),
            policy_name: s("policyName"),
            missing_scopes: v
                .pointer("/context/missingScopes")
                .or_else(|| v.pointer("/errors/0/context/missingScopes"))
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_parse_with_every_field_optional() {
        let body = include_bytes!("../../fixtures/hubspot/429_ten_secondly.json");
        let e = ApiError::parse(body);
        assert_eq!(e.policy_name.as_deref(), Some("TEN_SECONDLY_ROLLING"));
        assert!(e.correlation_id.is_some());
        let e = ApiError::parse(br#"{"context":{"missingScopes":["crm.objects.deals.read"]}}"#);
        assert_eq!(e.missing_scopes.unwrap(), vec!["crm.objects.deals.read"]);
        assert_eq!(ApiError::parse(b"<html>").message.as_deref(), Some("<html>"));
    }
}
