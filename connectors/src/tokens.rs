//! OAuth refresh tokens kept in Postgres, so that every worker of every run shares one
//! credential the vendor may rotate at each use.
//!
//! A person authorizes once (`cairn auth set <source> --refresh-token-file F`); after
//! that a worker that needs an access token locks the credential's row, and either
//! finds an access token another worker just bought or spends the refresh token. When
//! the vendor answers with a new refresh token, it is saved in the transaction that
//! records the refresh, and the new access token is handed out only once that
//! transaction has committed. A crash before the commit loses the vendor's answer but
//! not the credential: the old refresh token was never followed by a use of the new
//! pair, which is what vendors that rotate wait for before they forget the old one.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use cairn_runner::seal::{Column, Kept, KeyError, OpenError, Sealer};

use crate::auth::refresh_at;
use crate::error::{Category, HttpError};
use crate::secret::Secret;

/// Refresh tokens, sealed when keys are configured.
pub const REFRESH_TOKENS: Column = Column {
    table: "oauth_tokens",
    plain: "refresh_token",
    sealed: "refresh_token_sealed",
    what: "a stored refresh token",
};

/// The access tokens workers share.
pub const ACCESS_TOKENS: Column = Column {
    table: "oauth_tokens",
    plain: "access_token",
    sealed: "access_token_sealed",
    what: "a stored access token",
};

/// The token store's sealed columns.
pub const SEALED_COLUMNS: &[Column] = &[REFRESH_TOKENS, ACCESS_TOKENS];

/// The alert kind raised when a vendor refuses a stored refresh token.
pub const REFUSED_ALERT: &str = "auth_refused";

/// Stored OAuth credentials.
#[derive(Debug, Clone)]
pub struct TokenStore {
    pool: PgPool,
    sealer: Sealer,
}

/// What the vendor answered to a refresh.
pub(crate) struct Grant {
    pub(crate) access_token: Secret,
    pub(crate) lifetime: Duration,
    /// The refresh token to use next time, when the vendor rotated it.
    pub(crate) refresh_token: Option<Secret>,
}

/// One stored credential, as `cairn auth show` prints it (never a token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialStatus {
    /// Its name (the source's, unless the source names another).
    pub credential: String,
    /// When a person last set its refresh token.
    pub set_at: DateTime<Utc>,
    /// When a worker last refreshed the access token.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Refreshes since it was set.
    pub refreshes: i64,
    /// How many times the vendor rotated the refresh token since it was set.
    pub rotations: i64,
    /// When the shared access token expires.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the vendor refused the refresh token, if it did: a person must set it again.
    pub refused_at: Option<DateTime<Utc>>,
    /// What the vendor said then.
    pub refusal: Option<String>,
    /// Whether the refresh token is stored sealed.
    pub sealed: bool,
}

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The keys could not be read.
    #[error("{0}")]
    Keys(#[from] KeyError),
    /// A stored token did not open.
    #[error("{0}")]
    Open(#[from] OpenError),
    /// The database failed.
    #[error("the token store (cairn.oauth_tokens): {0}")]
    Database(#[from] sqlx::Error),
    /// The alert about a refused token could not be raised.
    #[error("{0}")]
    Alert(#[from] crate::warehouse::WarehouseError),
}

/// How to authorize again, named in errors and alerts.
pub fn reauthorize_hint(credential: &str) -> String {
    format!(
        "authorize again and store the new refresh token with `cairn auth set {credential} \
         --refresh-token-file F`"
    )
}

type Row = (
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl TokenStore {
    /// The store over `pool`, sealing with this process's keys.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sealer: Sealer::process(),
        }
    }

    /// The store sealing with `sealer` instead.
    #[must_use]
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// Stores the refresh token a person authorized for `credential`, replacing any
    /// earlier one (and the access token it bought), and resolves the alert a refusal
    /// raised.
    pub async fn set(&self, credential: &str, refresh_token: &Secret) -> Result<(), TokenError> {
        let stored = self.sealer.store(&REFRESH_TOKENS, refresh_token.expose())?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO cairn.oauth_tokens (credential, refresh_token, refresh_token_sealed)
             VALUES ($1, $2, $3)
             ON CONFLICT (credential) DO UPDATE
                SET refresh_token = EXCLUDED.refresh_token,
                    refresh_token_sealed = EXCLUDED.refresh_token_sealed,
                    access_token = NULL, access_token_sealed = NULL, access_expires_at = NULL,
                    rotations = 0, refreshes = 0, set_at = now(), refreshed_at = NULL,
                    refused_at = NULL, refusal = NULL",
        )
        .bind(credential)
        .bind(stored.plain())
        .bind(stored.sealed())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE cairn.alerts SET resolved_at = now()
              WHERE kind = $1 AND source = $2 AND resolved_at IS NULL",
        )
        .bind(REFUSED_ALERT)
        .bind(credential)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored credential `credential`, if any.
    pub async fn status(&self, credential: &str) -> Result<Option<CredentialStatus>, TokenError> {
        type StatusRow = (
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            i64,
            i64,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<String>,
            bool,
        );
        let row: Option<StatusRow> = sqlx::query_as(
            "SELECT set_at, refreshed_at, refreshes, rotations, access_expires_at, refused_at,
                    refusal, refresh_token_sealed IS NOT NULL
               FROM cairn.oauth_tokens WHERE credential = $1",
        )
        .bind(credential)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(set_at, refreshed_at, refreshes, rotations, expires, refused_at, refusal, sealed)| {
                CredentialStatus {
                    credential: credential.to_owned(),
                    set_at,
                    refreshed_at,
                    refreshes,
                    rotations,
                    access_expires_at: expires,
                    refused_at,
                    refusal,
                    sealed,
                }
            },
        ))
    }

    /// An access token for `credential` valid for more than `margin`: the shared one
    /// when it still is (and is not `rejected`, the one the vendor just answered 401
    /// to), otherwise one bought with the stored refresh token by `exchange`, under the
    /// row's lock so that concurrent workers refresh once. Returns the token and when
    /// to refresh it.
    pub(crate) async fn access_token<F, Fut>(
        &self,
        credential: &str,
        margin: Duration,
        rejected: Option<&Secret>,
        exchange: F,
    ) -> Result<(Secret, DateTime<Utc>), HttpError>
    where
        F: FnOnce(Secret) -> Fut,
        Fut: Future<Output = Result<Grant, HttpError>>,
    {
        let failed = |err: TokenError| store_error(credential, err);
        let mut tx = self.pool.begin().await.map_err(|e| failed(e.into()))?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT refresh_token, refresh_token_sealed, access_token, access_token_sealed,
                    access_expires_at, refused_at
               FROM cairn.oauth_tokens WHERE credential = $1 FOR UPDATE",
        )
        .bind(credential)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| failed(e.into()))?;
        let Some((refresh, refresh_sealed, access, access_sealed, expires, refused)) = row else {
            return Err(refused_error(
                credential,
                "no refresh token is stored for it".to_owned(),
            ));
        };
        if refused.is_some() {
            return Err(refused_error(
                credential,
                "the vendor refused its refresh token earlier".to_owned(),
            ));
        }
        let now = Utc::now();
        let shared = self
            .sealer
            .read(&ACCESS_TOKENS, access, access_sealed.as_deref())
            .map_err(|e| failed(e.into()))?
            .map(Secret::new);
        if let (Some(token), Some(expires)) = (shared, expires) {
            let fresh = now + margin < expires;
            if fresh && rejected != Some(&token) {
                tx.rollback().await.map_err(|e| failed(e.into()))?;
                return Ok((token, refresh_at(now, expires - now, margin)));
            }
        }
        let refresh = self
            .sealer
            .read(&REFRESH_TOKENS, refresh, refresh_sealed.as_deref())
            .map_err(|e| failed(e.into()))?
            .map(Secret::new)
            .ok_or_else(|| refused_error(credential, "its refresh token is empty".to_owned()))?;
        let grant = match exchange(refresh).await {
            Ok(grant) => grant,
            Err(err) if err.category() == Category::AuthDrift => {
                let reason = err.to_string();
                self.record_refusal(tx, credential, &reason)
                    .await
                    .map_err(failed)?;
                return Err(refused_error(credential, reason));
            }
            Err(err) => return Err(err),
        };
        let expires = now + grant.lifetime;
        let access = self
            .sealer
            .store(&ACCESS_TOKENS, grant.access_token.expose())
            .map_err(|e| failed(e.into()))?;
        let rotated = match &grant.refresh_token {
            Some(token) => Some(
                self.sealer
                    .store(&REFRESH_TOKENS, token.expose())
                    .map_err(|e| failed(e.into()))?,
            ),
            None => None,
        };
        sqlx::query(
            "UPDATE cairn.oauth_tokens
                SET access_token = $2, access_token_sealed = $3, access_expires_at = $4,
                    refresh_token = CASE WHEN $5 THEN $6 ELSE refresh_token END,
                    refresh_token_sealed = CASE WHEN $5 THEN $7 ELSE refresh_token_sealed END,
                    rotations = rotations + $5::int, refreshes = refreshes + 1,
                    refreshed_at = now()
              WHERE credential = $1",
        )
        .bind(credential)
        .bind(access.plain())
        .bind(access.sealed())
        .bind(expires)
        .bind(rotated.is_some())
        .bind(rotated.as_ref().and_then(Kept::plain))
        .bind(rotated.as_ref().and_then(Kept::sealed))
        .execute(&mut *tx)
        .await
        .map_err(|e| failed(e.into()))?;
        // Only once the rotated refresh token is committed may the new access token be
        // used: its first use is what makes the vendor forget the old refresh token.
        tx.commit().await.map_err(|e| failed(e.into()))?;
        tracing::info!(
            credential,
            rotated = grant.refresh_token.is_some(),
            expires_in = grant.lifetime.num_seconds(),
            "refreshed an OAuth access token"
        );
        Ok((grant.access_token, refresh_at(now, grant.lifetime, margin)))
    }

    /// Marks the refresh token refused and raises the alert that says how to authorize
    /// again, in the refresh's transaction.
    async fn record_refusal(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        credential: &str,
        reason: &str,
    ) -> Result<(), TokenError> {
        let reason = cairn_runner::redact::redact(reason).into_owned();
        sqlx::query(
            "UPDATE cairn.oauth_tokens
                SET refused_at = now(), refusal = $2, access_token = NULL,
                    access_token_sealed = NULL, access_expires_at = NULL
              WHERE credential = $1",
        )
        .bind(credential)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        let alert = crate::warehouse::NewAlert {
            kind: REFUSED_ALERT.to_owned(),
            source: credential.to_owned(),
            stream: String::new(),
            detail: "refresh_token".to_owned(),
            message: format!(
                "the vendor refused the stored refresh token of {credential} ({reason}); \
                 runs that use it fail until a person acts: {}",
                reauthorize_hint(credential)
            ),
        };
        crate::warehouse::raise_alerts(&mut tx, &[alert]).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn refused_error(credential: &str, why: String) -> HttpError {
    HttpError::request(
        Category::AuthDrift,
        "",
        "",
        None,
        format!(
            "OAuth credential {credential}: {why}; {}",
            reauthorize_hint(credential)
        ),
    )
}

fn store_error(credential: &str, err: TokenError) -> HttpError {
    let category = match err {
        TokenError::Database(_) | TokenError::Alert(_) => Category::Network,
        TokenError::Keys(_) | TokenError::Open(_) => Category::Config,
    };
    HttpError::request(
        category,
        "",
        "",
        None,
        format!("OAuth credential {credential}: {err}"),
    )
}
