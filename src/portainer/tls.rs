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
