//! The keys personal data is sealed with: where they come from, how each is named, and
//! the sealing itself.
//!
//! The cipher is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`, audited and kept
//! by the RustCrypto project). Its 192-bit nonce is drawn at random for every value and
//! never repeats in practice however many values one key seals; AES-256-GCM's 96-bit
//! random nonce would make a busy engine (thousands of checkpoints a second) rotate
//! keys within weeks to stay under its 2^32-values bound.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The environment variable that holds the keys: base64 keys of 32 bytes, separated by
/// spaces, commas or newlines; the first seals, the others only open.
pub const KEY_ENV: &str = "CAIRN_ENCRYPTION_KEY";

/// The environment variable that names a file holding the keys, one per line, the first
/// sealing (lines starting with `#` are comments).
pub const KEY_FILE_ENV: &str = "CAIRN_ENCRYPTION_KEY_FILE";

/// The version byte every sealed value starts with.
const FORMAT: u8 = 1;
/// The version byte and the key id.
const HEADER: usize = 5;
const NONCE: usize = 24;
const TAG: usize = 16;

/// A key's name: the first four bytes of a hash of the key, so that the key itself is
/// never needed to say which one sealed a value, and two processes given the same key
/// agree on its name without being told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    fn of(key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"cairn encryption key id\0")
            .chain_update(key)
            .finalize();
        Self([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The id's bytes, as sealed values carry them after their version byte.
    pub fn bytes(self) -> [u8; 4] {
        self.0
    }

    /// The id a sealed value was sealed with, if it is one.
    pub fn of_sealed(sealed: &[u8]) -> Option<Self> {
        match sealed {
            [FORMAT, a, b, c, d, ..] => Some(Self([*a, *b, *c, *d])),
            _ => None,
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

struct Key {
    id: KeyId,
    cipher: XChaCha20Poly1305,
}

/// The configured keys: the first seals new values, every one opens the values it
/// sealed. Keys are wiped from memory when the keyring is dropped (the cipher's own
/// copy by `chacha20poly1305`, the parsed bytes here).
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| k.id.to_string()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// Why keys could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// A key is not base64 of 32 bytes.
    #[error(
        "key {index} in {origin} is not a base64 key of 32 bytes ({why}); make one with \
         `cairn keys new`"
    )]
    Malformed {
        /// Where the keys were read from.
        origin: String,
        /// The key's place in the list, from 1.
        index: usize,
        /// What is wrong with it (never the key itself).
        why: String,
    },
    /// No key in the text.
    #[error("{origin} holds no key; make one with `cairn keys new`")]
    Empty {
        /// Where the keys were read from.
        origin: String,
    },
    /// The same key twice.
    #[error("{origin} lists key {id} twice")]
    Repeated {
        /// Where the keys were read from.
        origin: String,
        /// The repeated key's id.
        id: KeyId,
    },
    /// Both variables set, or the key file unreadable.
    #[error("{0}")]
    Source(String),
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// The value was sealed, and this process has no key.
    #[error(
        "{what} is encrypted (key {id}) and no key is configured: set {KEY_ENV} or \
         {KEY_FILE_ENV} to the keys it was written with"
    )]
    NoKeys {
        /// The column.
        what: &'static str,
        /// The key that sealed it.
        id: KeyId,
    },
    /// The value was sealed with a key this process does not have.
    #[error(
        "{what} is encrypted with key {id}, which is not among the configured keys ({known}); \
         add it after the current key until `cairn keys rotate` has re-sealed everything"
    )]
    UnknownKey {
        /// The column.
        what: &'static str,
        /// The key that sealed it.
        id: KeyId,
        /// The configured keys' ids.
        known: String,
    },
    /// The value does not open: altered, moved from another column, or not a sealed
    /// value at all.
    #[error("{what} does not decrypt with key {id}: it was altered or copied from elsewhere")]
    Forged {
        /// The column.
        what: &'static str,
        /// The key it names.
        id: KeyId,
    },
    /// Not a sealed value of a known format.
    #[error("{what} holds a value cairn did not seal (unknown format)")]
    Format {
        /// The column.
        what: &'static str,
    },
    /// The keys could not be read.
    #[error("{0}")]
    Keys(#[from] KeyError),
}

impl Keyring {
    /// The keys in `text` (base64 keys of 32 bytes, separated by whitespace or commas;
    /// `#` starts a comment line), named after `origin` in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        let words = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(|c: char| c.is_whitespace() || c == ','))
            .filter(|word| !word.is_empty());
        for (index, word) in words.enumerate() {
            let key = decode_key(word).map_err(|why| KeyError::Malformed {
                origin: origin.to_owned(),
                index: index + 1,
                why,
            })?;
            let id = KeyId::of(&key);
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::Repeated {
                    origin: origin.to_owned(),
                    id,
                });
            }
            keys.push(Key {
                id,
                cipher: XChaCha20Poly1305::new((&*key).into()),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Self { keys })
    }

    /// A new random key, base64, for a key file or [`KEY_ENV`].
    pub fn generate() -> Zeroizing<String> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Zeroizing::new(STANDARD.encode(key))
    }

    /// The id of the key that seals.
    pub fn current(&self) -> KeyId {
        self.keys[0].id
    }

    /// Every configured key's id, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    /// `plain` sealed with the current key, bound to `label` (the column it belongs in):
    /// the version byte, the key id, a fresh nonce, then the ciphertext and its tag.
    pub fn seal(&self, label: &str, plain: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let header = header(key.id);
        let aad = associated(label, &header);
        let mut sealed = Vec::with_capacity(HEADER + NONCE + plain.len() + TAG);
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&nonce);
        // Encryption into a Vec cannot fail: the only error is a buffer too small.
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The plaintext of a value [`Keyring::seal`] made for `label` (`what` names the
    /// column in errors).
    pub fn open(
        &self,
        label: &str,
        what: &'static str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let id = KeyId::of_sealed(sealed).ok_or(OpenError::Format { what })?;
        if sealed.len() < HEADER + NONCE + TAG {
            return Err(OpenError::Forged { what, id });
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey {
                what,
                id,
                known: self
                    .ids()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let (header, rest) = sealed.split_at(HEADER);
        let (nonce, ciphertext) = rest.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce
            .try_into()
            .map_err(|_| OpenError::Forged { what, id })?;
        let aad = associated(label, header);
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Forged { what, id })
    }
}

fn header(id: KeyId) -> [u8; HEADER] {
    let [a, b, c, d] = id.bytes();
    [FORMAT, a, b, c, d]
}

/// What a value is bound to besides its key: its column, so that a value copied into
/// another column does not open there, and its header, so that its key id cannot be
/// changed.
fn associated(label: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 1 + header.len());
    aad.extend_from_slice(label.as_bytes());
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

fn decode_key(word: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut bytes = STANDARD
        .decode(word)
        .map_err(|_| "not valid base64".to_owned())?;
    let key: Result<[u8; 32], _> = bytes.as_slice().try_into();
    let len = bytes.len();
    bytes.zeroize();
    key.map(Zeroizing::new)
        .map_err(|_| format!("{len} bytes, not 32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> (Keyring, Vec<Zeroizing<String>>) {
        let keys: Vec<_> = (0..n).map(|_| Keyring::generate()).collect();
        let text = keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        (Keyring::parse(&text, "test").unwrap(), keys)
    }

    #[test]
    fn sealed_values_open_only_in_their_column_and_never_repeat() {
        let (keys, _) = ring(1);
        let a = keys.seal("steps.output", b"{\"name\":\"Ada\"}");
        let b = keys.seal("steps.output", b"{\"name\":\"Ada\"}");
        assert_ne!(a, b, "a fresh nonce per value");
        assert!(!a.windows(3).any(|w| w == b"Ada"));
        assert_eq!(
            &keys.open("steps.output", "x", &a).unwrap()[..],
            b"{\"name\":\"Ada\"}"
        );
        assert!(matches!(
            keys.open("events.data", "x", &a),
            Err(OpenError::Forged { .. })
        ));
        let mut altered = a.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(
            keys.open("steps.output", "x", &altered),
            Err(OpenError::Forged { .. })
        ));
        assert!(matches!(
            keys.open("steps.output", "x", b"{}"),
            Err(OpenError::Format { .. })
        ));
        assert!(matches!(
            keys.open("steps.output", "x", &a[..10]),
            Err(OpenError::Forged { .. })
        ));
    }

    #[test]
    fn an_old_key_opens_what_it_sealed_and_a_missing_one_is_named() {
        let (old, old_keys) = ring(1);
        let sealed = old.seal("c", b"v");
        let new_key = Keyring::generate();
        let both = Keyring::parse(&format!("{}, {}", *new_key, *old_keys[0]), "env").unwrap();
        assert_ne!(both.current(), old.current());
        assert_eq!(&both.open("c", "x", &sealed).unwrap()[..], b"v");
        let only_new = Keyring::parse(&new_key, "env").unwrap();
        let err = only_new.open("c", "x", &sealed).unwrap_err().to_string();
        assert!(err.contains(&old.current().to_string()), "{err}");
    }

    #[test]
    fn bad_keys_are_refused_without_being_shown() {
        let err = Keyring::parse("c2hvcnQ=", "CAIRN_ENCRYPTION_KEY").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key 1 in CAIRN_ENCRYPTION_KEY is not a base64 key of 32 bytes (5 bytes, not \
             32); make one with `cairn keys new`"
        );
        let err = Keyring::parse("# nothing\n", "f").unwrap_err();
        assert!(matches!(err, KeyError::Empty { .. }));
        let key = Keyring::generate();
        let err = Keyring::parse(&format!("{} {}", *key, *key), "f").unwrap_err();
        assert!(matches!(err, KeyError::Repeated { .. }));
        assert!(!err.to_string().contains(key.as_str()));
    }
}
