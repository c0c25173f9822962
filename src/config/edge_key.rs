//! The Edge key Portainer shows in its UI: `base64.RawStdEncoding` (no `=` padding) of
//! `<portainer url>|<tunnel host:port>|<tunnel server fingerprint>|<endpoint id>`
//! (server `api/chisel/key.go`, agent `edge/key.go`). Endpoint id `0` is a global key: the id is
//! learned from the server by Edge ID.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeKey {
    pub portainer_url: String,
    pub tunnel_addr: String,
    pub fingerprint: String,
    /// `None` for a global key (endpoint id 0).
    pub endpoint_id: Option<i64>,
    /// The key was padded base64, which the Go agent refuses; we accept it and say so.
    pub was_padded: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NotBase64,
    NotUtf8,
    FieldCount(usize),
    EmptyField(&'static str),
    EndpointId(String),
    UrlScheme(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBase64 => f.write_str(
                "it is not base64; copy the whole key from Portainer (Environments > your Edge environment)",
            ),
            Error::NotUtf8 => f.write_str("it decodes to bytes that are not text; the key is damaged"),
            Error::FieldCount(n) => write!(
                f,
                "it decodes to {n} '|'-separated fields, expected 4 (url|tunnel address|fingerprint|endpoint id); the key is truncated or damaged"
            ),
            Error::EmptyField(name) => write!(f, "its {name} field is empty"),
            Error::EndpointId(v) => write!(f, "its endpoint id {v:?} is not an integer"),
            Error::UrlScheme(url) => write!(
                f,
                "its Portainer URL {url:?} does not start with http:// or https://"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl EdgeKey {
    pub fn decode(key: &str) -> Result<EdgeKey, Error> {
        let key = key.trim();
        // Any number of '=' at the end, needed or not: padding carries no data.
        let unpadded = key.trim_end_matches('=');
        let was_padded = unpadded.len() < key.len();
        let bytes = STANDARD_NO_PAD
            .decode(unpadded)
            .map_err(|_| Error::NotBase64)?;
        let plain = String::from_utf8(bytes).map_err(|_| Error::NotUtf8)?;
        let fields: Vec<&str> = plain.split('|').collect();
        let [url, tunnel, fingerprint, id] = fields[..] else {
            return Err(Error::FieldCount(fields.len()));
        };
        for (value, name) in [
            (url, "Portainer URL"),
            (tunnel, "tunnel address"),
            (fingerprint, "tunnel fingerprint"),
        ] {
            if value.is_empty() {
                return Err(Error::EmptyField(name));
            }
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::UrlScheme(url.to_owned()));
        }
        let id: i64 = id.parse().map_err(|_| Error::EndpointId(id.to_owned()))?;
        Ok(EdgeKey {
            portainer_url: url.to_owned(),
            tunnel_addr: tunnel.to_owned(),
            fingerprint: fingerprint.to_owned(),
            endpoint_id: (id != 0).then_some(id),
            was_padded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_KEY: &str = "aHR0cHM6Ly9wb3J0YWluZXIuZXhhbXBsZS5jb206OTQ0M3xwb3J0YWluZXIuZXhhbXBsZS5jb206ODAwMHx2elFPQlpEY2k0Z1F5d1FwSVFlbDJOM3V2ZU5pQTBQNWl0TzJta1UxZS9zPXwz";

    fn raw(plain: &str) -> String {
        STANDARD_NO_PAD.encode(plain)
    }

    #[test]
    fn decodes_the_spec_example() {
        let key = EdgeKey::decode(SPEC_KEY).unwrap();
        assert_eq!(key.portainer_url, "https://portainer.example.com:9443");
        assert_eq!(key.tunnel_addr, "portainer.example.com:8000");
        assert_eq!(
            key.fingerprint,
            "vzQOBZDci4gQywQpIQel2N3uveNiA0P5itO2mkU1e/s="
        );
        assert_eq!(key.endpoint_id, Some(3));
        assert!(!key.was_padded);
    }

    #[test]
    fn global_key_and_legacy_md5_fingerprint() {
        let plain = "http://10.116.1.178:9000|10.116.1.178:8000|46:99:4a:8d:a6:de:6a:bd:d8:e2:1c:99:81:60:54:55|0";
        let key = EdgeKey::decode(&raw(plain)).unwrap();
        assert_eq!(key.endpoint_id, None);
        assert_eq!(
            key.fingerprint,
            "46:99:4a:8d:a6:de:6a:bd:d8:e2:1c:99:81:60:54:55"
        );
    }

    #[test]
    fn accepts_a_padded_key_and_says_so() {
        use base64::engine::general_purpose::STANDARD;
        let padded = STANDARD.encode("https://p:9443|p:8000|fp|7");
        assert!(padded.ends_with('='));
        // Superfluous padding too: one '=' too many, or '=' after a key that needs none.
        let whole = raw("https://p:9443|p:8000|fp|77");
        assert_eq!(whole.len() % 4, 0);
        for text in [padded.clone(), padded + "=", whole + "="] {
            let key = EdgeKey::decode(&text).unwrap();
            assert!(key.was_padded, "{text}");
            assert!(matches!(key.endpoint_id, Some(7 | 77)), "{text}");
        }
    }

    #[test]
    fn precise_errors() {
        assert_eq!(EdgeKey::decode("not base64!"), Err(Error::NotBase64));
        assert_eq!(
            EdgeKey::decode(&STANDARD_NO_PAD.encode([0xff, 0xfe, 0x7c])),
            Err(Error::NotUtf8)
        );
        assert_eq!(
            EdgeKey::decode(&raw("https://p|p:8000|fp")),
            Err(Error::FieldCount(3))
        );
        assert_eq!(
            EdgeKey::decode(&raw("https://p|p:8000|fp|1|x")),
            Err(Error::FieldCount(5))
        );
        assert_eq!(
            EdgeKey::decode(&raw("https://p|p:8000|fp|three")),
            Err(Error::EndpointId("three".into()))
        );
        assert_eq!(
            EdgeKey::decode(&raw("https://p||fp|1")),
            Err(Error::EmptyField("tunnel address"))
        );
        assert_eq!(
            EdgeKey::decode(&raw("portainer:9443|p:8000|fp|1")),
            Err(Error::UrlScheme("portainer:9443".into()))
        );
    }
}
