//! Large payloads offloaded by SDK 4.5.2+ (docs/API.md section 6): the storage path rules and
//! the short-lived signed URL the SDK uploads to; and the signed URL the SDKs read a
//! superjson output from (`outputPresignedUrl`, section 4).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::basics::time::Millis;

/// How long an upload URL stays valid.
pub const UPLOAD_URL_TTL_MS: Millis = 15 * 60 * 1000;
/// The largest packet accepted.
pub const MAX_PACKET_BYTES: usize = 10 * 1024 * 1024;
/// The payload type of an item whose payload is a packet's storage path.
pub const STORE_PAYLOAD_TYPE: &str = "application/store";

/// A storage path the SDK may name: 1..512 characters of `[A-Za-z0-9_.-/]`, no empty or
/// dot-only segment, so it can never climb out of its environment's prefix.
pub fn valid_packet_path(path: &str) -> bool {
    (1..=512).contains(&path.len())
        && path
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'))
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// How long an output URL stays valid.
pub const OUTPUT_URL_TTL_MS: Millis = 15 * 60 * 1000;

fn mac(secret: &[u8], method: &str, env: &str, path: &str, expires: Millis) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{method}\n{env}\n{path}\n{expires}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The query of an upload URL for `path` in `env`, valid until `expires`.
pub fn upload_query(secret: &[u8], env: &str, path: &str, expires: Millis) -> String {
    signed_query(secret, "PUT", env, path, expires)
}

/// Checks an upload URL's `expires` and `signature` (constant-time comparison).
pub fn verify_upload(secret: &[u8], env: &str, path: &str, query: &str, now: Millis) -> bool {
    verify_signed(secret, "PUT", env, path, query, now)
}

/// The path a run's output is read from, signed as `outputs/<run id>`.
fn output_path(run_id: &str) -> String {
    format!("outputs/{run_id}")
}

/// The query of the URL that reads `run_id`'s output in `env`, valid until `expires`.
pub fn output_query(secret: &[u8], env: &str, run_id: &str, expires: Millis) -> String {
    signed_query(secret, "GET", env, &output_path(run_id), expires)
}

/// Checks an output URL's `expires` and `signature`.
pub fn verify_output(secret: &[u8], env: &str, run_id: &str, query: &str, now: Millis) -> bool {
    verify_signed(secret, "GET", env, &output_path(run_id), query, now)
}

fn signed_query(secret: &[u8], method: &str, env: &str, path: &str, expires: Millis) -> String {
    format!(
        "expires={expires}&signature={}",
        mac(secret, method, env, path, expires)
    )
}

fn verify_signed(
    secret: &[u8],
    method: &str,
    env: &str,
    path: &str,
    query: &str,
    now: Millis,
) -> bool {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let (Some(expires), Some(signature)) = (param("expires"), param("signature")) else {
        return false;
    };
    let Ok(expires) = expires.parse::<Millis>() else {
        return false;
    };
    let expected = mac(secret, method, env, path, expires);
    let same = expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same && expires >= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_url_reads_only_its_run_in_its_environment_until_it_expires() {
        let secret = b"signing-secret-0123456789";
        let query = output_query(secret, "dev", "run_abc", 2_000);
        assert!(verify_output(secret, "dev", "run_abc", &query, 1_000));
        assert!(verify_output(secret, "dev", "run_abc", &query, 2_000));
        assert!(
            !verify_output(secret, "dev", "run_abc", &query, 2_001),
            "expired"
        );
        assert!(
            !verify_output(secret, "prod", "run_abc", &query, 1_000),
            "another environment"
        );
        assert!(
            !verify_output(secret, "dev", "run_abd", &query, 1_000),
            "another run"
        );
        assert!(!verify_output(
            b"another-secret-entirely",
            "dev",
            "run_abc",
            &query,
            1_000
        ));
        // An upload URL's signature does not read an output, whatever the path.
        let upload = upload_query(secret, "dev", "outputs/run_abc", 2_000);
        assert!(!verify_output(secret, "dev", "run_abc", &upload, 1_000));
    }

    #[test]
    fn storage_paths_stay_inside_their_prefix() {
        assert!(valid_packet_path("trigger/packet_abc123/payload.json"));
        for bad in [
            "",
            "../x",
            "a/../b",
            "a//b",
            "/a",
            "a/",
            "a b",
            "a%2Fb",
            "./a",
            &"x".repeat(513),
        ] {
            assert!(!valid_packet_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn upload_urls_are_signed_and_expire() {
        let query = upload_query(b"secret", "dev", "trigger/p/payload.json", 1000);
        assert!(verify_upload(
            b"secret",
            "dev",
            "trigger/p/payload.json",
            &query,
            1000
        ));
        assert!(
            !verify_upload(b"secret", "dev", "trigger/p/payload.json", &query, 1001),
            "expired"
        );
        assert!(
            !verify_upload(b"secret", "prod", "trigger/p/payload.json", &query, 0),
            "another environment"
        );
        assert!(
            !verify_upload(b"secret", "dev", "trigger/q/payload.json", &query, 0),
            "another path"
        );
        assert!(
            !verify_upload(b"other", "dev", "trigger/p/payload.json", &query, 0),
            "another key"
        );
        let forged = query.replace("expires=1000", "expires=99999");
        assert!(
            !verify_upload(b"secret", "dev", "trigger/p/payload.json", &forged, 0),
            "a later expiry"
        );
        assert!(!verify_upload(
            b"secret",
            "dev",
            "trigger/p/payload.json",
            "",
            0
        ));
    }
}
