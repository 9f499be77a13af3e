//! The listener's HTTP side: one endpoint per source and a health endpoint, in front of the
//! spool and the drainer.
//!
//! A request is answered 200 only once it is durably in the spool; 401 when its sender fails
//! authentication (nothing of it kept); 413 when its body is over the limit; 408 when its
//! headers or body do not arrive within their deadlines; 503 when the spool is full, so that
//! the sender retries later. Bodies being read and requests being handled are bounded, and so
//! is each body, so memory is bounded whatever the load; a request takes a handling turn only
//! once its body is in, so hundreds of slow or stalled senders cannot keep valid requests
//! waiting. The drainer runs beside the server and moves the spool into the journal; on
//! shutdown it drains what it can before the process exits, and whatever is left waits in the
//! spool for the next start.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::auth::{self, HubSpotSignature, Refusal};
use super::drain::Drainer;
use super::spool::{Spool, SpoolError};
use super::stats::{Stats, add};
use crate::error::{Error, Result};

/// The health endpoint's path.
pub const HEALTH_PATH: &str = "/healthz";
/// Where Prometheus scrapes the listener.
pub const METRICS_PATH: &str = "/metrics";

/// HubSpot's credentials: the app's client secret.
#[derive(Clone)]
pub struct HubSpotAuth {
    pub secret: String,
    /// Accept requests signed with v1 only (no timestamp, so a replay cannot be refused).
    pub allow_v1: bool,
}

/// Pipedrive's credentials: the basic auth set on the webhook.
#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

/// How the listener serves. Debug shows no secret.
#[derive(Clone)]
pub struct Settings {
    pub hubspot: Option<HubSpotAuth>,
    pub hubspot_path: String,
    pub pipedrive: Option<BasicAuth>,
    pub pipedrive_path: String,
    /// The public base URL the senders call (behind a TLS-terminating proxy): HubSpot signs
    /// `<public_url><path>`, which the listener never sees.
    pub public_url: Option<String>,
    /// Take the public scheme and host from `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub trust_forwarded: bool,
    pub max_body: usize,
    pub max_in_flight: usize,
    /// How long the drainer gathers requests before writing a journal part.
    pub flush_interval: Duration,
    /// How long a connection may take to send a request's headers (and may sit idle between
    /// requests) before it is closed.
    pub header_timeout: Duration,
    /// How long a request may take to send its body before it is answered 408.
    pub body_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("hubspot", &self.hubspot.as_ref().map(|_| &self.hubspot_path))
            .field("pipedrive", &self.pipedrive.as_ref().map(|_| &self.pipedrive_path))
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Which CRM sent a webhook request (the path it came to says).
#[derive(Debug, Clone, Copy)]
enum Sender {
    HubSpot,
    Pipedrive,
}

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::HubSpot => "hubspot",
            Sender::Pipedrive => "pipedrive",
        }
    }
}

struct Shared {
    settings: Settings,
    spool: Arc<Spool>,
    stats: Arc<Stats>,
    /// Bodies being read at once (each at most `max_body`): bounds memory.
    readers: Semaphore,
    /// Requests being authenticated and spooled at once.
    permits: Semaphore,
    /// Wakes the drainer when a request was spooled.
    spooled: Notify,
    /// What `/metrics` serves.
    metrics: prometheus_client::registry::Registry,
}

/// Serves on `listener` until `shutdown`, then drains what it can and returns.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    spool: Arc<Spool>,
    drainer: Drainer,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<()> {
    let shared = Arc::new(Shared {
        metrics: super::stats::registry(stats.clone(), spool.clone()),
        readers: Semaphore::new(settings.max_in_flight.max(1) * READERS_PER_TURN),
        permits: Semaphore::new(settings.max_in_flight.max(1)),
        settings,
        spool,
        stats,
        spooled: Notify::new(),
    });
    let stop_draining = CancellationToken::new();
    let drain = tokio::spawn(drain_loop(drainer, shared.clone(), stop_draining.clone()));
    let mut app = Router::new().route(HEALTH_PATH, get(health)).route(METRICS_PATH, get(metrics));
    if shared.settings.hubspot.is_some() {
        app = app.route(&shared.settings.hubspot_path, post(hubspot));
    }
    if shared.settings.pipedrive.is_some() {
        app = app.route(&shared.settings.pipedrive_path, post(pipedrive));
    }
    let served = accept_all(listener, app.with_state(shared.clone()), &shared.settings, shutdown).await;
    stop_draining.cancel();
    drain.await.map_err(|e| Error::Internal(format!("the drainer stopped: {e}")))?;
    served
}

/// Bodies read at once per handling turn (`--max-in-flight`): a slow sender holds a reader,
/// never a turn.
const READERS_PER_TURN: usize = 16;

/// Serves every connection of `listener` with hyper's HTTP/1, each request's headers within
/// the header deadline, until `shutdown`; then waits for the requests in progress (at most
/// their deadlines).
async fn accept_all(
    listener: TcpListener,
    app: Router,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(settings.header_timeout);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection that ends badly (reset, headers too slow) concerns that sender only.
            let _ = connection.await;
        });
    }
    drop(listener);
    let last = settings.header_timeout + settings.body_timeout;
    if tokio::time::timeout(last, graceful.shutdown()).await.is_err() {
        tracing::warn!("Connections still open at shutdown were closed.");
    }
    Ok(())
}

/// Drains the spool whenever requests arrive (gathering them for `flush_interval` first),
/// retrying with backoff while the destination fails; after `stop`, until the spool is empty
/// or the destination fails.
async fn drain_loop(mut drainer: Drainer, shared: Arc<Shared>, stop: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let mut backoff = crate::http::backoff(FIRST_BACKOFF, None);
    loop {
        match drainer.step().await {
            Ok(drained) if drained.requests > 0 => {
                shared.stats.drained();
                backoff = crate::http::backoff(FIRST_BACKOFF, None);
            }
            Ok(_) => {
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = shared.spooled.notified() => {
                        tokio::select! {
                            () = tokio::time::sleep(shared.settings.flush_interval) => {}
                            () = stop.cancelled() => {}
                        }
                    }
                    () = stop.cancelled() => {}
                }
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(FIRST_BACKOFF);
                tracing::warn!(error = %e, retry_in = ?wait, "Cannot drain the spool into the destination; requests stay acknowledged in the spool.");
                shared.stats.drain_failed(e.to_string());
                if stop.is_cancelled() {
                    tracing::warn!(
                        pending_bytes = shared.spool.used_bytes(),
                        "Stopping with requests in the spool: the next start drains them."
                    );
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }
}

async fn hubspot(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    receive(&shared, Sender::HubSpot, request).await
}

async fn pipedrive(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    receive(&shared, Sender::Pipedrive, request).await
}

fn answer(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({"status": text}).to_string()).into_response()
}

/// The body of a request: at most `max` bytes, within `deadline`.
enum Body {
    Read(bytes::Bytes),
    TooLarge,
    TooSlow,
    /// The sender went away or sent a broken body.
    Broken,
}

async fn read_body(body: axum::body::Body, declared: Option<usize>, max: usize, deadline: Duration) -> Body {
    use http_body_util::BodyExt;
    if declared.is_some_and(|n| n > max) {
        return Body::TooLarge;
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Body::TooSlow,
        Ok(Ok(collected)) => Body::Read(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Body::TooLarge,
        Ok(Err(_)) => Body::Broken,
    }
}

async fn receive(shared: &Shared, sender: Sender, request: Request) -> Response {
    let arrived = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let max = shared.settings.max_body;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let read = {
        let Ok(_reader) = shared.readers.acquire().await else {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        };
        read_body(body, declared, max, shared.settings.body_timeout).await
    };
    let body = match read {
        Body::Read(body) => body,
        Body::TooLarge => {
            add(&shared.stats.too_large, 1);
            tracing::warn!(
                source = sender.name(),
                limit = max,
                "Refused a request whose body is over the limit (413)."
            );
            return answer(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is over {max} bytes"));
        }
        Body::TooSlow => {
            add(&shared.stats.timed_out, 1);
            let deadline = shared.settings.body_timeout;
            tracing::warn!(source = sender.name(), deadline = ?deadline, "Refused a request whose body did not arrive in time (408).");
            return answer(StatusCode::REQUEST_TIMEOUT, &format!("the body did not arrive within {deadline:?}"));
        }
        Body::Broken => {
            add(&shared.stats.broken, 1);
            return answer(StatusCode::BAD_REQUEST, "the body could not be read");
        }
    };
    // A turn is taken only now that the body is in.
    let Ok(_permit) = shared.permits.acquire().await else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Err(refusal) = authenticate(&shared.settings, sender, &parts, &body, now_ms) {
        shared.stats.refused(refusal.reason());
        tracing::warn!(source = sender.name(), reason = %refusal, "Refused a request that failed authentication (401); nothing of it was kept.");
        return answer(StatusCode::UNAUTHORIZED, &refusal.to_string());
    }
    let spool = shared.spool.clone();
    let kept = tokio::task::spawn_blocking(move || spool.accept(sender.name(), now_ms, &body)).await;
    match kept {
        Ok(Ok(_)) => {
            add(&shared.stats.accepted, 1);
            shared.stats.ack_latency.observe(arrived.elapsed().as_secs_f64());
            shared.spooled.notify_one();
            answer(StatusCode::OK, "accepted")
        }
        Ok(Err(e @ SpoolError::Full { .. })) => {
            add(&shared.stats.unavailable, 1);
            tracing::warn!(error = %e, "Spool full: answered 503 so that the sender retries later.");
            let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("60"));
            response
        }
        Ok(Err(e)) => {
            add(&shared.stats.unavailable, 1);
            tracing::error!(error = %e, "Cannot write to the spool: answered 500 so that the sender retries.");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "cannot keep the request")
        }
        Err(e) => {
            add(&shared.stats.unavailable, 1);
            tracing::error!(error = %e, "Spooling failed.");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "cannot keep the request")
        }
    }
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The URL the sender called, as HubSpot signs it: the public URL when given, else the
/// forwarded scheme and host when trusted, else this listener's own.
fn called_url(settings: &Settings, parts: &axum::http::request::Parts) -> String {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(base) = &settings.public_url {
        return format!("{}{path}", base.trim_end_matches('/'));
    }
    let first = |name: &str| header_value(&parts.headers, name).and_then(|v| v.split(',').next()).map(str::trim);
    let host = first("host").unwrap_or("localhost");
    if settings.trust_forwarded {
        let proto = first("x-forwarded-proto").unwrap_or("https");
        return format!("{proto}://{}{path}", first("x-forwarded-host").unwrap_or(host));
    }
    format!("http://{host}{path}")
}

fn authenticate(
    settings: &Settings,
    sender: Sender,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now_ms: i64,
) -> std::result::Result<(), Refusal> {
    let headers = &parts.headers;
    match sender {
        Sender::HubSpot => {
            let hubspot = settings.hubspot.as_ref().ok_or(Refusal::MissingSignature)?;
            let signature = HubSpotSignature {
                v3: header_value(headers, "x-hubspot-signature-v3"),
                timestamp: header_value(headers, "x-hubspot-request-timestamp"),
                legacy: header_value(headers, "x-hubspot-signature"),
                legacy_version: header_value(headers, "x-hubspot-signature-version"),
            };
            let uri = called_url(settings, parts);
            auth::verify_hubspot(
                &hubspot.secret,
                parts.method.as_str(),
                &uri,
                body,
                &signature,
                hubspot.allow_v1,
                now_ms,
            )
        }
        Sender::Pipedrive => {
            let basic = settings.pipedrive.as_ref().ok_or(Refusal::BadCredentials)?;
            auth::verify_basic(&basic.user, &basic.password, header_value(headers, "authorization"))
        }
    }
}

/// Prometheus' text format (OpenMetrics) of [`super::stats`].
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &shared.metrics) {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot encode the metrics: {e}"));
    }
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = shared.stats.snapshot();
    let pending = shared.spool.pending().map(|p| p.len()).unwrap_or(0);
    // Degraded: the destination fails, or the spool is (nearly) full and requests get 503.
    let (used, limit) = (shared.spool.used_bytes(), shared.spool.limit_bytes());
    let degraded = body["last_drain_error"].is_string() || used.saturating_mul(10) >= limit.saturating_mul(9);
    body["status"] = json!(if degraded { "degraded" } else { "ok" });
    body["spool"] =
        json!({"bytes": shared.spool.used_bytes(), "limit": shared.spool.limit_bytes(), "pending": pending});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(public_url: Option<&str>, trust_forwarded: bool) -> Settings {
        Settings {
            hubspot: None,
            hubspot_path: "/hubspot".into(),
            pipedrive: None,
            pipedrive_path: "/pipedrive".into(),
            public_url: public_url.map(String::from),
            trust_forwarded,
            max_body: 1,
            max_in_flight: 1,
            flush_interval: Duration::ZERO,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }

    fn parts(headers: &[(&str, &str)]) -> axum::http::request::Parts {
        let mut request = axum::http::Request::post("/hubspot?x=1");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_signed_url_is_the_public_one() {
        let p = parts(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hooks.example.com"),
        ]);
        assert_eq!(
            called_url(&settings(Some("https://hooks.example.com/"), false), &p),
            "https://hooks.example.com/hubspot?x=1"
        );
        assert_eq!(called_url(&settings(None, true), &p), "https://hooks.example.com/hubspot?x=1");
        assert_eq!(
            called_url(&settings(None, false), &p),
            "http://10.0.0.5:8080/hubspot?x=1",
            "forwarded headers only when trusted"
        );
    }
}
