//! Where credentials may go: the source's own origin (scheme, host and port of its
//! base URL), and nowhere else. Redirects are followed by hand, so each hop is judged
//! before anything is sent.

use std::net::IpAddr;

use reqwest::Url;

/// Redirects followed for one request, at most.
pub const MAX_REDIRECTS: usize = 5;

/// A scheme, host and port: what a browser calls an origin, and the unit cairn trusts
/// with a source's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// The origin of `url`.
    pub fn of(url: &Url) -> Self {
        Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }

    /// The host, lowercased.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) if Some(port) != default_port(&self.scheme) => write!(f, ":{port}"),
            _ => Ok(()),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Whether `host` is this machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a URL cannot be one cairn talks to: only http and https, and plain http only to
/// this machine unless the source says `allow_insecure_http = true` (credentials and
/// data would cross the network readable by anyone on the way).
pub fn url_problem(text: &str, allow_insecure_http: bool) -> Option<String> {
    let Ok(url) = Url::parse(text) else {
        return Some(format!("{text:?} is not a URL"));
    };
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or_default();
            if !allow_insecure_http && !is_loopback_host(host) {
                return Some(format!(
                    "{text:?} is plain http to another host, which would send credentials and \
                     data unencrypted; use https, or set allow_insecure_http = true"
                ));
            }
        }
        other => {
            return Some(format!(
                "{text:?} has scheme `{other}`; only http and https are allowed"
            ));
        }
    }
    if !url.has_host() {
        return Some(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some(format!(
            "{} carries credentials in the URL; give them in [auth] from a secret source",
            super::redact_url(text, &[])
        ));
    }
    None
}

/// The origins a source may be redirected to without its credentials, besides its own.
#[derive(Clone, Debug, Default)]
pub struct RedirectPolicy {
    allowed_hosts: Vec<String>,
}

impl RedirectPolicy {
    /// Allows redirects to `hosts` (names or addresses, any port), credentials never sent.
    pub fn new(hosts: &[String]) -> Self {
        Self {
            allowed_hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request may go to `origin`, another origin than the source's.
    pub fn allows(&self, origin: &Origin) -> bool {
        self.allowed_hosts.iter().any(|host| host == origin.host())
    }
}

/// Where a redirect response points, resolved against the URL that answered.
pub fn location(current: &Url, headers: &reqwest::header::HeaderMap) -> Option<Url> {
    let value = headers.get(reqwest::header::LOCATION)?.to_str().ok()?;
    current
        .join(value.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Origin::of(&Url::parse("https://API.example.com/v1").unwrap());
        let b = Origin::of(&Url::parse("https://api.example.com:443/x?y").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://api.example.com");
        let c = Origin::of(&Url::parse("http://api.example.com/v1").unwrap());
        assert_ne!(a, c);
        let d = Origin::of(&Url::parse("https://api.example.com:8443/").unwrap());
        assert_ne!(a, d);
        assert_eq!(d.to_string(), "https://api.example.com:8443");
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert_eq!(url_problem("https://api.example.com", false), None);
        assert_eq!(url_problem("http://127.0.0.2:9000", false), None);
        assert_eq!(url_problem("http://localhost", false), None);
        assert_eq!(url_problem("http://[::1]:80/x", false), None);
        assert!(url_problem("http://api.example.com", false).is_some());
        assert_eq!(url_problem("http://api.example.com", true), None);
        assert!(url_problem("ftp://api.example.com", true).is_some());
        assert!(url_problem("file:///etc/passwd", true).is_some());
        let userinfo = url_problem("https://u:hunter22@api.example.com", false).unwrap();
        assert!(!userinfo.contains("hunter22"), "{userinfo}");
    }
}
