//! API keys and the environments they open.
//!
//! A secret key's prefix names its environment (`tr_dev_`, `tr_stg_`, `tr_prod_`,
//! `tr_preview_`). Every stored object belongs to one environment, and a key only ever
//! reaches objects of its own. Keys are compared through their SHA-256 digests, in
//! constant time and against every configured key, so neither timing nor an early exit
//! tells how much of a guess was right.

use sha2::{Digest, Sha256};

/// A Trigger.dev environment. Its [`Environment::slug`] is part of every storage name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Environment {
    Development,
    Staging,
    Production,
    Preview,
}

impl Environment {
    const ALL: [Environment; 4] = [
        Environment::Development,
        Environment::Staging,
        Environment::Production,
        Environment::Preview,
    ];

    /// The key prefix that names this environment.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Environment::Development => "tr_dev_",
            Environment::Staging => "tr_stg_",
            Environment::Production => "tr_prod_",
            Environment::Preview => "tr_preview_",
        }
    }

    /// Short stable name used in object names and stored rows.
    pub fn slug(self) -> &'static str {
        match self {
            Environment::Development => "dev",
            Environment::Staging => "stg",
            Environment::Production => "prod",
            Environment::Preview => "preview",
        }
    }

    /// Human name, as Trigger.dev shows it.
    pub fn name(self) -> &'static str {
        match self {
            Environment::Development => "Development",
            Environment::Staging => "Staging",
            Environment::Production => "Production",
            Environment::Preview => "Preview",
        }
    }

    /// Trigger.dev's environment type, `ctx.environment.type` in a task.
    pub fn kind(self) -> &'static str {
        match self {
            Environment::Development => "DEVELOPMENT",
            Environment::Staging => "STAGING",
            Environment::Production => "PRODUCTION",
            Environment::Preview => "PREVIEW",
        }
    }

    /// The environment of a Trigger.dev type name (`PRODUCTION`…).
    pub fn from_kind(kind: &str) -> Option<Environment> {
        Environment::ALL.into_iter().find(|e| e.kind() == kind)
    }

    pub fn from_slug(slug: &str) -> Option<Environment> {
        Environment::ALL.into_iter().find(|e| e.slug() == slug)
    }

    fn of_key(key: &str) -> Option<Environment> {
        Environment::ALL
            .into_iter()
            .find(|e| key.len() > e.key_prefix().len() && key.starts_with(e.key_prefix()))
    }
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer <key>` header.
    Missing,
    /// A well-formed key that is not configured.
    Unknown,
}

/// The configured secret keys, kept only as digests.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Environment)>,
}

impl ApiKeys {
    /// The environments some key opens, each once.
    pub fn environments(&self) -> Vec<Environment> {
        Environment::ALL
            .into_iter()
            .filter(|e| self.keys.iter().any(|(_, k)| k == e))
            .collect()
    }

    /// Reads a comma-separated list of keys. Errors name the entry by position, never by
    /// content: the text is a secret.
    pub fn parse(list: &str) -> Result<ApiKeys, String> {
        let mut keys = Vec::new();
        for (i, raw) in list.split(',').enumerate() {
            let key = raw.trim();
            if key.is_empty() {
                continue;
            }
            let env = Environment::of_key(key).ok_or_else(|| {
                format!(
                    "TRIGGER_SECRET_KEYS: entry {} does not start with tr_dev_, tr_stg_, tr_prod_ or tr_preview_",
                    i + 1
                )
            })?;
            if key
                .bytes()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
            {
                return Err(format!(
                    "TRIGGER_SECRET_KEYS: entry {} contains white space",
                    i + 1
                ));
            }
            keys.push((digest(key), env));
        }
        if keys.is_empty() {
            return Err("TRIGGER_SECRET_KEYS: no key is configured".into());
        }
        Ok(ApiKeys { keys })
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Environment, AuthError> {
        let token = header.and_then(bearer_token).ok_or(AuthError::Missing)?;
        let presented = digest(token);
        let mut found: Option<Environment> = None;
        for (key, env) in &self.keys {
            // Visit every key; never stop at the first match.
            if constant_time_eq(key, &presented) {
                found = Some(*env);
            }
        }
        found.ok_or(AuthError::Unknown)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), or `None` when malformed.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim_start();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token
            .bytes()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control());
    well_formed.then_some(token)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::parse(" tr_dev_alpha , tr_prod_beta,tr_stg_gamma,tr_preview_delta,").unwrap()
    }

    #[test]
    fn each_prefix_opens_its_environment() {
        let keys = keys();
        for (header, env) in [
            ("Bearer tr_dev_alpha", Environment::Development),
            ("Bearer tr_prod_beta", Environment::Production),
            ("Bearer tr_stg_gamma", Environment::Staging),
            ("Bearer tr_preview_delta", Environment::Preview),
            ("bearer tr_dev_alpha", Environment::Development),
            ("Bearer  tr_dev_alpha", Environment::Development),
        ] {
            assert_eq!(keys.authenticate(Some(header)), Ok(env), "{header}");
        }
    }

    #[test]
    fn missing_or_malformed_headers_are_missing_keys() {
        let keys = keys();
        for header in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic tr_dev_alpha"),
            Some("tr_dev_alpha"),
            Some("Bearer tr_dev_alpha extra"),
            Some("Bearer tr_dev_\u{0}alpha"),
        ] {
            assert_eq!(
                keys.authenticate(header),
                Err(AuthError::Missing),
                "{header:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let keys = keys();
        for header in [
            "Bearer tr_dev_alph",
            "Bearer tr_dev_alphaa",
            "Bearer TR_DEV_ALPHA",
            "Bearer x",
        ] {
            assert_eq!(
                keys.authenticate(Some(header)),
                Err(AuthError::Unknown),
                "{header}"
            );
        }
    }

    #[test]
    fn configuration_errors_never_quote_the_key() {
        let err = ApiKeys::parse("tr_dev_ok,sk_live_secret123").unwrap_err();
        assert!(err.contains("entry 2"), "{err}");
        assert!(!err.contains("secret123"), "{err}");
        assert!(ApiKeys::parse(" , ").is_err());
        assert!(
            ApiKeys::parse("tr_dev_").is_err(),
            "a bare prefix is not a key"
        );
    }

    #[test]
    fn slugs_round_trip() {
        for env in Environment::ALL {
            assert_eq!(Environment::from_slug(env.slug()), Some(env));
        }
        assert_eq!(Environment::from_slug("staging"), None);
    }
}
