//! `[headers]`: extra headers sent with every request to the vendor. A header that
//! carries a credential takes its value from a secret source, like `[auth]` does.

use std::fmt;

use serde::Deserialize;

use crate::secret::{SECRET_FORMS, Secret, SecretError, SecretSource};

/// The value of one configured header: written in the file, or read from a secret
/// source (and then masked wherever it is echoed).
///
/// ```toml
/// [headers]
/// Accept-Language = "en"
/// X-Partner-Token = { env = "PARTNER_TOKEN" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSetting {
    /// A value written in the file: nothing secret.
    Plain(String),
    /// A credential.
    Secret(SecretSource),
}

impl HeaderSetting {
    /// The value to send, read from its source now.
    pub async fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            // Plain values are not registered with the redactor: they are not secret,
            // and masking `en` everywhere would hide more than it protects.
            Self::Plain(value) => Ok(Secret::plain(value.clone())),
            Self::Secret(source) => source.resolve().await,
        }
    }

    /// Whether the value is a credential.
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::Secret(_))
    }
}

impl From<&str> for HeaderSetting {
    fn from(value: &str) -> Self {
        Self::Plain(value.to_owned())
    }
}

/// Whether a header's name says it carries a credential, so its value must come from
/// a secret source and never be sent to another origin.
pub fn looks_like_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "session",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Why a literal cannot stand in a header, for the loader.
pub(crate) fn literal_credential_problem(name: &str) -> String {
    format!(
        "header `{name}` looks like it carries a credential, so its value cannot be written \
         into the file (it is not shown); {SECRET_FORMS}"
    )
}

impl<'de> Deserialize<'de> for HeaderSetting {
    /// A string, or a secret source. A value of another type is refused without
    /// being quoted.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SettingVisitor)
    }
}

struct SettingVisitor;

fn not_text<E: serde::de::Error>() -> E {
    E::custom(format!(
        "a header's value is a string, or a secret source ({SECRET_FORMS}); what is written \
         there is neither (it is not shown)"
    ))
}

impl<'de> serde::de::Visitor<'de> for SettingVisitor {
    type Value = HeaderSetting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, or { env = \"VARIABLE\" } or { file = \"/path\" }")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(HeaderSetting::Plain(value.to_owned()))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(not_text())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(not_text())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(not_text())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(not_text())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(not_text())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SecretSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(HeaderSetting::Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_recognised() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "X-Auth-Token",
            "client_secret",
            "Cookie",
        ] {
            assert!(looks_like_credential(name), "{name}");
        }
        for name in [
            "Accept",
            "Accept-Language",
            "X-Request-Source",
            "HubSpot-Version",
        ] {
            assert!(!looks_like_credential(name), "{name}");
        }
    }
}
