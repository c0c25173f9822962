//! The binary packet protocol (RFC 4253 §6) with the AEAD ciphers Go's x/crypto/ssh server
//! offers: `chacha20-poly1305@openssh.com` (OpenSSH PROTOCOL.chacha20poly1305) and
//! `aes256-gcm@openssh.com` / `aes128-gcm@openssh.com` (RFC 5647). No MAC algorithm is needed
//! with them. Before the first key exchange packets are in the clear.

use ring::aead::chacha20_poly1305_openssh as chacha;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use std::sync::OnceLock;

/// The largest packet accepted (RFC 4253 requires 35000; Go sends at most 32 KiB of data).
pub const MAX_PACKET: usize = 256 * 1024;
const TAG_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    ChaCha20Poly1305,
    Aes256Gcm,
    Aes128Gcm,
}

impl Algorithm {
    /// Our preference, decided once per process (and logged at DEBUG): AES-GCM first where
    /// the CPU has AES instructions that ring uses, as it then costs less on both ends (Go's
    /// server on x86 too) than ChaCha20; ChaCha20 first elsewhere, the fast one on ARM cores
    /// without them (Raspberry Pi 2 to 4).
    pub fn preferred() -> &'static [Algorithm; 3] {
        static ORDER: OnceLock<[Algorithm; 3]> = OnceLock::new();
        ORDER.get_or_init(|| {
            let aes = aes_instructions();
            let order = Algorithm::by_preference(aes);
            log::debug!(
                "SSH ciphers in order of preference: {} ({})",
                order.map(Algorithm::name).join(","),
                if aes {
                    "the CPU has AES instructions that ring uses"
                } else {
                    "no AES instructions that ring uses on this CPU"
                }
            );
            order
        })
    }

    /// AES-128 before AES-256 as Go's and OpenSSH's clients order them (ten rounds, not 14).
    const fn by_preference(aes_instructions: bool) -> [Algorithm; 3] {
        if aes_instructions {
            [
                Algorithm::Aes128Gcm,
                Algorithm::Aes256Gcm,
                Algorithm::ChaCha20Poly1305,
            ]
        } else {
            [
                Algorithm::ChaCha20Poly1305,
                Algorithm::Aes256Gcm,
                Algorithm::Aes128Gcm,
            ]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ChaCha20Poly1305 => "chacha20-poly1305@openssh.com",
            Algorithm::Aes256Gcm => "aes256-gcm@openssh.com",
            Algorithm::Aes128Gcm => "aes128-gcm@openssh.com",
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Algorithm::ChaCha20Poly1305 => chacha::KEY_LEN,
            Algorithm::Aes256Gcm => 32,
            Algorithm::Aes128Gcm => 16,
        }
    }

    pub fn iv_len(self) -> usize {
        match self {
            Algorithm::ChaCha20Poly1305 => 0,
            _ => 12,
        }
    }

    fn gcm(self) -> &'static aead::Algorithm {
        match self {
            Algorithm::Aes128Gcm => &aead::AES_128_GCM,
            _ => &aead::AES_256_GCM,
        }
    }
}

/// AES-NI and carry-less multiplication (ring's AES-GCM needs both for its fast path).
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn aes_instructions() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

/// The ARMv8 crypto extensions: `HWCAP_AES` and `HWCAP_PMULL` of `getauxval(AT_HWCAP)` (the
/// standard library's `aes` feature is both).
#[cfg(target_arch = "aarch64")]
fn aes_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
}

/// 32-bit ARM (armv7) included: ring 0.17 has no code using the AES instructions there
/// (`HWCAP2_AES` of an ARMv8 core in 32-bit mode), only NEON, where ChaCha20 is faster.
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
fn aes_instructions() -> bool {
    false
}

/// An RFC 5647 nonce: a fixed 4-byte field and a 64-bit counter incremented per packet.
struct GcmNonce([u8; 12]);

impl GcmNonce {
    fn next(&mut self) -> Nonce {
        let nonce = Nonce::assume_unique_for_key(self.0);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&self.0[4..]);
        let counter = u64::from_be_bytes(counter).wrapping_add(1);
        self.0[4..].copy_from_slice(&counter.to_be_bytes());
        nonce
    }
}

enum Keys {
    Plain,
    ChaCha {
        seal: chacha::SealingKey,
        open: chacha::OpeningKey,
    },
    /// Boxed: an AES key schedule is large.
    Gcm {
        key: Box<LessSafeKey>,
        nonce: GcmNonce,
    },
}

/// One direction of a connection's packet protection.
pub struct Cipher {
    keys: Keys,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    TooLarge(usize),
    BadLength,
    /// The authentication tag did not match: corrupted or forged.
    Integrity,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooLarge(n) => write!(
                f,
                "the server sent an SSH packet of {n} bytes, over the limit of {MAX_PACKET} (RFC 4253 §6.1)"
            ),
            Error::BadLength => f.write_str("the server sent a packet with an invalid length"),
            Error::Integrity => f.write_str(
                "a packet from the server failed its integrity check (corrupted or tampered with)",
            ),
        }
    }
}

impl Cipher {
    pub fn plain() -> Cipher {
        Cipher { keys: Keys::Plain }
    }

    /// `key` and `iv` are exactly [`Algorithm::key_len`] and [`Algorithm::iv_len`] long (the
    /// key derivation makes them so).
    pub fn new(algorithm: Algorithm, key: &[u8], iv: &[u8]) -> Cipher {
        let keys = match algorithm {
            Algorithm::ChaCha20Poly1305 => {
                let mut material = [0u8; chacha::KEY_LEN];
                material.copy_from_slice(&key[..chacha::KEY_LEN]);
                Keys::ChaCha {
                    seal: chacha::SealingKey::new(&material),
                    open: chacha::OpeningKey::new(&material),
                }
            }
            gcm => {
                let mut fixed = [0u8; 12];
                fixed.copy_from_slice(&iv[..12]);
                // The length always matches the algorithm, so this cannot fail.
                let unbound = UnboundKey::new(gcm.gcm(), &key[..gcm.key_len()])
                    .unwrap_or_else(|_| unreachable!("key length fixed by the algorithm"));
                Keys::Gcm {
                    key: Box::new(LessSafeKey::new(unbound)),
                    nonce: GcmNonce(fixed),
                }
            }
        };
        Cipher { keys }
    }

    /// Bytes of the packet covered by the length field alignment, and the block size.
    fn block(&self) -> (usize, usize) {
        match self.keys {
            // Plain: the whole packet, length included, is a multiple of 8.
            Keys::Plain => (4, 8),
            // AEAD: the length is not part of the aligned data.
            Keys::ChaCha { .. } => (0, 8),
            Keys::Gcm { .. } => (0, 16),
        }
    }

    fn tag_len(&self) -> usize {
        match self.keys {
            Keys::Plain => 0,
            _ => TAG_LEN,
        }
    }

    /// Appends `payload` as one protected packet to `out`.
    pub fn seal(&mut self, sequence: u32, payload: &[u8], out: &mut Vec<u8>) {
        let (counted, block) = self.block();
        let unpadded = counted + 1 + payload.len();
        let mut padding = block - unpadded % block;
        if padding < 4 {
            padding += block;
        }
        let length = 1 + payload.len() + padding;
        let start = out.len();
        out.extend_from_slice(&(length as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(payload);
        // Padding is encrypted with the AEAD ciphers, so zeros reveal nothing.
        out.resize(out.len() + padding, 0);
        match &mut self.keys {
            Keys::Plain => {}
            Keys::ChaCha { seal, .. } => {
                let mut tag = [0u8; TAG_LEN];
                seal.seal_in_place(sequence, &mut out[start..], &mut tag);
                out.extend_from_slice(&tag);
            }
            Keys::Gcm { key, nonce } => {
                let (length_field, body) = out[start..].split_at_mut(4);
                let aad = Aad::from(<[u8; 4]>::try_from(&*length_field).unwrap_or_default());
                // Sealing fails only for inputs of gigabytes.
                let tag = key
                    .seal_in_place_separate_tag(nonce.next(), aad, body)
                    .unwrap_or_else(|_| unreachable!("SSH packets are far below the GCM limit"));
                out.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// The total size of the packet whose first four bytes are `first`, once its length is
    /// known, or an error for an impossible length.
    pub fn packet_size(&self, sequence: u32, first: [u8; 4]) -> Result<usize, Error> {
        let length = match &self.keys {
            Keys::ChaCha { open, .. } => open.decrypt_packet_length(sequence, first),
            _ => first,
        };
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_PACKET {
            return Err(Error::TooLarge(length));
        }
        let (counted, block) = self.block();
        if length < 5 || !(counted + length).is_multiple_of(block) {
            return Err(Error::BadLength);
        }
        Ok(4 + length + self.tag_len())
    }

    /// Opens a whole packet of [`Cipher::packet_size`] bytes in place; returns the payload.
    pub fn open<'a>(&mut self, sequence: u32, packet: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let body_end = packet.len() - self.tag_len();
        let (data, tag) = packet.split_at_mut(body_end);
        let plain: &'a [u8] = match &mut self.keys {
            Keys::Plain => &data[4..],
            Keys::ChaCha { open, .. } => {
                let tag = <&[u8; TAG_LEN]>::try_from(&*tag).map_err(|_| Error::Integrity)?;
                open.open_in_place(sequence, data, tag)
                    .map_err(|_| Error::Integrity)?
            }
            Keys::Gcm { key, nonce } => {
                let (length_field, body) = data.split_at_mut(4);
                let aad = Aad::from(<[u8; 4]>::try_from(&*length_field).unwrap_or_default());
                let tag = aead::Tag::try_from(&*tag).map_err(|_| Error::Integrity)?;
                key.open_in_place_separate_tag(nonce.next(), aad, tag, body, 0..)
                    .map_err(|_| Error::Integrity)?;
                body
            }
        };
        let padding = usize::from(*plain.first().ok_or(Error::BadLength)?);
        if padding < 4 || padding + 1 > plain.len() {
            return Err(Error::BadLength);
        }
        Ok(&plain[1..plain.len() - padding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 3] = Algorithm::by_preference(false);

    fn round_trip(algorithm: Option<Algorithm>) {
        let key = [7u8; 64];
        let iv = [9u8; 12];
        let make = || match algorithm {
            Some(a) => Cipher::new(a, &key[..a.key_len()], &iv[..a.iv_len()]),
            None => Cipher::plain(),
        };
        let (mut sender, mut receiver) = (make(), make());
        for (seq, size) in [
            (0u32, 0usize),
            (1, 1),
            (2, 15),
            (3, 16),
            (4, 1000),
            (5, 32768),
        ] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            sender.seal(seq, &payload, &mut wire);
            let first: [u8; 4] = wire[..4].try_into().unwrap();
            assert_eq!(
                receiver.packet_size(seq, first),
                Ok(wire.len()),
                "{algorithm:?}"
            );
            assert_eq!(receiver.open(seq, &mut wire).unwrap(), &payload[..]);
        }
    }

    #[test]
    fn every_cipher_round_trips_with_valid_padding() {
        round_trip(None);
        for a in ALL {
            round_trip(Some(a));
        }
    }

    #[test]
    fn aes_gcm_comes_first_only_with_aes_instructions() {
        assert_eq!(Algorithm::by_preference(true)[0], Algorithm::Aes128Gcm);
        assert_eq!(
            Algorithm::by_preference(false)[0],
            Algorithm::ChaCha20Poly1305
        );
        let mut all = Algorithm::by_preference(true);
        all.sort_by_key(|a| a.name());
        let mut expected = ALL;
        expected.sort_by_key(|a| a.name());
        assert_eq!(all, expected, "the same algorithms either way");
        assert!(Algorithm::preferred() == &Algorithm::by_preference(aes_instructions()));
    }

    #[test]
    fn tampering_and_wrong_sequence_are_detected() {
        for a in ALL {
            let key = [1u8; 64];
            let iv = [2u8; 12];
            let mut sender = Cipher::new(a, &key[..a.key_len()], &iv[..a.iv_len()]);
            let mut receiver = Cipher::new(a, &key[..a.key_len()], &iv[..a.iv_len()]);
            let mut wire = Vec::new();
            sender.seal(0, b"hello", &mut wire);
            let mut flipped = wire.clone();
            let last = flipped.len() - 20;
            flipped[last] ^= 1;
            assert_eq!(
                receiver.open(0, &mut flipped),
                Err(Error::Integrity),
                "{a:?}"
            );
            if a == Algorithm::ChaCha20Poly1305 {
                // The sequence number is the nonce.
                let mut copy = wire.clone();
                assert_eq!(receiver.open(1, &mut copy), Err(Error::Integrity));
            }
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_reading() {
        let plain = Cipher::plain();
        assert_eq!(
            plain.packet_size(0, 0x7fff_fff8u32.to_be_bytes()),
            Err(Error::TooLarge(0x7fff_fff8))
        );
        assert_eq!(
            plain.packet_size(0, 13u32.to_be_bytes()),
            Err(Error::BadLength)
        );
    }
}
