//! Reading a response body within a bound: the decompressed bytes are counted as they
//! stream in, so neither a huge page nor a compression bomb can grow the worker.

use bytes::{Bytes, BytesMut};

/// The most of an error body kept (for its message): enough for any vendor's error
/// JSON, little enough for every stored error and log line.
pub const ERROR_BODY_BYTES: usize = 4096;

/// How a bounded read ended badly.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit arrived (or was announced).
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The transport failed while reading.
    Transport(reqwest::Error),
}

/// The whole body, or [`BodyError::TooLarge`] as soon as more than `limit` bytes have
/// arrived after decompression.
pub async fn read_within(mut response: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A body that holds credentials (a token endpoint's answer), read within `limit` bytes
/// into one buffer allocated up front for all of them, so that no reallocation leaves a
/// copy behind, and wiped when dropped. The transport's own chunks are not ours to wipe.
pub(crate) async fn read_secret_within(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, BodyError> {
    let too_large = BodyError::TooLarge {
        limit: limit as u64,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large);
    }
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(limit));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first [`ERROR_BODY_BYTES`] of an error body as text, the rest left unread
/// (a transport failure keeps what arrived).
pub async fn error_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let truncated = body.len() > ERROR_BODY_BYTES;
    body.truncate(ERROR_BODY_BYTES);
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if truncated {
        text.push_str(" [truncated]");
    }
    text
}
