//! The HTTP client every source uses: timeouts, pooling, compression, auth, the shared
//! rate budget, rate-limit telemetry and categorised errors, in one `get`; and the rules
//! that keep a hostile vendor from taking credentials ([`origin`]), memory ([`body`]) or
//! time ([`waits`]).

pub mod body;
mod config;
mod failure;
pub mod origin;
pub mod sign;
pub mod waits;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::{Instrument, debug, warn};

use crate::auth::Authenticator;
use crate::budget::{Grant, RateBudget, Since};
use crate::error::{Category, HttpError};
use crate::paginate::scrub_url;
use crate::telemetry::{Quota, Telemetry};
pub use config::{DEFAULT_MAX_RESPONSE_BYTES, HttpConfig, Timeouts};
pub(crate) use failure::transport_error;
use failure::{MAX_SHOWN_URL, body_error, snippet};
use origin::{MAX_REDIRECTS, Origin, RedirectPolicy};
use sqlx::PgPool;
use waits::Waits;

/// A successful response with its JSON body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status (2xx).
    pub status: u16,
    /// The headers (for `Link` paging and telemetry).
    pub headers: HeaderMap,
    /// The body, valid JSON (a byte-order mark before it already removed), kept as
    /// text: read a listing with [`crate::record::listing::read`] so its records stay
    /// exact, or anything else with [`Response::json`].
    pub body: bytes::Bytes,
    /// The URL that answered, credentials removed.
    pub url: String,
}

impl Response {
    /// The body parsed as a [`serde_json::Value`].
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The next page its `Link: <url>; rel="next"` header names, if any: resolved
    /// against this response's URL, scrubbed of credentials, and refused when it leads
    /// to another origin (as every paginator's next URL is).
    pub fn next_link(
        &self,
    ) -> Result<Option<crate::paginate::Position>, crate::paginate::PaginationError> {
        use crate::paginate::{PageView, PaginationError, Paginator, Position};
        let url = Url::parse(&self.url)
            .map_err(|err| PaginationError::malformed(format!("page URL: {err}")))?;
        let link: Vec<String> = self
            .headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect();
        let view = PageView {
            url: &url,
            link: &link,
            body: &serde_json::Value::Null,
            items: 0,
            last: None,
            total: None,
            secret_params: &[],
        };
        Paginator::LinkHeader.next(&Position::Start, &view)
    }
}

/// A request [`HttpClient::call`] makes: a method, a URL, and what goes with it.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    /// `GET`, `PUT`, `POST`, `PATCH` or `DELETE`.
    pub method: reqwest::Method,
    /// Absolute, or relative to the base URL.
    pub url: &'a str,
    /// Query parameters added to the URL's.
    pub query: &'a [(String, String)],
    /// A JSON body, sent with `Content-Type: application/json`.
    pub body: Option<bytes::Bytes>,
    /// Headers of this request only, such as `Idempotency-Key` or `If-Match`: never
    /// credentials (those are the client's, applied to its own origin only).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Call<'a> {
    /// A `GET` of `url` with `query`.
    pub fn get(url: &'a str, query: &'a [(String, String)]) -> Self {
        Self {
            method: reqwest::Method::GET,
            url,
            query,
            body: None,
            headers: Vec::new(),
        }
    }

    /// A `method` request to `url` with a JSON `body`.
    pub fn json(method: reqwest::Method, url: &'a str, body: bytes::Bytes) -> Self {
        Self {
            method,
            url,
            query: &[],
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// The same call with header `name` set to `value`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Whether the vendor may see this request twice without harm when an answer is
    /// lost: what a redirect may re-send.
    fn is_read(&self) -> bool {
        matches!(self.method, reqwest::Method::GET | reqwest::Method::HEAD)
    }
}

/// A vendor client. Cheap to clone; clones share connections, tokens and the budget.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    /// The only origin that gets credentials.
    origin: Origin,
    redirects: RedirectPolicy,
    /// Configured headers, resolved: (name, value, whether it is a credential).
    headers: Vec<(HeaderName, HeaderValue, bool)>,
    /// Query parameters that carry credentials, removed before a URL goes elsewhere.
    secret_params: Vec<String>,
    auth: Authenticator,
    budget: Option<RateBudget>,
    /// Where 429s are counted when there is no budget.
    tally: Option<(PgPool, String)>,
    max_response_bytes: u64,
    waits: Waits,
    /// Successes not yet reported to the budget.
    successes: AtomicU32,
    /// Answers (of any kind) to budgeted requests not yet reported to the budget.
    answered: AtomicU32,
    /// The vendor's daily quota as last reported, not yet passed to the budget.
    quota: std::sync::Mutex<Option<Quota>>,
    /// 429s retried inside one `get` before giving the wait to the engine.
    max_throttle_retries: u32,
    signer: Option<sign::SignerHandle>,
    /// When this client's last request actually left, and the least gap to keep after
    /// it: the budget spaces reservations exactly, but a request that leaves late (a
    /// busy scheduler) must not be followed by one that leaves on time.
    last_sent: Arc<SendGate>,
    min_gap: Duration,
    /// A request failed below HTTP: the next one will open a new connection.
    reconnect: std::sync::atomic::AtomicBool,
    /// Its requests go ahead of others' on the shared budget.
    urgent: bool,
}

type SendGate = tokio::sync::Mutex<Option<tokio::time::Instant>>;

/// The send gate of each budget in this process, shared by every client on the budget
/// (the vendor sees one caller, however many syncs run in the worker).
fn send_gate(key: &str) -> Arc<SendGate> {
    static GATES: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Arc<SendGate>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(gates.entry(key.to_owned()).or_default())
}

/// The User-Agent vendors see.
pub const USER_AGENT: &str = concat!("cairn/", env!("CARGO_PKG_VERSION"));

/// A response that is not a redirect, and where it came from.
struct Answer {
    response: reqwest::Response,
    shown: String,
    /// Whether it came from the source's own origin (so credentials went with it).
    own_origin: bool,
}

impl HttpClient {
    /// Builds a client for `config`. A configured rate limit needs `pool`: the budget
    /// lives in Postgres so every worker shares it.
    pub async fn new(config: HttpConfig, pool: Option<PgPool>) -> Result<Self, HttpError> {
        Self::with_secret_params(config, pool, Vec::new()).await
    }

    /// [`HttpClient::new`], also treating the query parameters `secret_params` as
    /// credentials (removed from shown URLs, never sent to another origin).
    pub async fn with_secret_params(
        config: HttpConfig,
        pool: Option<PgPool>,
        mut secret_params: Vec<String>,
    ) -> Result<Self, HttpError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base_url).map_err(|err| {
            HttpError::config(format!(
                "base_url `{}` is not a URL: {err}",
                redact_url(&base_url, &[])
            ))
        })?;
        let mut headers = Vec::new();
        for (name, setting) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::config(format!("`{name}` is not a valid header name")))?;
            let value = setting.resolve().await.map_err(|err| {
                HttpError::config(format!("cannot read header `{name}`: {err}")).caused_by(err)
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                HttpError::config(format!("the value of header `{name}` is not valid"))
            })?;
            let secret = setting.is_secret() || crate::headers::looks_like_credential(name);
            value.set_sensitive(secret);
            headers.push((header, value, secret));
        }
        install_tls_provider();
        let t = config.timeouts;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // Every hop is judged by hand: see `send`.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs_f64(t.connect_secs.max(0.001)))
            .read_timeout(Duration::from_secs_f64(t.read_secs.max(0.001)))
            .timeout(Duration::from_secs_f64(t.total_secs.max(0.001)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|err| HttpError::config(format!("cannot build the HTTP client: {err}")))?;
        let auth = Authenticator::new(&config.auth, &base_url, pool.as_ref()).await?;
        if let Some(param) = auth.secret_query_param() {
            secret_params.push(param.to_owned());
        }
        let default_key = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("local"),
            auth.identity()
        );
        // Without a limit of its own, a credential's 429s are still counted, under the
        // key a limit would get.
        let tally = match (&config.rate_limit, &pool) {
            (None, Some(pool)) => Some((pool.clone(), default_key.clone())),
            _ => None,
        };
        let budget = match (&config.rate_limit, pool) {
            (None, _) => None,
            (Some(limit), Some(pool)) => {
                if !(limit.requests_per_second > 0.0 && limit.requests_per_second.is_finite()) {
                    return Err(HttpError::config(
                        "rate_limit.requests_per_second must be a positive number",
                    ));
                }
                let key = limit.key.clone().unwrap_or(default_key);
                let budget = RateBudget::open(pool, &key, limit).await.map_err(|err| {
                    HttpError::config(format!("cannot open the rate budget `{key}`: {err}"))
                        .caused_by(err)
                })?;
                Some(budget)
            }
            (Some(_), None) => {
                return Err(HttpError::config(
                    "a rate limit is configured but no database was given for its shared budget",
                ));
            }
        };
        let last_sent = budget
            .as_ref()
            .map_or_else(Default::default, |b| send_gate(b.key()));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                origin: Origin::of(&parsed),
                redirects: RedirectPolicy::new(&config.allow_redirect_hosts),
                headers,
                secret_params,
                auth,
                budget,
                tally,
                max_response_bytes: config.max_response_bytes,
                waits: config.waits,
                successes: AtomicU32::new(0),
                answered: AtomicU32::new(0),
                quota: std::sync::Mutex::new(None),
                max_throttle_retries: 3,
                signer: config.signer.clone(),
                last_sent,
                min_gap: config.rate_limit.as_ref().map_or(Duration::ZERO, |l| {
                    Duration::from_secs_f64(1.0 / l.requests_per_second)
                }),
                reconnect: std::sync::atomic::AtomicBool::new(false),
                urgent: config.urgent,
            }),
        })
    }

    /// `request` to `url` with the signer's headers, as credentials.
    fn sign(
        &self,
        mut request: reqwest::RequestBuilder,
        method: &reqwest::Method,
        url: &Url,
        shown: &str,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        let Some(signer) = &self.inner.signer else {
            return Ok(request);
        };
        let unsigned = sign::Unsigned {
            method: method.as_str(),
            host: url.host_str().unwrap_or_default(),
            path: url.path(),
            query: url.query().unwrap_or_default(),
        };
        let refused = |message: String| {
            HttpError::request(Category::Config, method_name(method), shown, None, message)
        };
        let headers = signer
            .0
            .sign(&unsigned)
            .map_err(|why| refused(format!("the request cannot be signed: {why}")))?;
        for (name, value) in headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| refused(format!("the signer made an invalid header name `{name}`")))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| refused(format!("the signer made an invalid value for `{name}`")))?;
            value.set_sensitive(true);
            request = request.header(header, value);
        }
        Ok(request)
    }

    /// The API's root URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The shared rate budget, when one is configured.
    pub fn budget(&self) -> Option<&RateBudget> {
        self.inner.budget.as_ref()
    }

    /// GETs `url` (absolute, or relative to the base URL) with `query` and checks the
    /// body is JSON: [`HttpClient::call`] with [`Call::get`].
    pub async fn get(&self, url: &str, query: &[(String, String)]) -> Result<Response, HttpError> {
        self.call(&Call::get(url, query)).await
    }

    /// Makes `call` and checks that a body, if any, is JSON (a `GET` must have one).
    ///
    /// Takes a budget token first (waiting for it when the budget says so), applies
    /// credentials (an OAuth token is refreshed before it expires, and once more on a
    /// 401), follows redirects within the source's origin, reads the body within
    /// `max_response_bytes`, reads rate-limit headers, retries 429s whose wait is short,
    /// and returns every other failure categorised. A long wait comes back as
    /// [`Category::Throttled`] or [`Category::QuotaExhausted`] with its retry time
    /// (capped by the source's [`Waits`]), so the engine parks the run.
    ///
    /// A write is re-sent only where the vendor said it did not apply it (a 429, a 401
    /// before a token refresh), never after an answer that did not arrive: that comes
    /// back as [`Category::Network`] or [`Category::Timeout`], and whether to send it
    /// again (with the same idempotency key) is the caller's decision. A write is not
    /// redirected.
    pub async fn call(&self, call: &Call<'_>) -> Result<Response, HttpError> {
        let inner = &*self.inner;
        let method = method_name(&call.method);
        let (url, query) = (call.url, call.query);
        let joined = join_url(&inner.base_url, url);
        let mut target = Url::parse(&joined).map_err(|err| {
            HttpError::request(
                Category::Config,
                method,
                &self.redact(&joined),
                None,
                format!("not a URL: {err}"),
            )
        })?;
        if !query.is_empty() {
            target.query_pairs_mut().extend_pairs(query);
        }
        let mut refreshed = false;
        let mut throttles = 0;
        loop {
            let alone = self
                .take_token(method, &self.redact(target.as_str()))
                .await?;
            // One span per exchange (a retried 429 is another), the step's child when
            // traced: what OpenTelemetry shows of the vendor.
            let span = tracing::info_span!(
                "vendor request",
                vendor = %inner.origin,
                method,
                url = tracing::field::Empty,
                status = tracing::field::Empty,
                retry_after_s = tracing::field::Empty,
            );
            let sent = self.send(&target, call).instrument(span.clone()).await;
            if self.inner.budget.is_some() {
                self.inner.answered.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(mut gate) = alone {
                *gate = Some(tokio::time::Instant::now());
            }
            if let Err(err) = &sent
                && matches!(err.category(), Category::Network | Category::Timeout)
            {
                inner.reconnect.store(true, Ordering::Relaxed);
            }
            let Answer {
                response,
                shown,
                own_origin,
            } = sent?;
            let status = response.status().as_u16();
            span.record("status", status);
            span.record("url", shown.as_str());
            let headers = response.headers().clone();
            let telemetry = Telemetry::parse(&headers, Utc::now());
            if let Some(quota) = telemetry.quota
                && let Ok(mut seen) = self.inner.quota.lock()
            {
                *seen = Some(quota);
            }
            if let Some(absurd) = &telemetry.absurd {
                warn!(url = %shown, "{absurd}");
            }
            if (200..300).contains(&status) {
                let bytes = body::read_within(response, inner.max_response_bytes)
                    .await
                    .map_err(|err| body_error(method, &shown, status, err))?;
                let body = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
                    Some(rest) => bytes.slice_ref(rest),
                    None => bytes,
                };
                // Syntax only, without building anything (and without a depth limit): a
                // record nested too deep for a parser is the record's problem, not the
                // page's.
                let empty = body.iter().all(u8::is_ascii_whitespace);
                if !empty || call.is_read() {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|err| {
                        HttpError::request(
                            Category::MalformedBody,
                            method,
                            &shown,
                            Some(status),
                            format!("the body is not valid JSON ({err}; {} bytes)", body.len()),
                        )
                    })?;
                }
                self.after_success(&telemetry).await;
                return Ok(Response {
                    status,
                    headers,
                    body,
                    url: shown,
                });
            }
            let detail = body::error_text(response).await;
            let category = Category::of_status(status);
            if status == 401 && own_origin && !refreshed && inner.auth.can_refresh() {
                debug!(url = %shown, "401: refreshing the token and retrying once");
                inner.auth.invalidate().await;
                refreshed = true;
                continue;
            }
            if status == 429 {
                let (until, asked) = self.on_throttle(&telemetry).await;
                throttles += 1;
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                span.record("retry_after_s", wait.as_secs_f64());
                if throttles <= inner.max_throttle_retries
                    && inner.budget.is_some()
                    && wait <= self.max_wait()
                {
                    debug!(url = %shown, ?wait, "429: waiting for the budget and retrying");
                    continue;
                }
                return Err(HttpError::request(
                    category,
                    method,
                    &shown,
                    Some(status),
                    "rate limited",
                )
                .retry_at(until)
                .with_asked_until(asked));
            }
            if status == 403
                && (detail.contains("REQUEST_LIMIT_EXCEEDED")
                    || telemetry.quota.is_some_and(|q| q.is_spent()))
            {
                let asked = telemetry.reset_at.unwrap_or_else(waits::next_utc_midnight);
                let until = inner.waits.cap_quota(asked);
                warn!(url = %shown, %until, "API quota spent; pausing until it resets");
                if let Some(budget) = &inner.budget {
                    let _ = budget.hold_until(until).await;
                }
                return Err(HttpError::request(
                    Category::QuotaExhausted,
                    method,
                    &shown,
                    Some(status),
                    "the vendor's API quota is spent",
                )
                .retry_at(until)
                .with_asked_until((asked > until).then_some(asked)));
            }
            return Err(HttpError::request(
                category,
                method,
                &shown,
                Some(status),
                snippet(&detail),
            ));
        }
    }

    /// Sends `call` to `target`, following at most [`MAX_REDIRECTS`] redirects (a read
    /// only). The source's origin gets its headers and credentials; another origin only
    /// if its host is allowed, and then without any credential; any other is refused.
    async fn send(&self, target: &Url, call: &Call<'_>) -> Result<Answer, HttpError> {
        let inner = &*self.inner;
        let method = method_name(&call.method);
        let mut current = target.clone();
        let mut hops = 0;
        loop {
            let origin = Origin::of(&current);
            let own_origin = origin == inner.origin;
            let shown = self.redact(current.as_str());
            if !own_origin && !inner.redirects.allows(&origin) {
                let how = if hops == 0 {
                    "a link the vendor gave points"
                } else {
                    "the vendor redirected"
                };
                return Err(HttpError::request(
                    Category::Redirect,
                    method,
                    &shown,
                    None,
                    format!(
                        "{how} to {origin}, another origin than the source's {}; cairn does not \
                         follow it (credentials go only to the source's origin). If {} is the \
                         vendor's, list it in allow_redirect_hosts: it then gets no credential",
                        inner.origin,
                        origin.host()
                    ),
                ));
            }
            let request = if own_origin {
                let mut request = inner.http.request(call.method.clone(), current.clone());
                for (name, value, _) in &inner.headers {
                    request = request.header(name, value);
                }
                let request = self.sign(request, &call.method, &current, &shown)?;
                inner.auth.apply(request, &inner.http).await?
            } else {
                let mut request = inner.http.request(
                    call.method.clone(),
                    scrub_url(&current, &inner.secret_params),
                );
                for (name, value, secret) in &inner.headers {
                    if !secret {
                        request = request.header(name, value);
                    }
                }
                request
            };
            let mut request = request;
            for (name, value) in &call.headers {
                request = request.header(name, value);
            }
            if let Some(body) = &call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|err| transport_error(method, &shown, err))?;
            if !response.status().is_redirection() {
                return Ok(Answer {
                    response,
                    shown,
                    own_origin,
                });
            }
            let status = response.status().as_u16();
            if !call.is_read() {
                return Err(HttpError::request(
                    Category::Redirect,
                    method,
                    &shown,
                    Some(status),
                    "the vendor redirected a write; cairn does not send a write anywhere but \
                     where it was addressed (fix the destination's base URL or path)",
                ));
            }
            let Some(next) = origin::location(&current, response.headers()) else {
                return Err(HttpError::request(
                    Category::Redirect,
                    method,
                    &shown,
                    Some(status),
                    "a redirect without a usable http(s) Location",
                ));
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(HttpError::request(
                    Category::Redirect,
                    method,
                    &shown,
                    Some(status),
                    format!("more than {MAX_REDIRECTS} redirects"),
                ));
            }
            debug!(from = %shown, to = %self.redact(next.as_str()), "following a redirect");
            current = next;
        }
    }

    fn max_wait(&self) -> Duration {
        self.inner
            .budget
            .as_ref()
            .map_or(Duration::ZERO, RateBudget::max_wait)
    }

    /// Waits for the budget's token and for the gap after this process's last request.
    /// After a lost connection, the next request goes alone: it returns the gate still
    /// held, and the caller sets it when the answer came. A request on a new connection
    /// (a TCP, perhaps a TLS handshake) reaches the vendor late by an amount nobody
    /// knows, and the one after it, on a warm connection, would arrive too close behind.
    async fn take_token(
        &self,
        method: &'static str,
        shown: &str,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<Option<tokio::time::Instant>>>, HttpError> {
        let Some(budget) = &self.inner.budget else {
            return Ok(None);
        };
        let unreachable = |err: sqlx::Error| {
            HttpError::request(
                Category::Network,
                method,
                shown,
                None,
                "the rate budget is unreachable",
            )
            .caused_by(err)
        };
        let started = tokio::time::Instant::now();
        let grant = loop {
            let since = Since {
                successes: self.inner.successes.swap(0, Ordering::Relaxed),
                answered: self.inner.answered.swap(0, Ordering::Relaxed),
                quota: self.inner.quota.lock().ok().and_then(|mut q| q.take()),
            };
            match budget
                .acquire_reporting(&since, self.inner.urgent)
                .await
                .map_err(unreachable)?
            {
                // Urgent traffic has the budget: wait for it here while the wait is
                // short, and park the run once it is not.
                Grant::Yield(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    if started.elapsed() + wait > budget.max_wait() {
                        break Grant::Refused(at);
                    }
                    tokio::time::sleep(wait).await;
                }
                grant => break grant,
            }
        };
        match grant {
            Grant::At(at) => {
                if let Ok(wait) = (at - Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                let mut last = Arc::clone(&self.inner.last_sent).lock_owned().await;
                if let Some(previous) = *last {
                    tokio::time::sleep_until(previous + self.inner.min_gap).await;
                }
                *last = Some(tokio::time::Instant::now());
                if self.inner.reconnect.swap(false, Ordering::Relaxed) {
                    return Ok(Some(last));
                }
                Ok(None)
            }
            Grant::Refused(at) | Grant::Yield(at) => Err(HttpError::request(
                Category::Throttled,
                method,
                shown,
                None,
                "the shared rate budget is paused, or taken by urgent requests",
            )
            .retry_at(at)),
        }
    }

    async fn after_success(&self, telemetry: &Telemetry) {
        self.inner.waits.succeeded(&self.backoff_key());
        let Some(budget) = &self.inner.budget else {
            return;
        };
        self.inner.successes.fetch_add(1, Ordering::Relaxed);
        if let (Some(0), Some(reset)) = (telemetry.remaining, telemetry.reset_at) {
            // The window is used up: wait for it rather than provoke a 429. Reset times
            // come in whole seconds, so a reset within two seconds says too little to
            // pace by (a token bucket with a small burst reports one after every request);
            // the budget's own pacing covers those.
            if reset - Utc::now() < chrono::Duration::seconds(2) {
                return;
            }
            let reset = self.inner.waits.cap_rate_limit(reset);
            if let Err(err) = budget.hold_until(reset).await {
                warn!(error = %err, "cannot record the vendor's exhausted window");
            }
        }
    }

    /// Records a 429 and says until when to wait: the vendor's `Retry-After` capped
    /// by the source's `max_rate_limit_wait`, or a growing, jittered backoff when it gave
    /// none (or `0`, or a value that is not obeyed). Also returns what the vendor asked
    /// for when the cap cut it short.
    async fn on_throttle(&self, telemetry: &Telemetry) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let now = Utc::now();
        // `Retry-After` first; a vendor that only says when its window resets means
        // the same thing.
        let asked = telemetry
            .retry_after
            .or(telemetry.reset_at)
            .filter(|at| *at > now);
        let capped = asked.map(|at| self.inner.waits.cap_rate_limit(at));
        let until = match &self.inner.budget {
            Some(budget) => match budget.throttle(capped).await {
                Ok(until) => until,
                Err(err) => {
                    warn!(error = %err, "cannot record a 429 in the rate budget");
                    capped.unwrap_or_else(|| self.inner.waits.backoff(&self.backoff_key()))
                }
            },
            None => {
                if let Some((pool, key)) = &self.inner.tally
                    && let Err(err) = crate::budget::count_throttle(pool, key).await
                {
                    warn!(error = %err, "cannot count a 429");
                }
                capped.unwrap_or_else(|| self.inner.waits.backoff(&self.backoff_key()))
            }
        };
        (until, asked.filter(|at| Some(*at) != capped))
    }

    /// Whose 429s share a backoff streak: this origin with these credentials.
    fn backoff_key(&self) -> String {
        format!("{}#{}", self.inner.origin, self.inner.auth.identity())
    }

    /// The URL without credentials, for messages and logs.
    fn redact(&self, url: &str) -> String {
        let mut url = redact_url(url, &self.inner.secret_params);
        if url.len() > MAX_SHOWN_URL {
            let mut end = MAX_SHOWN_URL;
            while !url.is_char_boundary(end) {
                end -= 1;
            }
            url.truncate(end);
            url.push_str("...");
        }
        url
    }
}

/// A method's name for messages.
fn method_name(method: &reqwest::Method) -> &'static str {
    use reqwest::Method;
    [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
    ]
    .into_iter()
    .zip(["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"])
    .find_map(|(known, name)| (known == method).then_some(name))
    .unwrap_or("request")
}

/// Installs `ring` as the process's TLS crypto provider unless one is installed.
///
/// This crate builds reqwest without a built-in provider (ring compiles far faster than
/// aws-lc), and cargo unifies that choice for every reqwest in the build: code that builds
/// its own `reqwest::Client` in the same process calls this first. [`HttpClient::new`]
/// does it itself.
pub fn install_tls_provider() {
    // Another crate may have installed one already; any provider will do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `path` resolved against `base` (absolute URLs are kept).
pub fn join_url(base: &str, path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        path.to_owned()
    } else if path.starts_with('/') {
        format!("{}{path}", base.trim_end_matches('/'))
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

/// `url` as it may be shown: without user info, the well-known credential parameters
/// ([`crate::paginate::SECRET_PARAMS`]) or `secret_params` (see
/// [`crate::paginate::scrub_url`]). Text that is not a URL is returned as it is.
pub fn redact_url(url: &str, secret_params: &[String]) -> String {
    Url::parse(url).map_or_else(
        |_| url.to_owned(),
        |parsed| scrub_url(&parsed, secret_params).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_and_lose_their_credentials() {
        assert_eq!(join_url("http://h:1/", "/v1/x"), "http://h:1/v1/x");
        assert_eq!(join_url("http://h:1", "v1/x"), "http://h:1/v1/x");
        assert_eq!(join_url("http://h:1", "https://o/x"), "https://o/x");
        assert_eq!(
            redact_url("http://u:p@h/x?api_key=s3cret&limit=5", &[]),
            "http://h/x?limit=5"
        );
        assert_eq!(
            redact_url("http://h/x?tenant_key=s3cret", &["tenant_key".to_owned()]),
            "http://h/x"
        );
        assert_eq!(redact_url("not a url", &[]), "not a url");
    }
}
