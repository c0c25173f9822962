//! Portainer's request signature (agent `http/security/notary.go` and `crypto/ecdsa.go`, server
//! `api/crypto/ecdsa.go`). Every protected request carries `X-PortainerAgent-PublicKey`, the
//! lowercase hex of a P-256 SubjectPublicKeyInfo, and `X-PortainerAgent-Signature`, the RawStd
//! base64 of `r || s` over the 16-byte MD5 of `Portainer-App` (of `AGENT_SECRET` when set),
//! the digest itself standing in for the hash.
//!
//! Without a secret the first key whose signature verifies is pinned and kept in the state
//! file (the Go agent pins the first key it sees, before checking it, and forgets it at
//! restart). With a secret each request's own key is checked. Verified (key, signature) pairs
//! are remembered: Portainer reuses its signature, so a long session verifies once.

use crate::state::Persisted;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub const PUBLIC_KEY_HEADER: &str = "X-PortainerAgent-PublicKey";
pub const SIGNATURE_HEADER: &str = "X-PortainerAgent-Signature";
const DEFAULT_MESSAGE: &str = "Portainer-App";

/// The DER SubjectPublicKeyInfo of a P-256 key (`x509.MarshalPKIXPublicKey`) up to its point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Verified pairs remembered.
const REMEMBERED: usize = 8;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// A header is missing.
    Missing,
    /// Why, for the log (the answer itself says only "Invalid request signature").
    Invalid(&'static str),
}

pub struct Verifier {
    message: [u8; 16],
    with_secret: bool,
    persisted: Arc<Persisted>,
    verified: Mutex<VecDeque<(String, String)>>,
}

impl Verifier {
    pub fn new(secret: Option<&str>, persisted: Arc<Persisted>) -> Verifier {
        let mut message = [0u8; 16];
        message.copy_from_slice(&Md5::digest(secret.unwrap_or(DEFAULT_MESSAGE).as_bytes()));
        Verifier {
            message,
            with_secret: secret.is_some(),
            persisted,
            verified: Mutex::new(VecDeque::with_capacity(REMEMBERED)),
        }
    }

    pub fn check(&self, key: Option<&str>, signature: Option<&str>) -> Verdict {
        let (Some(key), Some(signature)) = (key, signature) else {
            return Verdict::Missing;
        };
        let key = key.trim().to_ascii_lowercase();
        let signature = signature.trim();
        let pair = (key, signature.to_owned());
        if self.lock().contains(&pair) {
            return Verdict::Valid;
        }
        let (key, _) = &pair;
        if !self.with_secret && self.pinned().is_some_and(|p| p != *key) {
            return Verdict::Invalid("a public key other than the pinned one");
        }
        if let Err(why) = verify(key, signature, &self.message) {
            return Verdict::Invalid(why);
        }
        if !self.with_secret && self.pinned().is_none() {
            let pinned = self.persisted.update(|s| {
                s.server_key.get_or_insert_with(|| key.clone());
            });
            if let Err(e) = pinned {
                log::error!("{e}; Portainer's key stays pinned in memory");
            }
            // Another request may have pinned another key first.
            if self.pinned().is_some_and(|p| p != *key) {
                return Verdict::Invalid("a public key other than the pinned one");
            }
            log::info!("Portainer's public key is now pinned (kept in the state file): {key}");
        }
        let mut verified = self.lock();
        if verified.len() == REMEMBERED {
            verified.pop_front();
        }
        verified.push_back(pair);
        Verdict::Valid
    }

    fn pinned(&self) -> Option<String> {
        self.persisted.read(|s| s.server_key.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, String)>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks one signature as Go's `ecdsa.Verify(key, md5, r, s)` does.
fn verify(key_hex: &str, signature: &str, message: &[u8; 16]) -> Result<(), &'static str> {
    let spki = decode_hex(key_hex).ok_or("a public key that is not hex")?;
    let point = spki
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .ok_or("a public key that is not a P-256 SubjectPublicKeyInfo")?;
    let key = VerifyingKey::from_sec1_bytes(point).map_err(|_| "a public key off the curve")?;
    let signature = STANDARD_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| "a signature that is not base64")?;
    let signature = Signature::from_slice(&signature).map_err(|_| "a malformed signature")?;
    key.verify_prehash(message, &signature)
        .map_err(|_| "a signature that does not verify (wrong AGENT_SECRET?)")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::SigningKey;

    /// What Portainer sends: hex SPKI and RawStd base64 `r || s` over the MD5 of `message`.
    fn portainer(seed: u8, message: &str) -> (String, String) {
        let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point.as_bytes());
        let key: String = spki.iter().map(|b| format!("{b:02x}")).collect();
        let signature: Signature = signing
            .sign_prehash(&Md5::digest(message.as_bytes()))
            .unwrap();
        (key, STANDARD_NO_PAD.encode(signature.to_bytes()))
    }

    fn persisted() -> (tempfile::TempDir, Arc<Persisted>) {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = Store::open(dir.path()).unwrap();
        (dir, Arc::new(Persisted::new(store, state)))
    }

    #[test]
    fn the_first_valid_key_is_pinned_and_saved_and_others_refused() {
        let (dir, persisted) = persisted();
        let verifier = Verifier::new(None, persisted);
        let (key, sig) = portainer(1, "Portainer-App");
        assert_eq!(verifier.check(None, Some(&sig)), Verdict::Missing);
        // A forged signature pins nothing.
        let (_, other_sig) = portainer(2, "Portainer-App");
        assert!(matches!(
            verifier.check(Some(&key), Some(&other_sig)),
            Verdict::Invalid(_)
        ));
        assert_eq!(verifier.check(Some(&key), Some(&sig)), Verdict::Valid);
        // Upper-case hex is the same key.
        assert_eq!(
            verifier.check(Some(&key.to_uppercase()), Some(&sig)),
            Verdict::Valid
        );
        let (other_key, other_sig) = portainer(2, "Portainer-App");
        assert_eq!(
            verifier.check(Some(&other_key), Some(&other_sig)),
            Verdict::Invalid("a public key other than the pinned one")
        );
        // The pin survives a restart.
        let (_, state) = Store::open(dir.path()).unwrap();
        assert_eq!(state.server_key.as_deref(), Some(key.as_str()));
    }

    #[test]
    fn a_secret_changes_the_message_and_disables_pinning() {
        let (_dir, persisted) = persisted();
        let verifier = Verifier::new(Some("s3cret"), persisted.clone());
        let (key, sig) = portainer(3, "s3cret");
        assert_eq!(verifier.check(Some(&key), Some(&sig)), Verdict::Valid);
        let (key2, sig2) = portainer(4, "s3cret");
        assert_eq!(verifier.check(Some(&key2), Some(&sig2)), Verdict::Valid);
        let (key3, sig3) = portainer(5, "Portainer-App");
        assert!(matches!(
            verifier.check(Some(&key3), Some(&sig3)),
            Verdict::Invalid(_)
        ));
        assert_eq!(persisted.read(|s| s.server_key.clone()), None);
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let (_dir, persisted) = persisted();
        let verifier = Verifier::new(None, persisted);
        let (key, sig) = portainer(6, "Portainer-App");
        for (k, s) in [
            ("zz", sig.as_str()),
            ("3059", sig.as_str()),
            (key.as_str(), "!!!"),
            (key.as_str(), "AAAA"),
            (&key[..key.len() - 2], sig.as_str()),
        ] {
            assert!(
                matches!(verifier.check(Some(k), Some(s)), Verdict::Invalid(_)),
                "{k} {s}"
            );
        }
    }
}
