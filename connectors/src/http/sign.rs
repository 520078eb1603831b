//! Request signing: vendors that authenticate each request by a signature over it (an
//! HMAC of the method, path, query and a timestamp) rather than by a fixed credential.

use std::fmt;
use std::sync::Arc;

/// The parts of a request a signature covers, as the request will be sent.
#[derive(Debug, Clone, Copy)]
pub struct Unsigned<'a> {
    /// `GET`.
    pub method: &'a str,
    /// The URL's host.
    pub host: &'a str,
    /// The URL's path, percent-encoded as sent.
    pub path: &'a str,
    /// The URL's query without the `?`, percent-encoded as sent; empty when it has none.
    pub query: &'a str,
}

/// Signs requests to a source's own origin: the headers it returns go with that one
/// request, are treated as credentials (never logged, never sent to another origin), and
/// are computed again for every attempt, so a retried request carries a fresh timestamp.
pub trait Signer: Send + Sync {
    /// The headers that sign `request`, or why it cannot be signed (a message that
    /// must not quote the key).
    fn sign(&self, request: &Unsigned<'_>) -> Result<Vec<(String, String)>, String>;
}

/// A [`Signer`] held by an [`HttpConfig`](super::HttpConfig). Its `Debug` shows
/// nothing of it: a signer holds a key.
#[derive(Clone)]
pub struct SignerHandle(pub Arc<dyn Signer>);

impl fmt::Debug for SignerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignerHandle(..)")
    }
}
