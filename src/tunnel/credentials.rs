//! The tunnel credentials in a poll answer (server `api/chisel/tunnel.go` `encryptCredentials`,
//! `pkg/libcrypto`): RawStd base64 of `nonce(12) || AES-256-GCM(user:pass)`, no AAD, keyed with
//! the 32 ASCII characters of the lowercase hex MD5 of the Edge ID.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NotBase64,
    TooShort,
    /// The Edge ID is not the one Portainer encrypted them for.
    WrongEdgeId,
    NotText,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBase64 => f.write_str("the tunnel credentials from Portainer are not base64"),
            Error::TooShort => f.write_str("the tunnel credentials from Portainer are truncated"),
            Error::WrongEdgeId => f.write_str(
                "the tunnel credentials from Portainer do not decrypt with this Edge ID: Portainer has another Edge ID for this environment (set EDGE_ID to the one Portainer shows)",
            ),
            Error::NotText => f.write_str("the tunnel credentials decrypt to something that is not user:password"),
        }
    }
}

/// `user:password` for chisel.
pub fn decrypt(credentials: &str, edge_id: &str) -> Result<String, Error> {
    let mut blob = STANDARD_NO_PAD
        .decode(credentials.trim_end_matches('='))
        .map_err(|_| Error::NotBase64)?;
    if blob.len() < 12 + 16 {
        return Err(Error::TooShort);
    }
    let key = hex(&Md5::digest(edge_id.as_bytes()));
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.as_bytes()).map_err(|_| Error::WrongEdgeId)?,
    );
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&blob[..12]);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut blob[12..],
        )
        .map_err(|_| Error::WrongEdgeId)?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| Error::NotText)?;
    if !text.contains(':') {
        return Err(Error::NotText);
    }
    Ok(text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Portainer does (`libcrypto.Encrypt`).
    fn encrypt(plain: &str, edge_id: &str, nonce: [u8; 12]) -> String {
        let key = hex(&Md5::digest(edge_id.as_bytes()));
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_bytes()).unwrap());
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .unwrap();
        let mut blob = nonce.to_vec();
        blob.extend(data);
        STANDARD_NO_PAD.encode(blob)
    }

    #[test]
    fn decrypts_what_portainer_encrypts() {
        let creds = encrypt("aB3dE6gH:Zy9xW8vU", "7e2b0a2c-edge", [5; 12]);
        assert_eq!(creds.len(), 60, "17 bytes + nonce + tag, unpadded");
        assert_eq!(
            decrypt(&creds, "7e2b0a2c-edge").unwrap(),
            "aB3dE6gH:Zy9xW8vU"
        );
    }

    #[test]
    fn a_wrong_edge_id_is_named() {
        let creds = encrypt("u:p", "right", [1; 12]);
        let err = decrypt(&creds, "wrong").unwrap_err();
        assert_eq!(err, Error::WrongEdgeId);
        assert!(err.to_string().contains("EDGE_ID"));
        assert_eq!(decrypt("%%%", "x"), Err(Error::NotBase64));
        assert_eq!(decrypt("AAAA", "x"), Err(Error::TooShort));
    }
}
