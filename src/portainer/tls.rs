//! TLS settings for talking to the Portainer server: Mozilla's roots (webpki-roots) by default,
//! the CA file of `MTLS_SSL_CA` instead when set (the Go agent reads it only together with a
//! client certificate), a client certificate for mTLS, or no verification at all with
//! `EDGE_INSECURE_POLL` (polling only).

use crate::config::TlsFiles;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// PEM files are a few KiB; this bounds what a wrong path (say, a log file) can cost.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub enum Error {
    Read(&'static str, PathBuf, std::io::Error),
    Pem(&'static str, PathBuf, String),
    Missing(&'static str, PathBuf, &'static str),
    KeyMismatch(String),
    Rustls(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read(var, path, e) => write!(f, "{var}: cannot read {}: {e}", path.display()),
            Error::Pem(var, path, e) => write!(f, "{var}: {} is not valid PEM: {e}", path.display()),
            Error::Missing(var, path, what) => {
                write!(f, "{var}: {} contains no {what}", path.display())
            }
            Error::KeyMismatch(e) => write!(
                f,
                "MTLS_SSL_CERT and MTLS_SSL_KEY do not form a usable client certificate ({e}); check that the key belongs to the certificate"
            ),
            Error::Rustls(e) => write!(f, "TLS setup: {e}"),
        }
    }
}

impl std::error::Error for Error {}

pub fn config(files: &TlsFiles, insecure: bool) -> Result<TlsConfig, Error> {
    let mut builder = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .disable_verification(insecure);
    if let Some(ca) = &files.ca {
        let certs = certificates("MTLS_SSL_CA", ca)?;
        builder = builder.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        let chain = certificates("MTLS_SSL_CERT", cert)?;
        let key = private_key(key)?;
        check_pair(&chain, &key)?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

/// TLS for an `https://` tunnel address (a hand-edited Edge key): the CA file of
/// `MTLS_SSL_CA` when set, else Mozilla's roots; verification is never skipped.
pub fn tunnel_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("MTLS_SSL_CA", path)? {
                roots
                    .add(rustls::pki_types::CertificateDer::from(cert.der().to_vec()))
                    .map_err(|e| Error::Pem("MTLS_SSL_CA", path.to_owned(), e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Rustls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Who refused a certificate, for [`advice`]: the poll (where `EDGE_INSECURE_POLL` applies) or
/// the tunnel (always verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Portainer,
    Tunnel,
}

/// What the operator can do about a server certificate that was refused, when `error` (or what
/// it wraps) is such a refusal.
pub fn advice(error: &(dyn std::error::Error + 'static), peer: Peer) -> Option<&'static str> {
    let rustls::Error::InvalidCertificate(refusal) = refusal(error)? else {
        return None;
    };
    // rustls passes webpki's CaUsedAsEndEntity on as `Other`, named only by its Display.
    let ca_as_end_entity = matches!(refusal, rustls::CertificateError::Other(other)
        if other.0.to_string() == "CaUsedAsEndEntity");
    // A bad signature: an issuer of the trusted name that did not sign it (a CA or self-signed
    // certificate made anew with the same name, as after a reinstall).
    let unknown_issuer = matches!(
        refusal,
        rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
    );
    Some(match (unknown_issuer, ca_as_end_entity, peer) {
        (true, _, Peer::Portainer) => {
            "the certificate is not signed by a CA the agent trusts (most Portainer installs use a self-signed certificate on 9443): set EDGE_INSECURE_POLL=1 to accept it, or MTLS_SSL_CA=<PEM file of the CA that signed it, or of the self-signed certificate>"
        }
        (true, _, Peer::Tunnel) => {
            "the certificate is not signed by a CA the agent trusts: set MTLS_SSL_CA=<PEM file of the CA that signed it, or of the self-signed certificate> (EDGE_INSECURE_POLL does not apply to the tunnel)"
        }
        (_, true, Peer::Portainer) => {
            "the server presents a CA certificate as its own (as one made with `openssl req -x509` is), which no CA file makes acceptable: set EDGE_INSECURE_POLL=1, or give the server a certificate signed by a CA and set MTLS_SSL_CA=<PEM file of that CA>"
        }
        (_, true, Peer::Tunnel) => {
            "the server presents a CA certificate as its own (as one made with `openssl req -x509` is), which no CA file makes acceptable: give the server a certificate signed by a CA and set MTLS_SSL_CA=<PEM file of that CA>"
        }
        _ => return None,
    })
}

/// The rustls error in `error`'s chain, also inside the `io::Error`s and `ureq::Error`s that
/// carry it (neither gives it as `source()`).
fn refusal<'a>(mut error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = match error.downcast_ref::<ureq::Error>() {
            Some(ureq::Error::Rustls(found)) => return Some(found),
            Some(ureq::Error::Io(io)) => Some(io),
            _ => error.downcast_ref::<std::io::Error>(),
        };
        error = match inner.and_then(|e| e.get_ref()) {
            Some(inner) => inner,
            None => error.source()?,
        };
    }
}

fn read_pem(var: &'static str, path: &Path) -> Result<Vec<PemItem<'static>>, Error> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES).read_to_end(&mut bytes))
        .map_err(|e| Error::Read(var, path.to_owned(), e))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(var, path.to_owned(), e.to_string()))
}

fn certificates(var: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let certs: Vec<_> = read_pem(var, path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::Missing(var, path.to_owned(), "PEM certificate"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKey<'static>, Error> {
    read_pem("MTLS_SSL_KEY", path)?
        .into_iter()
        .find_map(|item| match item {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| Error::Missing("MTLS_SSL_KEY", path.to_owned(), "PEM private key"))
}

/// ureq panics on a client certificate rustls refuses, so check the pair here, at startup.
fn check_pair(chain: &[Certificate<'static>], key: &PrivateKey<'static>) -> Result<(), Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|e| Error::KeyMismatch(e.to_string()))?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::KeyMismatch(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| Error::KeyMismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// A self-signed certificate for localhost, marked as a CA or not, and what verifying it
    /// with `roots` (Mozilla's when `None`) says.
    fn verify(is_ca: bool, trusted_itself: bool) -> Result<(), rustls::Error> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        match trusted_itself {
            true => roots.add(cert.der().clone()).unwrap(),
            false => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(cert.der().to_vec()),
                &[],
                &ServerName::try_from("localhost").unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn a_self_signed_certificate_is_refused_with_what_to_do() {
        // Portainer's own certificate (libcrypto.GenerateCertsForHost): self-signed, not a CA.
        let error = verify(false, false).unwrap_err();
        let advice = advice(&error, Peer::Portainer).unwrap();
        assert!(
            advice.contains("EDGE_INSECURE_POLL=1") && advice.contains("MTLS_SSL_CA="),
            "{advice}"
        );
        // Which MTLS_SSL_CA makes acceptable.
        verify(false, true).unwrap();
        let tunnel = super::advice(&error, Peer::Tunnel).unwrap();
        assert!(
            tunnel.contains("MTLS_SSL_CA=") && tunnel.contains("does not apply to the tunnel"),
            "{tunnel}"
        );
        // As rustls hands it to tokio-rustls (an io::Error) and ureq (in its Error::Io).
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        assert_eq!(super::advice(&wrapped, Peer::Portainer), Some(advice));
        let wrapped = ureq::Error::Io(wrapped);
        assert_eq!(super::advice(&wrapped, Peer::Portainer), Some(advice));
    }

    #[test]
    fn a_ca_certificate_as_the_servers_own_is_refused_even_when_trusted() {
        for trusted_itself in [false, true] {
            let error = verify(true, trusted_itself).unwrap_err();
            assert!(error.to_string().contains("CaUsedAsEndEntity"), "{error}");
            let advice = advice(&error, Peer::Portainer).unwrap();
            assert!(
                advice.contains("EDGE_INSECURE_POLL=1")
                    && advice.contains("no CA file makes acceptable"),
                "{advice}"
            );
        }
        let other = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(advice(&other, Peer::Portainer), None);
    }
}
