//! Refresh tokens as vendors that rotate them keep them (RFC 6749 §6, OAuth 2.0
//! Security BCP §4.14): every refresh answers with a new refresh token; the old one keeps
//! working only until the new pair is used (so a client that crashed before saving the
//! new token can still refresh), and a rotated-out token used after that is taken for a
//! stolen one: the whole family is revoked.

use std::collections::HashMap;

use fastrand::Rng;

use cairn_connectors::secret::Secret;

/// One authorization's chain of refresh tokens.
struct Family {
    /// The refresh token to use next.
    current: String,
    /// The one before, still honored until the current pair is used.
    previous: Option<String>,
    /// Whether the current pair has been used (then `previous` is dead).
    confirmed: bool,
    revoked: bool,
}

/// What a refresh request gets.
pub(crate) enum Refreshed {
    /// A new refresh token (the family's new current one).
    Rotated { family: usize, refresh: Secret },
    /// The token is unknown, revoked, or reused after its rotation (which revokes its
    /// family).
    Refused(&'static str),
}

/// Counters tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Refresh requests granted.
    pub refreshes: u64,
    /// Refresh requests refused.
    pub refused: u64,
    /// Rotated-out tokens presented after the new pair was used: each revoked a family.
    pub reuse_detected: u64,
    /// Refreshes granted with the previous token, before the new pair was used.
    pub grace_refreshes: u64,
}

/// Every authorization's refresh tokens. Deliberately without `Debug`: it holds live
/// credentials.
pub(crate) struct RefreshTokens {
    families: Vec<Family>,
    by_token: HashMap<String, usize>,
    rng: Rng,
    pub(crate) stats: RefreshStats,
}

impl RefreshTokens {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            families: Vec::new(),
            by_token: HashMap::new(),
            rng: Rng::with_seed(seed ^ 0x0e_f1e5),
            stats: RefreshStats::default(),
        }
    }

    fn mint(&mut self, family: usize) -> String {
        let token: String = (0..4)
            .map(|_| format!("{:016x}", self.rng.u64(..)))
            .collect();
        let token = format!("rt_{token}");
        self.by_token.insert(token.clone(), family);
        token
    }

    /// A person completed the consent screen: a new family and its first token.
    pub(crate) fn authorize(&mut self) -> Secret {
        let family = self.families.len();
        let token = self.mint(family);
        self.families.push(Family {
            current: token.clone(),
            previous: None,
            confirmed: true,
            revoked: false,
        });
        Secret::new(token)
    }

    /// Every family revoked: the user withdrew consent, or the tokens idled out.
    pub(crate) fn revoke_all(&mut self) {
        for family in &mut self.families {
            family.revoked = true;
        }
    }

    /// A refresh with `token`.
    pub(crate) fn refresh(&mut self, token: &str) -> Refreshed {
        let Some(&at) = self.by_token.get(token) else {
            self.stats.refused += 1;
            return Refreshed::Refused("unknown refresh token");
        };
        let family = &self.families[at];
        if family.revoked {
            self.stats.refused += 1;
            return Refreshed::Refused("the refresh token was revoked");
        }
        let grace = family.previous.as_deref() == Some(token) && !family.confirmed;
        if family.current != token && !grace {
            self.families[at].revoked = true;
            self.stats.refused += 1;
            self.stats.reuse_detected += 1;
            return Refreshed::Refused(
                "the refresh token was already rotated; every token of this authorization \
                 is revoked",
            );
        }
        let next = self.mint(at);
        let family = &mut self.families[at];
        if grace {
            self.stats.grace_refreshes += 1;
        } else {
            family.previous = Some(std::mem::take(&mut family.current));
        }
        family.current = next.clone();
        family.confirmed = false;
        self.stats.refreshes += 1;
        Refreshed::Rotated {
            family: at,
            refresh: Secret::new(next),
        }
    }

    /// An access token of `family` was used: its pair is confirmed and the previous
    /// refresh token dies.
    pub(crate) fn used(&mut self, family: usize) {
        if let Some(family) = self.families.get_mut(family) {
            family.confirmed = true;
        }
    }

    /// Whether `family` was revoked (its access tokens stop working too).
    pub(crate) fn revoked(&self, family: usize) -> bool {
        self.families.get(family).is_some_and(|f| f.revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotated(r: Refreshed) -> (usize, String) {
        match r {
            Refreshed::Rotated { family, refresh } => (family, refresh.expose().to_owned()),
            Refreshed::Refused(why) => panic!("refused: {why}"),
        }
    }

    #[test]
    fn the_old_token_works_until_the_new_pair_is_used_then_its_reuse_revokes_all() {
        let mut tokens = RefreshTokens::new(1);
        let first = tokens.authorize();
        let (family, second) = rotated(tokens.refresh(first.expose()));
        // The client crashed before saving `second`: the first still refreshes.
        let (_, third) = rotated(tokens.refresh(first.expose()));
        assert_eq!(tokens.stats.grace_refreshes, 1);
        assert!(matches!(tokens.refresh(&second), Refreshed::Refused(_)));
        assert!(
            tokens.revoked(family),
            "an unknown-generation token is a theft"
        );
        let mut tokens = RefreshTokens::new(2);
        let first = tokens.authorize();
        let (family, second) = rotated(tokens.refresh(first.expose()));
        tokens.used(family);
        assert!(matches!(
            tokens.refresh(first.expose()),
            Refreshed::Refused(_)
        ));
        assert_eq!(tokens.stats.reuse_detected, 1);
        assert!(matches!(tokens.refresh(&second), Refreshed::Refused(_)));
        let _ = third;
    }
}
