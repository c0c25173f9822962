//! Header fields, shared by request and response heads: lookup, list elements and
//! `Content-Length`.

use super::Error;

/// In the order received; values are UTF-8 with invalid bytes replaced.
pub type Fields = Vec<(String, String)>;

pub fn collect(headers: &[httparse::Header<'_>]) -> Fields {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The first value of the header `name` (case-insensitive).
pub fn first<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The comma-separated elements of every `name` header, trimmed.
pub fn elements<'a>(
    fields: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The `Content-Length`, if any: digits only, and several fields must agree.
pub fn content_length(fields: &[(String, String)]) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in elements(fields, "Content-Length") {
        let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten();
        match (parsed, length) {
            (None, _) => return Err(Error::BadContentLength(value.to_owned())),
            (Some(n), Some(m)) if n != m => {
                return Err(Error::BadContentLength(format!("{m}, {n}")))
            }
            (Some(n), _) => length = Some(n),
        }
    }
    Ok(length)
}

/// httparse's complaint about `buf`, with its first bytes.
pub fn malformed(e: httparse::Error, buf: &[u8]) -> Error {
    let start = &buf[..buf.len().min(40)];
    Error::MalformedHead(format!(
        "{e}; it starts with {:?}",
        String::from_utf8_lossy(start)
    ))
}
