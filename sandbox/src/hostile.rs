//! A hostile vendor: attacks on the client rather than mere faults, each a knob of
//! [`Hostile`] that a test switches on to prove cairn withstands it. They apply to API
//! requests, before credentials are checked.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::config::AuthConfig;
use super::vendor::Vendor;

/// The attacks a sandbox makes (all off by default).
#[derive(Clone, Debug, Default)]
pub struct Hostile {
    /// API requests are redirected (302) to this origin, e.g. `http://127.0.0.2:9000`,
    /// path and query kept (an API key in the query included).
    pub redirect_to: Option<String>,
    /// API requests are redirected this many times within the vendor before answered.
    pub redirect_hops: u32,
    /// API requests are answered 400 with a body that echoes every credential the
    /// request carried (and the OAuth client secret).
    pub echo_credentials: bool,
    /// API requests are answered 400 with this text as the body: an error message a
    /// client will show somewhere (a test puts markup in it).
    pub error_body: Option<String>,
    /// The token endpoint answers 401 `invalid_client`, echoing the client secret sent.
    pub refuse_clients: bool,
    /// The API answers 401 to every token, even one just issued (credentials revoked
    /// while the token endpoint still hands tokens out).
    pub reject_tokens: bool,
    /// API requests are answered with a JSON body this many bytes long, streamed.
    pub huge_body: Option<u64>,
    /// API requests are answered with a gzip body that inflates to this many bytes.
    pub gzip_bomb: Option<u64>,
    /// API requests are answered one byte per this interval.
    pub trickle: Option<Duration>,
    /// The cursors of the HubSpot listing and of the ids listing misbehave.
    pub paging: Option<PagingAttack>,
    /// The first API requests are answered 429 with these headers.
    pub throttle: Option<Throttle>,
    /// GraphQL answers that drop their last node and carry an `errors` entry for it,
    /// with status 200 (a resolver that failed): each answer takes one, until none are
    /// left (shared by clones).
    pub partial_graphql: Arc<AtomicU32>,
}

/// How a listing's cursors can keep a client paging forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PagingAttack {
    /// The page at cursor A names A as the next one.
    SelfLoop,
    /// A names B, B names A.
    TwoCycle,
    /// Every page names a new cursor and serves the same records.
    FreshCursors,
}

/// 429s with whatever rate-limit headers a test wants, for the first `count` requests.
#[derive(Clone, Debug, Default)]
pub struct Throttle {
    /// How many API requests are refused.
    pub count: u32,
    /// The raw `Retry-After` value, if any.
    pub retry_after: Option<String>,
    /// The raw `X-RateLimit-Reset` value, if any.
    pub reset: Option<String>,
    /// How many have been refused so far (shared by clones).
    pub refused: Arc<AtomicU32>,
    /// When each API request arrived, refused or not (shared by clones): the spacing
    /// of a client's retries.
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// The middleware that makes the attacks.
pub(crate) async fn attack(State(vendor): State<Vendor>, request: Request, next: Next) -> Response {
    let hostile = vendor.hostile();
    if let Some(throttle) = &hostile.throttle {
        throttle
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Instant::now());
    }
    if let Some(throttle) = &hostile.throttle
        && throttle.refused.fetch_add(1, Ordering::SeqCst) < throttle.count
    {
        let mut response =
            super::api::error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
        for (name, value) in [
            ("retry-after", &throttle.retry_after),
            ("x-ratelimit-reset", &throttle.reset),
        ] {
            if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    if let Some(origin) = &hostile.redirect_to {
        let target = format!("{origin}{}", path_and_query(request.uri()));
        return redirect(&target);
    }
    if hostile.redirect_hops > 0 {
        let hop = hop_of(request.uri());
        if hop < hostile.redirect_hops {
            return redirect(&with_hop(request.uri(), hop + 1));
        }
    }
    if hostile.echo_credentials {
        return echo(&vendor, &request);
    }
    if let Some(body) = &hostile.error_body {
        return (StatusCode::BAD_REQUEST, body.clone()).into_response();
    }
    if let Some(size) = hostile.huge_body {
        return streamed(huge(size), None);
    }
    if let Some(size) = hostile.gzip_bomb {
        return streamed(bomb(size), Some("gzip"));
    }
    if let Some(interval) = hostile.trickle {
        return streamed(trickle(interval), None);
    }
    if let Some(attack) = hostile.paging {
        return paging(attack, request, next).await;
    }
    next.run(request).await
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn hop_of(uri: &Uri) -> u32 {
    query_pairs(uri)
        .iter()
        .find(|(k, _)| k == "_hop")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn with_query(uri: &Uri, pairs: &[(String, String)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{query}", uri.path())
    }
}

fn with_hop(uri: &Uri, hop: u32) -> String {
    let mut pairs: Vec<_> = query_pairs(uri)
        .into_iter()
        .filter(|(k, _)| k != "_hop")
        .collect();
    pairs.push(("_hop".to_owned(), hop.to_string()));
    with_query(uri, &pairs)
}

/// A 400 whose body repeats the credentials: what a careless vendor's error page does.
fn echo(vendor: &Vendor, request: &Request) -> Response {
    let headers = request.headers();
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let client_secret = match &vendor.inner().config.auth {
        AuthConfig::OAuth(oauth) => Some(oauth.client_secret.expose().to_owned()),
        _ => None,
    };
    let status = if headers.contains_key(header::AUTHORIZATION) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNAUTHORIZED
    };
    (
        status,
        axum::Json(json!({
            "error": "bad_request",
            "message": format!(
                "request with Authorization {:?} rejected; check client_secret={}",
                text(header::AUTHORIZATION).unwrap_or_default(),
                client_secret.clone().unwrap_or_default()
            ),
            "received": {
                "authorization": text(header::AUTHORIZATION),
                "x-api-key": text(header::HeaderName::from_static("x-api-key")),
                "query": request.uri().query(),
                "client_secret": client_secret,
            }
        })),
    )
        .into_response()
}

fn streamed(
    chunks: impl futures::Stream<Item = Bytes> + Send + 'static,
    encoding: Option<&'static str>,
) -> Response {
    use futures::StreamExt;
    let body = Body::from_stream(chunks.map(Ok::<Bytes, std::io::Error>));
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(encoding) = encoding {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

const PAD_START: &[u8] = br#"{"results":[],"padding":""#;
const PAD_END: &[u8] = br#""}"#;
const CHUNK: usize = 1 << 20;

/// A valid JSON page of `size` bytes, produced as it is read.
fn huge(size: u64) -> impl futures::Stream<Item = Bytes> + Send {
    let filler = Bytes::from(vec![b'x'; CHUNK]);
    let body_len = size.saturating_sub((PAD_START.len() + PAD_END.len()) as u64);
    let middle = futures::stream::unfold(body_len, move |left| {
        let filler = filler.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(CHUNK as u64) as usize;
                (filler.slice(..n), left - n as u64)
            })
        }
    });
    use futures::StreamExt;
    futures::stream::once(async { Bytes::from_static(PAD_START) })
        .chain(middle)
        .chain(futures::stream::once(async { Bytes::from_static(PAD_END) }))
}

/// A gzip stream that inflates to a JSON page of `size` bytes, compressed as it is read.
fn bomb(size: u64) -> impl futures::Stream<Item = Bytes> + Send {
    use std::io::Write;
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b'0'; CHUNK];
    futures::stream::unfold(Some((encoder, size, true)), move |state| {
        let zeros = zeros.clone();
        async move {
            let (mut encoder, left, first) = state?;
            let result = (|| -> std::io::Result<Option<Bytes>> {
                if first {
                    encoder.write_all(PAD_START)?;
                }
                if left == 0 {
                    encoder.write_all(PAD_END)?;
                    return Ok(None);
                }
                let n = left.min(CHUNK as u64) as usize;
                encoder.write_all(&zeros[..n])?;
                Ok(Some(Bytes::from(std::mem::take(encoder.get_mut()))))
            })();
            match result {
                Ok(Some(chunk)) => Some((
                    chunk,
                    Some((encoder, left - (left.min(CHUNK as u64)), false)),
                )),
                Ok(None) => encoder.finish().ok().map(|tail| (Bytes::from(tail), None)),
                Err(_) => None,
            }
        }
    })
}

/// A valid JSON page, one byte per `interval`.
fn trickle(interval: Duration) -> impl futures::Stream<Item = Bytes> + Send {
    let page: &'static [u8] = br#"{"results":[]}"#;
    futures::stream::unfold(0usize, move |at| async move {
        if at >= page.len() {
            return None;
        }
        if at > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((Bytes::from_static(&page[at..=at]), at + 1))
    })
}

/// The listing's first page with a next cursor that never lets the client finish.
async fn paging(attack: PagingAttack, request: Request, next: Next) -> Response {
    let pairs = query_pairs(request.uri());
    let after = pairs
        .iter()
        .find(|(k, _)| k == "after")
        .map(|(_, v)| v.clone());
    let kept: Vec<_> = pairs.into_iter().filter(|(k, _)| k != "after").collect();
    let uri: Uri = match with_query(request.uri(), &kept).parse() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    let response = next.run(Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut page) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let next_cursor = match (attack, after.as_deref()) {
        (PagingAttack::SelfLoop, None) => "loop-a".to_owned(),
        (PagingAttack::SelfLoop, Some(current)) => current.to_owned(),
        (PagingAttack::TwoCycle, Some("cycle-a")) => "cycle-b".to_owned(),
        (PagingAttack::TwoCycle, _) => "cycle-a".to_owned(),
        (PagingAttack::FreshCursors, current) => {
            let n: u64 = current
                .and_then(|c| c.strip_prefix("fresh-"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            format!("fresh-{}", n + 1)
        }
    };
    if page.get("ids").is_some() {
        page["next_after"] = json!(next_cursor);
    } else {
        page["paging"] = json!({"next": {"after": next_cursor}});
    }
    let mut response = axum::Json(page).into_response();
    *response.status_mut() = parts.status;
    response
}
