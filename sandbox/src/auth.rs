//! OAuth2 (client credentials, and refresh tokens that rotate) and API keys.

use std::collections::HashMap;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use fastrand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::config::AuthConfig;
use super::refresh::{RefreshTokens, Refreshed};
use super::signature;
use super::vendor::Vendor;
use cairn_connectors::secret::Secret;

/// Access tokens issued, by token, with the Unix millisecond they expire at and the
/// refresh-token family that bought them (if one did); and the refresh tokens.
///
/// Deliberately without `Debug`: it is a table of live credentials.
pub(crate) struct TokenStore {
    expiries: HashMap<String, (i64, Option<usize>)>,
    rng: Rng,
    pub(crate) refresh: RefreshTokens,
    /// How long a rotating refresh's answer is held back after the rotation happened:
    /// the window in which a client that dies loses the new refresh token.
    pub(crate) stall: Option<Duration>,
    /// Answers held back so far.
    pub(crate) stalled: u64,
}

impl TokenStore {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            expiries: HashMap::new(),
            rng: Rng::with_seed(seed ^ 0x5eed_70c3),
            refresh: RefreshTokens::new(seed),
            stall: None,
            stalled: 0,
        }
    }

    fn issue(&mut self, now_ms: i64, ttl: Duration, family: Option<usize>) -> Secret {
        let token: String = (0..4)
            .map(|_| format!("{:016x}", self.rng.u64(..)))
            .collect();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.expiries
            .insert(token.clone(), (now_ms.saturating_add(ttl_ms), family));
        Secret::new(token)
    }

    /// Every token issued so far: tests search outputs for them.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.expiries.keys().cloned().collect()
    }

    fn check(&mut self, token: &str, now_ms: i64) -> Result<(), AuthFailure> {
        match self.expiries.get(token) {
            None => Err(AuthFailure::Invalid),
            Some((expires, _)) if now_ms >= *expires => Err(AuthFailure::Expired),
            Some((_, Some(family))) if self.refresh.revoked(*family) => Err(AuthFailure::Invalid),
            Some((_, Some(family))) => {
                let family = *family;
                self.refresh.used(family);
                Ok(())
            }
            Some((_, None)) => Ok(()),
        }
    }
}

/// Why an API request was not let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Invalid,
    Expired,
    /// A signature made too long ago (or in the future).
    Stale,
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let (code, description) = match self {
            AuthFailure::Missing => ("invalid_request", "no credentials were sent"),
            AuthFailure::Invalid => ("invalid_token", "the credentials are not valid"),
            AuthFailure::Expired => ("invalid_token", "the access token expired"),
            AuthFailure::Stale => (
                "invalid_signature",
                "the signature's timestamp is too far from the vendor's clock",
            ),
        };
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!("Bearer error=\"{code}\", error_description=\"{description}\""),
            )],
            axum::Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Checks an API request's credentials against the configured mode.
pub(crate) fn authenticate(
    vendor: &Vendor,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), AuthFailure> {
    let inner = vendor.inner();
    match &inner.config.auth {
        AuthConfig::Signed(key) => {
            let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
            let (Some(sent), Some(timestamp)) = (
                text(signature::SIGNATURE_HEADER),
                text(signature::TIMESTAMP_HEADER),
            ) else {
                return Err(AuthFailure::Missing);
            };
            let timestamp: i64 = timestamp.trim().parse().map_err(|_| AuthFailure::Invalid)?;
            let now = inner.config.clock.now().timestamp();
            if now.abs_diff(timestamp) > signature::MAX_SKEW_SECS.unsigned_abs() {
                return Err(AuthFailure::Stale);
            }
            let signed = signature::signed_text(
                method.as_str(),
                uri.path(),
                uri.query().unwrap_or_default(),
                timestamp,
            );
            if signature::verify(key.expose().as_bytes(), &signed, sent) {
                Ok(())
            } else {
                Err(AuthFailure::Invalid)
            }
        }
        AuthConfig::None => Ok(()),
        AuthConfig::ApiKey(key) => {
            let sent = headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .or_else(|| bearer(headers))
                .ok_or(AuthFailure::Missing)?;
            if sent == key.expose() {
                Ok(())
            } else {
                Err(AuthFailure::Invalid)
            }
        }
        AuthConfig::OAuth(_) => {
            let token = bearer(headers).ok_or(AuthFailure::Missing)?;
            if vendor.hostile().reject_tokens {
                return Err(AuthFailure::Invalid);
            }
            let now_ms = inner.config.clock.now().timestamp_millis();
            vendor.tokens().check(token, now_ms)
        }
    }
}

/// A token request, form encoded: client credentials (RFC 6749 §4.4) or a refresh
/// (§6).
#[derive(Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(vendor): State<Vendor>,
    Form(request): Form<TokenRequest>,
) -> Response {
    let inner = vendor.inner();
    let AuthConfig::OAuth(oauth) = &inner.config.auth else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this sandbox does not use OAuth (start it with --auth oauth)",
        );
    };
    if !matches!(
        request.grant_type.as_str(),
        "client_credentials" | "refresh_token"
    ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials and refresh_token are supported",
        );
    }
    if vendor.hostile().refuse_clients {
        let sent = request.client_secret.as_deref().unwrap_or_default();
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("client_secret {sent} is not valid for this client"),
        );
    }
    let valid = request.client_id.as_deref() == Some(oauth.client_id.as_str())
        && request.client_secret.as_deref() == Some(oauth.client_secret.expose());
    if !valid {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client id or wrong secret",
        );
    }
    let now_ms = inner.config.clock.now().timestamp_millis();
    let (token, refresh, stall) = {
        let mut tokens = vendor.tokens();
        let (family, refresh) = match request.refresh_token.as_deref() {
            None => (None, None),
            Some(sent) => match tokens.refresh.refresh(sent) {
                Refreshed::Rotated { family, refresh } => (Some(family), Some(refresh)),
                Refreshed::Refused(why) => {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
                }
            },
        };
        if request.grant_type == "refresh_token" && refresh.is_none() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a refresh_token grant needs a refresh_token",
            );
        }
        let token = tokens.issue(now_ms, oauth.token_ttl, family);
        let stall = refresh.as_ref().and(tokens.stall);
        if stall.is_some() {
            tokens.stalled += 1;
        }
        (token, refresh, stall)
    };
    inner.stats.token_issued();
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    let mut body = json!({
        "access_token": token.expose(),
        "token_type": "Bearer",
        "expires_in": oauth.token_ttl.as_secs(),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh.expose());
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}
