//! Key exchange for the client side: the KEXINIT we send and its negotiation against the
//! server's (RFC 4253 §7), `curve25519-sha256` (RFC 8731) with the `ecdsa-sha2-nistp256` host
//! key Portainer's chisel server uses (RFC 5656), strict KEX against Terrapin (OpenSSH
//! PROTOCOL §1.10), the key derivation (RFC 4253 §7.2) and chisel's host key fingerprint check.

use super::cipher::Algorithm;
use super::wire::{put_mpint, put_string, Malformed, Reader, Writer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{digest, Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, ECDSA_P256_SHA256_FIXED};
use std::fmt;

pub const MSG_KEXINIT: u8 = 20;
pub const MSG_NEWKEYS: u8 = 21;
pub const MSG_KEX_ECDH_INIT: u8 = 30;
pub const MSG_KEX_ECDH_REPLY: u8 = 31;

const KEX_ALGORITHMS: [&str; 2] = ["curve25519-sha256", "curve25519-sha256@libssh.org"];
const STRICT_CLIENT: &str = "kex-strict-c-v00@openssh.com";
const STRICT_SERVER: &str = "kex-strict-s-v00@openssh.com";
const HOST_KEY_ALGORITHM: &str = "ecdsa-sha2-nistp256";
/// Never used (only AEAD ciphers are offered, which need no MAC), but some servers insist on a
/// common MAC name.
const MAC_ALGORITHM: &str = "hmac-sha2-256";

#[derive(Debug)]
pub enum Error {
    Malformed(Malformed),
    /// No algorithm in common for this purpose; the server's list follows.
    NoCommon(&'static str, String),
    BadServerKey(&'static str),
    BadSignature,
    /// The server's key is not the one the Edge key names.
    Fingerprint {
        expected: String,
        got: String,
    },
    Random,
}

impl From<Malformed> for Error {
    fn from(e: Malformed) -> Self {
        Error::Malformed(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(e) => e.fmt(f),
            Error::NoCommon(what, theirs) => {
                write!(f, "no {what} in common with the server (it offers {theirs})")
            }
            Error::BadServerKey(why) => write!(f, "the server's host key is unusable ({why})"),
            Error::BadSignature => f.write_str(
                "the server's key exchange signature is invalid (the connection may be tampered with)",
            ),
            Error::Fingerprint { expected, got } => write!(
                f,
                "the tunnel server's key fingerprint is {got}, but the Edge key expects {expected}: refusing to connect (someone may be intercepting the connection, or Portainer's tunnel key changed and this device needs the new Edge key)"
            ),
            Error::Random => f.write_str("the system random generator failed"),
        }
    }
}

/// Our KEXINIT payload. The strict-KEX marker belongs in the first one only.
pub fn client_kexinit(first: bool) -> Result<Vec<u8>, Error> {
    let mut cookie = [0u8; 16];
    SystemRandom::new()
        .fill(&mut cookie)
        .map_err(|_| Error::Random)?;
    let mut kex = KEX_ALGORITHMS.join(",");
    if first {
        kex.push(',');
        kex.push_str(STRICT_CLIENT);
    }
    let ciphers = Algorithm::preferred().map(Algorithm::name).join(",");
    Ok(Writer::new(MSG_KEXINIT)
        .raw(&cookie)
        .string(kex.as_bytes())
        .string(HOST_KEY_ALGORITHM.as_bytes())
        .string(ciphers.as_bytes())
        .string(ciphers.as_bytes())
        .string(MAC_ALGORITHM.as_bytes())
        .string(MAC_ALGORITHM.as_bytes())
        .string(b"none")
        .string(b"none")
        .string(b"")
        .string(b"")
        .bool(false)
        .u32(0)
        .finish())
}

/// What both sides agreed on.
#[derive(Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub client_to_server: Algorithm,
    pub server_to_client: Algorithm,
    /// Both sides speak strict KEX (only looked at in the first exchange).
    pub strict: bool,
    /// The server sent a guessed key exchange packet that does not fit: skip it.
    pub skip_guess: bool,
}

/// Negotiates against the server's KEXINIT payload: for each purpose the first of our
/// algorithms the server also offers.
pub fn negotiate(server_kexinit: &[u8]) -> Result<Negotiated, Error> {
    let mut r = Reader::new(server_kexinit);
    r.skip(1 + 16)?;
    let kex = r.names()?;
    let host_keys = r.names()?;
    let c2s = r.names()?;
    let s2c = r.names()?;
    let mac_c2s = r.names()?;
    let mac_s2c = r.names()?;
    let comp_c2s = r.names()?;
    let comp_s2c = r.names()?;
    r.names()?;
    r.names()?;
    let guess_follows = r.bool()?;
    let common = |what: &'static str, ours: &[&str], theirs: &[&str]| -> Result<(), Error> {
        if ours.iter().any(|o| theirs.contains(o)) {
            Ok(())
        } else {
            Err(Error::NoCommon(what, theirs.join(",")))
        }
    };
    common("key exchange method", &KEX_ALGORITHMS, &kex)?;
    common("host key algorithm", &[HOST_KEY_ALGORITHM], &host_keys)?;
    common("compression", &["none"], &comp_c2s)?;
    common("compression", &["none"], &comp_s2c)?;
    let cipher = |what: &'static str, theirs: &[&str]| {
        Algorithm::preferred()
            .iter()
            .copied()
            .find(|a| theirs.contains(&a.name()))
            .ok_or_else(|| Error::NoCommon(what, theirs.join(",")))
    };
    let client_to_server = cipher("cipher", &c2s)?;
    let server_to_client = cipher("cipher", &s2c)?;
    // The MAC lists do not matter with AEAD ciphers; read only to validate the message.
    let _ = (mac_c2s, mac_s2c);
    let skip_guess = guess_follows
        && (kex.first() != Some(&KEX_ALGORITHMS[0])
            || host_keys.first() != Some(&HOST_KEY_ALGORITHM));
    Ok(Negotiated {
        client_to_server,
        server_to_client,
        strict: kex.contains(&STRICT_SERVER),
        skip_guess,
    })
}

/// Our half of a curve25519 exchange.
pub struct Exchange {
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

/// The strings the exchange hash covers besides the exchange itself.
pub struct Transcript<'a> {
    pub client_version: &'a [u8],
    pub server_version: &'a [u8],
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
}

/// A finished exchange: the shared secret (as an encoded mpint) and the exchange hash.
pub struct Secrets {
    pub shared: Vec<u8>,
    pub hash: [u8; 32],
}

impl Exchange {
    /// Returns the exchange and the `SSH_MSG_KEX_ECDH_INIT` to send.
    pub fn start() -> Result<(Exchange, Vec<u8>), Error> {
        let private = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
            .map_err(|_| Error::Random)?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::Random)?
            .as_ref()
            .to_vec();
        let init = Writer::new(MSG_KEX_ECDH_INIT).string(&public).finish();
        Ok((Exchange { private, public }, init))
    }

    /// Checks the server's `SSH_MSG_KEX_ECDH_REPLY`: its host key against the expected
    /// fingerprint, and its signature over the exchange hash.
    pub fn finish(
        self,
        reply: &[u8],
        transcript: &Transcript<'_>,
        fingerprint: &str,
    ) -> Result<Secrets, Error> {
        let mut r = Reader::new(reply);
        r.skip(1)?;
        let host_key = r.string()?;
        let server_public = r.string()?;
        let signature_blob = r.string()?;
        check_fingerprint(fingerprint, host_key)?;
        let point = host_key_point(host_key)?;

        let mut shared = Vec::new();
        agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(&X25519, server_public),
            |secret| put_mpint(&mut shared, secret),
        )
        .map_err(|_| Error::BadServerKey("its curve25519 public value is invalid"))?;

        let mut h = Context::new(&SHA256);
        let mut field = Vec::new();
        for part in [
            transcript.client_version,
            transcript.server_version,
            transcript.client_kexinit,
            transcript.server_kexinit,
            host_key,
            &self.public,
            server_public,
        ] {
            field.clear();
            put_string(&mut field, part);
            h.update(&field);
        }
        h.update(&shared);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(h.finish().as_ref());

        let signature = fixed_signature(signature_blob)?;
        signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(&hash, &signature)
            .map_err(|_| Error::BadSignature)?;
        Ok(Secrets { shared, hash })
    }
}

/// The uncompressed P-256 point of an `ecdsa-sha2-nistp256` host key blob.
fn host_key_point(blob: &[u8]) -> Result<&[u8], Error> {
    let mut r = Reader::new(blob);
    if r.string()? != HOST_KEY_ALGORITHM.as_bytes() {
        return Err(Error::BadServerKey("not an ecdsa-sha2-nistp256 key"));
    }
    if r.string()? != b"nistp256" {
        return Err(Error::BadServerKey("not on curve nistp256"));
    }
    let point = r.string()?;
    if point.len() != 65 || point[0] != 4 {
        return Err(Error::BadServerKey("not an uncompressed P-256 point"));
    }
    Ok(point)
}

/// An SSH ECDSA signature blob as ring's fixed `r || s` (32 bytes each).
fn fixed_signature(blob: &[u8]) -> Result<[u8; 64], Error> {
    let mut r = Reader::new(blob);
    if r.string()? != HOST_KEY_ALGORITHM.as_bytes() {
        return Err(Error::BadSignature);
    }
    let mut inner = Reader::new(r.string()?);
    let mut out = [0u8; 64];
    for half in out.chunks_mut(32) {
        let mpint = inner.string()?;
        let digits = &mpint[mpint.iter().position(|b| *b != 0).unwrap_or(mpint.len())..];
        if digits.len() > 32 {
            return Err(Error::BadSignature);
        }
        half[32 - digits.len()..].copy_from_slice(digits);
    }
    Ok(out)
}

/// chisel's check (`client/client.go` `verifyServer`): the expected fingerprint is the padded
/// base64 SHA-256 of the host key blob; one that is not base64 (the `aa:bb:...` form of old
/// servers) is compared as a prefix of the colon-separated MD5.
pub fn check_fingerprint(expected: &str, host_key: &[u8]) -> Result<(), Error> {
    let sha256 = STANDARD.encode(digest(&SHA256, host_key));
    if STANDARD.decode(expected).is_ok() {
        if sha256 == expected {
            return Ok(());
        }
        return Err(Error::Fingerprint {
            expected: expected.to_owned(),
            got: sha256,
        });
    }
    use md5::Digest;
    let legacy: Vec<String> = md5::Md5::digest(host_key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let legacy = legacy.join(":");
    if !expected.is_empty() && legacy.starts_with(expected) {
        return Ok(());
    }
    Err(Error::Fingerprint {
        expected: expected.to_owned(),
        got: format!("{sha256} (MD5 {legacy})"),
    })
}

/// Key material for one purpose (RFC 4253 §7.2): `letter` is `A`..`D` for the client-to-server
/// IV, server-to-client IV, client-to-server key and server-to-client key.
pub fn derive(secrets: &Secrets, session_id: &[u8], letter: u8, len: usize) -> Vec<u8> {
    let mut h = Context::new(&SHA256);
    h.update(&secrets.shared);
    h.update(&secrets.hash);
    h.update(&[letter]);
    h.update(session_id);
    let mut out = h.finish().as_ref().to_vec();
    while out.len() < len {
        let mut h = Context::new(&SHA256);
        h.update(&secrets.shared);
        h.update(&secrets.hash);
        h.update(&out);
        out.extend_from_slice(h.finish().as_ref());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn host_key_blob(point: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        put_string(&mut blob, HOST_KEY_ALGORITHM.as_bytes());
        put_string(&mut blob, b"nistp256");
        put_string(&mut blob, point);
        blob
    }

    #[test]
    fn fingerprints_in_both_forms() {
        let blob = host_key_blob(&[4u8; 65]);
        let good = STANDARD.encode(digest(&SHA256, &blob));
        assert!(check_fingerprint(&good, &blob).is_ok());
        let err = check_fingerprint("vzQOBZDci4gQywQpIQel2N3uveNiA0P5itO2mkU1e/s=", &blob)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&good) && err.contains("refusing"), "{err}");
        use md5::Digest;
        let md5: Vec<String> = md5::Md5::digest(&blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(check_fingerprint(&md5.join(":"), &blob).is_ok());
        assert!(
            check_fingerprint(&md5[..4].join(":"), &blob).is_ok(),
            "prefix, as chisel"
        );
        assert!(check_fingerprint("00:11:22", &blob).is_err());
    }

    #[test]
    fn negotiation_picks_our_first_common_and_sees_strict_kex() {
        let server = |kex: &str, ciphers: &str| {
            Writer::new(MSG_KEXINIT)
                .raw(&[0; 16])
                .string(kex.as_bytes())
                .string(b"ecdsa-sha2-nistp256")
                .string(ciphers.as_bytes())
                .string(ciphers.as_bytes())
                .string(b"hmac-sha2-256-etm@openssh.com")
                .string(b"hmac-sha2-256-etm@openssh.com")
                .string(b"none")
                .string(b"none")
                .string(b"")
                .string(b"")
                .bool(false)
                .u32(0)
                .finish()
        };
        let n = negotiate(&server(
            "curve25519-sha256@libssh.org,kex-strict-s-v00@openssh.com",
            "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com",
        ))
        .unwrap();
        assert_eq!(n.client_to_server, Algorithm::preferred()[0]);
        assert!(n.strict && !n.skip_guess);
        let n = negotiate(&server("curve25519-sha256", "aes128-gcm@openssh.com")).unwrap();
        assert_eq!(n.server_to_client, Algorithm::Aes128Gcm);
        assert!(!n.strict);
        let err = negotiate(&server("diffie-hellman-group14-sha1", "aes128-ctr"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key exchange method") && err.contains("group14"),
            "{err}"
        );
        let err = negotiate(&server("curve25519-sha256", "aes128-ctr"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cipher") && err.contains("aes128-ctr"),
            "{err}"
        );
    }

    #[test]
    fn host_key_signature_is_verified() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let host = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let blob = host_key_blob(host.public_key().as_ref());
        let fingerprint = STANDARD.encode(digest(&SHA256, &blob));

        // Play the server: its curve25519 half, the hash, the signature.
        let (exchange, init) = Exchange::start().unwrap();
        let client_public = Reader::new(&init[1..]).string().unwrap().to_vec();
        let server_private = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
        let server_public = server_private
            .compute_public_key()
            .unwrap()
            .as_ref()
            .to_vec();
        let mut shared = Vec::new();
        agreement::agree_ephemeral(
            server_private,
            &UnparsedPublicKey::new(&X25519, &client_public),
            |s| put_mpint(&mut shared, s),
        )
        .unwrap();
        let transcript = Transcript {
            client_version: b"SSH-chisel-v3-client",
            server_version: b"SSH-chisel-v3-server",
            client_kexinit: b"ci",
            server_kexinit: b"si",
        };
        let mut h = Context::new(&SHA256);
        for part in [
            transcript.client_version,
            transcript.server_version,
            transcript.client_kexinit,
            transcript.server_kexinit,
            &blob,
            &client_public,
            &server_public,
        ] {
            let mut f = Vec::new();
            put_string(&mut f, part);
            h.update(&f);
        }
        h.update(&shared);
        let hash = h.finish();
        let sig = host.sign(&rng, hash.as_ref()).unwrap();
        let (r, s) = sig.as_ref().split_at(32);
        let mut inner = Vec::new();
        put_mpint(&mut inner, r);
        put_mpint(&mut inner, s);
        let mut sig_blob = Vec::new();
        put_string(&mut sig_blob, HOST_KEY_ALGORITHM.as_bytes());
        put_string(&mut sig_blob, &inner);
        let reply = |sig_blob: &[u8]| {
            Writer::new(MSG_KEX_ECDH_REPLY)
                .string(&blob)
                .string(&server_public)
                .string(sig_blob)
                .finish()
        };
        let secrets = exchange
            .finish(&reply(&sig_blob), &transcript, &fingerprint)
            .unwrap();
        assert_eq!(secrets.hash, hash.as_ref());
        assert_eq!(secrets.shared, shared);

        // The same reply with a changed transcript does not verify.
        let (exchange, _) = Exchange::start().unwrap();
        assert!(matches!(
            exchange.finish(&reply(&sig_blob), &transcript, &fingerprint),
            Err(Error::BadSignature)
        ));
        // A wrong fingerprint is refused before anything else.
        let (exchange, _) = Exchange::start().unwrap();
        assert!(matches!(
            exchange.finish(&reply(&sig_blob), &transcript, "AAAA"),
            Err(Error::Fingerprint { .. })
        ));
    }

    #[test]
    fn derivation_extends_past_one_hash() {
        let secrets = Secrets {
            shared: vec![0, 0, 0, 1, 5],
            hash: [3; 32],
        };
        let long = derive(&secrets, b"session", b'C', 64);
        let short = derive(&secrets, b"session", b'C', 32);
        assert_eq!(&long[..32], &short[..]);
        assert_ne!(&long[32..], &long[..32]);
        assert_ne!(derive(&secrets, b"session", b'D', 32), short);
    }
}
