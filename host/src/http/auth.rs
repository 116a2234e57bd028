//! Who may ask what of fnhost's own endpoints: the admin token (the admin API, the dashboard,
//! metrics when set) and, for the status resource of a function whose results are behind a
//! token (`status = "token"`), its `invoke_token` too. Tokens come as `Authorization: Bearer`
//! (the scheme in any case) and are compared by digest in constant time.

use crate::config::StatusAccess;
use crate::functions::Access;

use super::error::ApiError;

/// The admin token, the deploy token and the event tokens, if configured.
pub struct Auth {
    admin_token: Option<String>,
    deploy_token: Option<String>,
    /// Per event name, a token that may send it.
    event_tokens: std::collections::BTreeMap<String, String>,
}

impl Auth {
    /// `admin_token`: `None` turns the admin endpoints off.
    pub fn new(admin_token: Option<String>) -> Auth {
        Auth {
            admin_token,
            deploy_token: None,
            event_tokens: std::collections::BTreeMap::new(),
        }
    }

    /// Adds, per event name, a token that may send that event (and nothing else).
    pub fn with_event_tokens(mut self, tokens: std::collections::BTreeMap<String, String>) -> Auth {
        self.event_tokens = tokens;
        self
    }

    /// Whether the request may send event `name`: the admin token or that event's token.
    /// `Err` when neither is configured or the token is wrong.
    pub fn event_sender(&self, name: &str, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let own = self.event_tokens.get(name).map(String::as_str);
        if self.admin_token.is_none() && own.is_none() {
            return Err(ApiError::AdminOff);
        }
        if bears_one_of(headers, [self.admin_token.as_deref(), own]) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Adds a token that may make, list and publish deploys (and nothing else).
    pub fn with_deploy_token(mut self, token: Option<String>) -> Auth {
        self.deploy_token = token;
        self
    }

    /// Whether the request may make, list or publish deploys: the admin token or the deploy
    /// token. `Err` when neither is configured or the token is wrong.
    pub fn deployer(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        if self.admin_token.is_none() && self.deploy_token.is_none() {
            return Err(ApiError::AdminOff);
        }
        let secrets = [self.admin_token.as_deref(), self.deploy_token.as_deref()];
        if bears_one_of(headers, secrets) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Whether admin endpoints are on (an admin token is configured).
    pub fn admin_on(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether the request carries the admin token. `Err` when admin is off or the token is
    /// wrong.
    pub fn admin(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.admin_token else {
            return Err(ApiError::AdminOff);
        };
        match bearer(headers) {
            Some(given) if same_secret(given, token) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }

    /// Whether the request may read a status resource under `access` (its function's; `None`
    /// for a function no longer served, which keeps the default: the id is the capability).
    /// Behind a token, the admin token or the function's `invoke_token` must come as `Bearer`.
    pub fn reader(
        &self,
        access: Option<&Access>,
        headers: &http::HeaderMap,
    ) -> Result<(), ApiError> {
        let Some(access) = access.filter(|a| a.status == StatusAccess::Token) else {
            return Ok(());
        };
        let secrets = [self.admin_token.as_deref(), access.invoke_token.as_deref()];
        if bears_one_of(headers, secrets) {
            Ok(())
        } else {
            Err(ApiError::TokenRequired)
        }
    }
}

/// Whether the request's bearer token is one of the configured `secrets` (every one compared).
fn bears_one_of(headers: &http::HeaderMap, secrets: [Option<&str>; 2]) -> bool {
    let Some(given) = bearer(headers) else {
        return false;
    };
    secrets
        .iter()
        .flatten()
        .fold(false, |found, secret| same_secret(given, secret) | found)
}

/// The credentials of an `Authorization: Bearer …` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Whether `given` is `secret`, in time that depends on neither's length nor content: the
/// SHA-256 digests of both are compared in constant time.
pub fn same_secret(given: &str, secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    /// Regression (security item 7): `bearer t` and `BEARER t` were refused (RFC 9110: the
    /// scheme is case-insensitive).
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer  s3cret",
        ] {
            assert_eq!(bearer(&auth(value)), Some("s3cret"), "{value}");
        }
        assert_eq!(bearer(&auth("Basic s3cret")), None);
        assert_eq!(bearer(&auth("Bearers3cret")), None);
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("s3cretX", "s3cret"));
        assert!(!same_secret("", "s3cret"));
    }
}
