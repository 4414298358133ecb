//! Signed deliveries, per the Standard Webhooks specification: `webhook-signature` is
//! `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, one such value per
//! active secret (space-separated) so receivers keep verifying while a secret is rotated.
//! Secrets are written `whsec_<base64>`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Signer;

pub(crate) const PREFIX: &str = "whsec_";

/// Where a local scheduler keeps the secret it generated, inside its data directory.
pub(crate) const SECRET_FILE: &str = "signing-secret";

/// A signing secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidSecret {
    #[error("a whsec_ secret is not valid base64")]
    NotBase64,
    #[error("a signing secret must carry at least {MIN_KEY_BYTES} bytes")]
    TooShort,
    #[error("no signing secret given")]
    Empty,
}

/// The shortest key accepted: the Standard Webhooks libraries require 24 bytes.
const MIN_KEY_BYTES: usize = 24;

/// Why the secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretFileError {
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        reason: InvalidSecret,
    },
}

pub(crate) struct StandardWebhooksSigner {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StandardWebhooksSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StandardWebhooksSigner({} keys)", self.keys.len())
    }
}

impl StandardWebhooksSigner {
    /// Parses comma-separated secrets, the newest first. `whsec_<base64>` is decoded; a value
    /// without the prefix (e.g. a generated AWS Secrets Manager string) is used as raw bytes.
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidSecret> {
        let mut keys = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let key = match item.strip_prefix(PREFIX) {
                Some(b64) => STANDARD.decode(b64).map_err(|_| InvalidSecret::NotBase64)?,
                None => item.as_bytes().to_vec(),
            };
            if key.len() < MIN_KEY_BYTES {
                return Err(InvalidSecret::TooShort);
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        Ok(Self { keys })
    }

    /// A new random secret in `whsec_` form (32 bytes).
    pub(crate) fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    /// The secret kept in `path`, generated there on first use: created only if absent
    /// (`create_new`, so two starts never overwrite each other's secret), readable by the
    /// owner only, and synced before use, since receivers are given it to verify with.
    pub(crate) fn load_or_generate(path: &Path) -> Result<Self, SecretFileError> {
        let secret = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = Self::generate();
                let create = |source| SecretFileError::Create {
                    path: path.to_owned(),
                    source,
                };
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(create)?;
                file.write_all(secret.as_bytes()).map_err(create)?;
                file.sync_all().map_err(create)?;
                secret
            }
            Err(source) => {
                return Err(SecretFileError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(secret.trim()).map_err(|reason| SecretFileError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }
}

impl Signer for StandardWebhooksSigner {
    fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|key| {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(msg_id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The test vector of the Standard Webhooks reference libraries.
        let signer =
            StandardWebhooksSigner::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The headers a receiver gets, with `signature` as `webhook-signature`.
    fn headers(id: &str, ts: i64, signature: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    #[test]
    fn rotation_gives_one_signature_per_secret() {
        let a = StandardWebhooksSigner::generate();
        let b = StandardWebhooksSigner::generate();
        let both = StandardWebhooksSigner::parse(&format!("{a},{b}")).unwrap();
        let (id, ts, body) = (
            "01JF3Q8R5V2Z6X4W9YH7K1M0NB",
            chrono::Utc::now().timestamp(),
            b"{}",
        );
        let sig = both.sign(id, ts, body);
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2, "{sig}");
        // Each part, alone, is verified by the reference library with its own secret (the
        // newest first) and by no other.
        for (part, (mine, other)) in parts.iter().zip([(&a, &b), (&b, &a)]) {
            let h = headers(id, ts, part);
            standardwebhooks::Webhook::new(mine)
                .unwrap()
                .verify(body, &h)
                .expect("verified with its own secret");
            assert!(
                standardwebhooks::Webhook::new(other)
                    .unwrap()
                    .verify(body, &h)
                    .is_err()
            );
        }
    }

    #[test]
    fn bad_secrets_are_refused() {
        let parse = StandardWebhooksSigner::parse;
        assert!(parse("").is_err());
        assert!(parse(" , ").is_err());
        assert!(parse("whsec_!!!").is_err());
        // At least 24 bytes, raw or decoded.
        assert!(parse(&"k".repeat(23)).is_err());
        assert!(parse(&"k".repeat(24)).is_ok());
        assert!(parse(&format!("{PREFIX}{}", STANDARD.encode([7u8; 23]))).is_err());
        assert!(parse(&format!("{PREFIX}{}", STANDARD.encode([7u8; 24]))).is_ok());
        // One bad secret refuses the whole list.
        assert!(parse(&format!("{},short", StandardWebhooksSigner::generate())).is_err());
    }

    #[test]
    fn a_secret_without_the_prefix_signs_with_its_raw_bytes() {
        let raw = "raw-secret-from-secrets-manager-0123456789";
        let signer = StandardWebhooksSigner::parse(raw).unwrap();
        let (id, ts, body) = (
            "01JF3Q8R5V2Z6X4W9YH7K1M0NB",
            chrono::Utc::now().timestamp(),
            b"{}",
        );
        let h = headers(id, ts, &signer.sign(id, ts, body));
        standardwebhooks::Webhook::from_bytes(raw.as_bytes().to_vec())
            .unwrap()
            .verify(body, &h)
            .expect("verified with the raw bytes as the key");
    }

    #[test]
    fn debug_shows_no_secret() {
        let signer = StandardWebhooksSigner::parse(&format!(
            "{},{}",
            StandardWebhooksSigner::generate(),
            StandardWebhooksSigner::generate()
        ))
        .unwrap();
        assert_eq!(format!("{signer:?}"), "StandardWebhooksSigner(2 keys)");
    }

    #[test]
    fn a_standard_webhooks_library_verifies_our_signature() {
        let secret = StandardWebhooksSigner::generate();
        let signer = StandardWebhooksSigner::parse(&secret).unwrap();
        let id = "01JF3Q8R5V2Z6X4W9YH7K1M0NB";
        let body = br#"{"message":"Task executed!"}"#;
        let ts = chrono::Utc::now().timestamp();
        let h = headers(id, ts, &signer.sign(id, ts, body));
        let wh = standardwebhooks::Webhook::new(&secret).unwrap();
        wh.verify(body, &h)
            .expect("verified by the reference library");
        // Negative controls: another body, id, timestamp or secret is refused.
        assert!(wh.verify(br#"{"message":"tampered"}"#, &h).is_err());
        let sig = h["webhook-signature"].to_str().unwrap();
        assert!(
            wh.verify(body, &headers("01JF3Q8R5V2Z6X4W9YH7K1M0NC", ts, sig))
                .is_err()
        );
        assert!(wh.verify(body, &headers(id, ts - 1, sig)).is_err());
        let stranger = StandardWebhooksSigner::generate();
        assert!(
            standardwebhooks::Webhook::new(&stranger)
                .unwrap()
                .verify(body, &h)
                .is_err()
        );
    }
}

#[cfg(test)]
mod secret_file_tests {
    use super::*;

    #[test]
    fn generated_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        let first = StandardWebhooksSigner::load_or_generate(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.starts_with(PREFIX), "{written}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second start reads the same secret: the same signature.
        let second = StandardWebhooksSigner::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
        assert_eq!(first.sign("id", 1, b"{}"), second.sign("id", 1, b"{}"));
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "short").unwrap();
        let e = StandardWebhooksSigner::load_or_generate(&path).unwrap_err();
        assert!(matches!(e, SecretFileError::Invalid { .. }));
        assert!(e.to_string().contains(SECRET_FILE), "{e}");
    }
}
