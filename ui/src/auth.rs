//! Who may change anything through the dashboard, and the walls against other sites.
//!
//! Reading needs nothing (the dashboard binds loopback unless told otherwise, and shows no
//! secret). Acting needs the token of `CAIRN_UI_TOKEN`: a script sends it as
//! `Authorization: Bearer`, a person signs in once and gets a session cookie
//! (`HttpOnly`, `SameSite=Strict`). A form post must then also carry the session's CSRF
//! token and come from the dashboard's own origin (`Origin`, `Sec-Fetch-Site`), so a
//! page elsewhere cannot make a signed-in browser cancel a run. Cookies and CSRF tokens
//! are HMACs under a key derived from the token: nothing is kept server-side, and
//! changing the token signs everybody out.

use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::App;
use crate::layout::{Nav, page};

/// The shortest token accepted: a guessable token would make the walls decoration.
pub const MIN_TOKEN_LEN: usize = 16;
/// How long a sign-in lasts.
const SESSION_SECS: i64 = 12 * 3600;
/// The session cookie's name.
const COOKIE: &str = "cairn_ui";

/// The dashboard's credential: whether actions are possible, and how to check them.
#[derive(Clone, Default)]
pub struct Auth {
    key: Option<Arc<Keys>>,
}

struct Keys {
    key: hmac::Key,
    token: hmac::Tag,
}

/// A token the dashboard will not accept.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "CAIRN_UI_TOKEN is {0} characters long; give at least {MIN_TOKEN_LEN} (for example \
         `openssl rand -hex 24`)"
    )]
    TooShort(usize),
}

impl Auth {
    /// No token: every action is refused, pages still show.
    pub fn none() -> Self {
        Self::default()
    }

    /// Actions need `token`.
    pub fn with_token(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.chars().count()));
        }
        cairn_runner::redact::register(token);
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(Self {
            key: Some(Arc::new(Keys { key, token: tag })),
        })
    }

    /// From `CAIRN_UI_TOKEN`, or [`Auth::none`] when it is unset or empty.
    pub fn from_env() -> Result<Self, TokenError> {
        match std::env::var("CAIRN_UI_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Self::with_token(&token),
            _ => Ok(Self::none()),
        }
    }

    /// Whether any action can be taken at all.
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Whether `candidate` is the token, compared in constant time.
    fn is_token(&self, candidate: &str) -> bool {
        self.key.as_ref().is_some_and(|keys| {
            hmac::verify(&keys.key, candidate.trim().as_bytes(), keys.token.as_ref()).is_ok()
        })
    }

    fn mac(&self, what: &str) -> Option<String> {
        let keys = self.key.as_ref()?;
        Some(hex(hmac::sign(&keys.key, what.as_bytes()).as_ref()))
    }

    /// A new session cookie's value: when it was issued, a nonce and their MAC.
    fn new_session(&self) -> Option<String> {
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let body = format!("{}.{}", chrono::Utc::now().timestamp(), hex(&nonce));
        let mac = self.mac(&format!("session:{body}"))?;
        Some(format!("{body}.{mac}"))
    }

    /// Whether `cookie` is a session this token issued, not yet expired.
    fn valid_session(&self, cookie: &str) -> bool {
        let Some((body, mac)) = cookie.rsplit_once('.') else {
            return false;
        };
        let Some(keys) = &self.key else {
            return false;
        };
        let Some(mac) = unhex(mac) else {
            return false;
        };
        if hmac::verify(&keys.key, format!("session:{body}").as_bytes(), &mac).is_err() {
            return false;
        }
        let issued = body.split('.').next().and_then(|t| t.parse::<i64>().ok());
        issued.is_some_and(|at| {
            let age = chrono::Utc::now().timestamp() - at;
            (0..SESSION_SECS).contains(&age)
        })
    }

    /// The CSRF token forms of this session carry.
    fn csrf_for(&self, cookie: &str) -> Option<String> {
        self.mac(&format!("csrf:{cookie}"))
    }
}

/// What the person looking may do, as the pages need to know it.
#[derive(Debug, Clone)]
pub(crate) enum Viewer {
    /// No token is configured: actions are off.
    Off,
    /// Actions need signing in.
    Anonymous,
    /// Signed in: forms carry this CSRF token.
    Signed {
        /// The session's CSRF token.
        csrf: String,
    },
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        Ok(viewer(&app.auth, &parts.headers))
    }
}

fn viewer(auth: &Auth, headers: &HeaderMap) -> Viewer {
    if !auth.enabled() {
        return Viewer::Off;
    }
    match session_cookie(headers) {
        Some(cookie) if auth.valid_session(cookie) => Viewer::Signed {
            csrf: auth.csrf_for(cookie).unwrap_or_default(),
        },
        _ => Viewer::Anonymous,
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Why an action was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No token is configured.
    Off,
    /// Not signed in, or a wrong bearer token.
    Unauthenticated,
    /// From another site, or without this session's CSRF token.
    CrossSite,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Off => (
                StatusCode::FORBIDDEN,
                "actions are off: start the dashboard with CAIRN_UI_TOKEN set to enable them",
            ),
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "sign in with the dashboard's token (CAIRN_UI_TOKEN) first",
            ),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "refused: the request did not come from this dashboard's own pages",
            ),
        };
        (status, message).into_response()
    }
}

/// Checks that the request may act: a bearer token, or a session with its CSRF token,
/// from the dashboard's own origin.
pub(crate) fn authorize(
    auth: &Auth,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<(), Refusal> {
    if !auth.enabled() {
        return Err(Refusal::Off);
    }
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        // A browser never adds this header by itself, so it needs no origin check.
        return if auth.is_token(bearer) {
            Ok(())
        } else {
            Err(Refusal::Unauthenticated)
        };
    }
    if !same_origin(headers) {
        return Err(Refusal::CrossSite);
    }
    let Some(cookie) = session_cookie(headers).filter(|c| auth.valid_session(c)) else {
        return Err(Refusal::Unauthenticated);
    };
    let expected = auth.csrf_for(cookie).unwrap_or_default();
    match csrf {
        Some(given) if constant_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(Refusal::CrossSite),
    }
}

/// Whether the browser says the request came from this origin: `Sec-Fetch-Site` when
/// sent, and `Origin` (when sent) naming the host the request was addressed to.
fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = origin.to_str().ok();
    match (origin, host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest == host),
        _ => false,
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Where to go after signing in: a path of this dashboard only (never `//elsewhere`).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The sign-in page.
pub(crate) async fn login_form(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = local_path(query.next.as_deref()).to_owned();
    let body = if app.auth.enabled() {
        html! {
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Token (CAIRN_UI_TOKEN)" input type="password" name="token" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        }
    } else {
        html! { p.notice { "Actions are off: this dashboard was started without CAIRN_UI_TOKEN." } }
    };
    page("Sign in", Nav::None, &viewer, body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Checks the token and sets the session cookie.
pub(crate) async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !app.auth.enabled() {
        return Refusal::Off.into_response();
    }
    if !same_origin(&headers) {
        return Refusal::CrossSite.into_response();
    }
    if !app.auth.is_token(&form.token) {
        // Slows a guesser; a token of 16 characters or more is out of reach anyway.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let body = html! { p.error { "That is not the dashboard's token." } a href="/login" { "Try again" } };
        return (
            StatusCode::UNAUTHORIZED,
            page("Sign in", Nav::None, &Viewer::Anonymous, body),
        )
            .into_response();
    }
    let Some(session) = app.auth.new_session() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session",
        )
            .into_response();
    };
    let cookie =
        format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}");
    let mut response = Redirect::to(local_path(form.next.as_deref())).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Ends the session.
pub(crate) async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return Refusal::CrossSite.into_response();
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_ui=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(matches!(
            Auth::with_token("short"),
            Err(TokenError::TooShort(5))
        ));
    }

    #[test]
    fn sessions_and_csrf_tokens_check_out_only_for_their_token() {
        let auth = Auth::with_token("a-long-enough-token-1").unwrap();
        let other = Auth::with_token("a-long-enough-token-2").unwrap();
        let session = auth.new_session().unwrap();
        assert!(auth.valid_session(&session));
        assert!(!other.valid_session(&session));
        let mut forged = session.clone();
        forged.replace_range(0..1, "9");
        assert!(!auth.valid_session(&forged));
        let csrf = auth.csrf_for(&session).unwrap();
        let cookie = format!("{COOKIE}={session}");
        let signed = headers(&[("cookie", &cookie), ("host", "127.0.0.1:8080")]);
        assert!(authorize(&auth, &signed, Some(&csrf)).is_ok());
        assert!(matches!(
            authorize(&auth, &signed, Some("0")),
            Err(Refusal::CrossSite)
        ));
        assert!(matches!(
            authorize(&auth, &signed, None),
            Err(Refusal::CrossSite)
        ));
    }

    #[test]
    fn other_origins_are_refused_even_with_the_session() {
        let auth = Auth::with_token("a-long-enough-token-1").unwrap();
        let session = auth.new_session().unwrap();
        let csrf = auth.csrf_for(&session).unwrap();
        let cookie = format!("{COOKIE}={session}");
        for hostile in [
            vec![("origin", "http://evil.example")],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "null")],
        ] {
            let mut pairs = vec![("cookie", cookie.as_str()), ("host", "127.0.0.1:8080")];
            pairs.extend(hostile);
            assert!(matches!(
                authorize(&auth, &headers(&pairs), Some(&csrf)),
                Err(Refusal::CrossSite)
            ));
        }
        let own = headers(&[
            ("cookie", &cookie),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(authorize(&auth, &own, Some(&csrf)).is_ok());
    }

    #[test]
    fn bearer_tokens_are_compared_whole() {
        let auth = Auth::with_token("a-long-enough-token-1").unwrap();
        let good = headers(&[("authorization", "Bearer a-long-enough-token-1")]);
        let bad = headers(&[("authorization", "Bearer a-long-enough-token")]);
        assert!(authorize(&auth, &good, None).is_ok());
        assert!(matches!(
            authorize(&auth, &bad, None),
            Err(Refusal::Unauthenticated)
        ));
        assert!(matches!(
            authorize(&Auth::none(), &good, None),
            Err(Refusal::Off)
        ));
    }

    #[test]
    fn sign_in_only_returns_to_local_paths() {
        assert_eq!(
            local_path(Some("/runs?status=failed")),
            "/runs?status=failed"
        );
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
