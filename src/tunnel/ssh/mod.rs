//! A minimal SSH client, exactly what chisel's protocol needs from one: curve25519 key
//! exchange, an ECDSA P-256 host key checked against the Edge key's fingerprint, AEAD ciphers,
//! password authentication, global requests and server-opened channels. Built on ring, which
//! the TLS stack already links (a general SSH crate would add ~400 KB; see README).

mod cipher;
mod client;
mod kex;
#[cfg(test)]
mod scripted;
mod transport;
mod wire;

pub use client::{Client, Error, Event, MAX_PACKET};
#[cfg(fuzzing)]
pub use {
    cipher::{Algorithm, Cipher},
    kex::negotiate,
    wire::{Reader, Writer},
};
