//! Authentication: static bearer tokens, API keys, HTTP basic auth, and OAuth2 client
//! credentials with proactive refresh. Credentials are applied only to requests to the
//! source's own origin (see [`crate::http::origin`]).

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::Mutex;
use zeroize::Zeroize;

use crate::error::{Category, HttpError};
use crate::secret::{Secret, SecretSource};
use crate::tokens::{Grant, TokenStore};

/// How a source authenticates, as written in its TOML `[auth]` table.
///
/// ```toml
/// [auth]
/// kind = "oauth2"
/// token_url = "/oauth/token"
/// client_id = { env = "CRM_CLIENT_ID" }
/// client_secret = { env = "CRM_CLIENT_SECRET" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>` with a long-lived token.
    Bearer {
        /// Where the token comes from.
        token: SecretSource,
    },
    /// `Authorization: Basic` with a user name and a password.
    Basic {
        /// The user name (not secret: it is shown in messages).
        username: String,
        /// Where the password comes from.
        password: SecretSource,
    },
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The header or parameter name, e.g. `X-Api-Key` or `api_key`.
        name: String,
        /// Whether it travels in a header or the query string.
        #[serde(default)]
        location: KeyLocation,
        /// Where the key comes from.
        value: SecretSource,
    },
    /// OAuth2: an access token fetched from `token_url`, refreshed before it expires,
    /// and refreshed once more if the vendor answers 401. With `grant =
    /// "client_credentials"` (RFC 6749 §4.4, the default) it is bought with the client
    /// credentials; with `grant = "refresh_token"` (§6) with the refresh token a person
    /// authorized, stored in Postgres (`cairn auth set`) and rotated as the vendor
    /// rotates it (see [`crate::tokens`]).
    Oauth2 {
        /// How the access token is bought.
        #[serde(default)]
        grant: OauthGrant,
        /// The stored credential a `refresh_token` grant uses: the source's name unless
        /// several sources share one authorization.
        #[serde(default)]
        credential: Option<String>,
        /// The token endpoint, absolute or relative to the base URL.
        token_url: String,
        /// The client id.
        client_id: SecretSource,
        /// The client secret.
        client_secret: SecretSource,
        /// Scopes to ask for, space separated.
        #[serde(default)]
        scope: Option<String>,
        /// Refresh this many seconds before the token expires.
        #[serde(default = "default_margin")]
        refresh_margin_secs: u64,
    },
}

/// The most of a token endpoint's answer read: a token response is a few hundred bytes.
const TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

fn default_margin() -> u64 {
    60
}

impl AuthConfig {
    /// The stored credential this auth needs (`cairn auth set`): a refresh-token grant's.
    pub fn stored_credential(&self) -> Option<&str> {
        match self {
            AuthConfig::Oauth2 {
                grant: OauthGrant::RefreshToken,
                credential,
                ..
            } => credential.as_deref(),
            _ => None,
        }
    }
}

/// How an OAuth2 access token is bought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OauthGrant {
    /// With the client id and secret alone.
    #[default]
    ClientCredentials,
    /// With a stored refresh token, which the vendor may rotate at every use.
    RefreshToken,
}

/// Where an API key travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// In a request header.
    #[default]
    Header,
    /// In the query string (it is removed from URLs in errors and logs).
    Query,
}

/// Credentials resolved and ready to apply to requests.
pub(crate) struct Authenticator {
    scheme: Scheme,
}

enum Scheme {
    None,
    Bearer(Secret),
    /// The `Authorization` header's value, `Basic <base64>`.
    Basic(Secret),
    ApiKey {
        name: String,
        location: KeyLocation,
        value: Secret,
    },
    Oauth2 {
        token_url: String,
        client_id: Secret,
        client_secret: Secret,
        scope: Option<String>,
        margin: Duration,
        token: Mutex<Option<Token>>,
        /// For the refresh-token grant: where the credential is stored, and its name.
        stored: Option<Box<(TokenStore, String)>>,
    },
}

struct Token {
    value: Secret,
    /// When to fetch the next one: `margin` before expiry, but never past half the
    /// token's life, so short-lived tokens are not refreshed on every request.
    refresh_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    /// A rotated refresh token (refresh-token grant).
    #[serde(default)]
    refresh_token: Option<String>,
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        self.access_token.zeroize();
        self.refresh_token.zeroize();
    }
}

impl Authenticator {
    /// Reads the credentials `config` names. `base_url` resolves a relative token URL;
    /// `pool` holds stored refresh tokens.
    pub(crate) async fn new(
        config: &AuthConfig,
        base_url: &str,
        pool: Option<&PgPool>,
    ) -> Result<Self, HttpError> {
        let read = |source: &SecretSource| {
            let source = source.clone();
            async move {
                source.resolve().await.map_err(|err| {
                    HttpError::config(format!("cannot read a credential: {err}")).caused_by(err)
                })
            }
        };
        let scheme = match config {
            AuthConfig::None => Scheme::None,
            AuthConfig::Bearer { token } => Scheme::Bearer(read(token).await?),
            AuthConfig::Basic { username, password } => {
                use base64::Engine;
                let password = read(password).await?;
                let pair = format!("{username}:{}", password.expose());
                // The encoded pair is what travels and what a vendor would echo.
                Scheme::Basic(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            AuthConfig::ApiKey {
                name,
                location,
                value,
            } => Scheme::ApiKey {
                name: name.clone(),
                location: *location,
                value: read(value).await?,
            },
            AuthConfig::Oauth2 {
                grant,
                credential,
                token_url,
                client_id,
                client_secret,
                scope,
                refresh_margin_secs,
            } => {
                let stored = match grant {
                    OauthGrant::ClientCredentials => None,
                    OauthGrant::RefreshToken => {
                        let credential = credential.clone().ok_or_else(|| {
                            HttpError::config("a refresh_token grant needs a credential name")
                        })?;
                        let pool = pool.ok_or_else(|| {
                            HttpError::config(
                                "a refresh_token grant keeps its token in the cairn database, \
                                 and this client has none",
                            )
                        })?;
                        Some(Box::new((TokenStore::new(pool.clone()), credential)))
                    }
                };
                Scheme::Oauth2 {
                    token_url: crate::http::join_url(base_url, token_url),
                    client_id: read(client_id).await?,
                    client_secret: read(client_secret).await?,
                    scope: scope.clone(),
                    margin: Duration::seconds(*refresh_margin_secs as i64),
                    token: Mutex::new(None),
                    stored,
                }
            }
        };
        Ok(Self { scheme })
    }

    /// Adds credentials to a request, fetching or refreshing an OAuth token first when
    /// it is missing or about to expire.
    pub(crate) async fn apply(
        &self,
        request: reqwest::RequestBuilder,
        http: &reqwest::Client,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        Ok(match &self.scheme {
            Scheme::None => request,
            Scheme::Bearer(token) => request.bearer_auth(token.expose()),
            Scheme::Basic(value) => {
                let mut header =
                    reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                        HttpError::config("the basic-auth credentials are not valid in a header")
                    })?;
                header.set_sensitive(true);
                request.header(reqwest::header::AUTHORIZATION, header)
            }
            Scheme::ApiKey {
                name,
                location: KeyLocation::Header,
                value,
            } => request.header(name.as_str(), value.expose()),
            Scheme::ApiKey {
                name,
                location: KeyLocation::Query,
                value,
            } => request.query(&[(name.as_str(), value.expose())]),
            Scheme::Oauth2 { token, .. } => {
                // One refresh at a time: concurrent requests wait for it instead of
                // each fetching a token.
                let mut cached = token.lock().await;
                let fresh = cached.as_ref().is_some_and(|t| Utc::now() < t.refresh_at);
                if !fresh {
                    let stale = cached.take().map(|t| t.value);
                    *cached = Some(self.fetch_token(http, stale.as_ref()).await?);
                }
                let value = cached.as_ref().map(|t| t.value.clone());
                drop(cached);
                match value {
                    Some(value) => request.bearer_auth(value.expose()),
                    None => request,
                }
            }
        })
    }

    /// Whether a 401 may be cured by fetching a new token.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self.scheme, Scheme::Oauth2 { .. })
    }

    /// Marks the cached token stale, so the next request fetches a new one (and a
    /// stored credential does not hand back the token the vendor just refused).
    pub(crate) async fn invalidate(&self) {
        if let Scheme::Oauth2 { token, .. } = &self.scheme
            && let Some(cached) = token.lock().await.as_mut()
        {
            cached.refresh_at = DateTime::<Utc>::MIN_UTC;
        }
    }

    /// The query parameter that carries a credential, to strip from logged URLs.
    pub(crate) fn secret_query_param(&self) -> Option<&str> {
        match &self.scheme {
            Scheme::ApiKey {
                name,
                location: KeyLocation::Query,
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// A stable, non-reversible name for these credentials, so every client using the
    /// same credential shares one rate budget.
    pub(crate) fn identity(&self) -> String {
        let material = match &self.scheme {
            Scheme::None => return "anonymous".to_owned(),
            Scheme::Bearer(token) | Scheme::Basic(token) => token.expose().to_owned(),
            Scheme::ApiKey { value, .. } => value.expose().to_owned(),
            Scheme::Oauth2 { client_id, .. } => client_id.expose().to_owned(),
        };
        let digest = Sha256::digest(material.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new access token: bought with the client credentials, or through the stored
    /// credential (`stale` is the token this process used last, perhaps refused).
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        stale: Option<&Secret>,
    ) -> Result<Token, HttpError> {
        let Scheme::Oauth2 { margin, stored, .. } = &self.scheme else {
            return Err(HttpError::config("not an OAuth2 source"));
        };
        match stored {
            None => {
                let grant = self.exchange(http, None).await?;
                Ok(Token {
                    value: grant.access_token,
                    refresh_at: refresh_at(Utc::now(), grant.lifetime, *margin),
                })
            }
            Some(stored) => {
                let (store, credential) = &**stored;
                let (value, refresh_at) = store
                    .access_token(credential, *margin, stale, |refresh| async move {
                        self.exchange(http, Some(&refresh)).await
                    })
                    .await?;
                Ok(Token { value, refresh_at })
            }
        }
    }

    /// One call to the token endpoint: the client-credentials grant, or the
    /// refresh-token grant with `refresh`.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        refresh: Option<&Secret>,
    ) -> Result<Grant, HttpError> {
        let Scheme::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            ..
        } = &self.scheme
        else {
            return Err(HttpError::config("not an OAuth2 source"));
        };
        let mut form = match refresh {
            None => vec![("grant_type", "client_credentials")],
            Some(refresh) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
            ],
        };
        form.extend([
            ("client_id", client_id.expose()),
            ("client_secret", client_secret.expose()),
        ]);
        if let Some(scope) = scope {
            form.push(("scope", scope.as_str()));
        }
        let fail = |category, status, message: String| {
            HttpError::request(category, "POST", token_url, status, message)
        };
        // The client has no redirect policy: a token endpoint that redirects is refused
        // here rather than handed the client secret at a new address.
        let response = http
            .post(token_url)
            .form(&form)
            .send()
            .await
            .map_err(|err| crate::http::transport_error("POST", token_url, err))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(fail(
                Category::Redirect,
                Some(status),
                "the token endpoint answered with a redirect; cairn never follows a redirect \
                 with client credentials: set token_url to where it points, if that is the \
                 vendor's"
                    .to_owned(),
            ));
        }
        if !response.status().is_success() {
            let detail = crate::http::body::error_text(response).await;
            // 400/401 from a token endpoint mean the client credentials are refused
            // (RFC 6749 §5.2: `invalid_client`, `invalid_grant`, `unauthorized_client`).
            let category = match Category::of_status(status) {
                Category::Validation | Category::NotFound => Category::AuthDrift,
                other => other,
            };
            return Err(fail(
                category,
                Some(status),
                format!(
                    "the token endpoint refused the {}: {}",
                    if refresh.is_some() {
                        "refresh token"
                    } else {
                        "client credentials"
                    },
                    detail.trim()
                ),
            ));
        }
        let body = crate::http::body::read_secret_within(response, TOKEN_RESPONSE_BYTES)
            .await
            .ok()
            .and_then(|body| serde_json::from_slice::<TokenResponse>(&body).ok())
            .ok_or_else(|| {
                fail(
                    Category::MalformedBody,
                    Some(status),
                    "the token endpoint's answer has no access_token".to_owned(),
                )
            })?;
        let lifetime = Duration::seconds(body.expires_in.unwrap_or(3600).clamp(1, 366 * 86_400));
        tracing::debug!(
            expires_in = lifetime.num_seconds(),
            "fetched an OAuth token"
        );
        Ok(Grant {
            access_token: Secret::new(body.access_token.as_str()),
            lifetime,
            refresh_token: body
                .refresh_token
                .as_deref()
                .filter(|token| !token.is_empty())
                .map(Secret::new),
        })
    }
}

/// When to fetch the next token: `margin` before expiry, but never past half the
/// token's life, so short-lived tokens are not refreshed on every request.
pub(crate) fn refresh_at(
    now: DateTime<Utc>,
    lifetime: Duration,
    margin: Duration,
) -> DateTime<Utc> {
    now + lifetime - margin.min(lifetime / 2)
}
