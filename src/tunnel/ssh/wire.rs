//! SSH data types (RFC 4251 §5): reading them from a message with bounds checks, and writing
//! them. A message is a `Vec<u8>` starting with its message number.

use std::fmt;

/// A message that ended early or held something malformed.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed SSH message ({})", self.0)
    }
}

/// Reads fields from the front of a message.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.data.len() < n {
            return Err(Malformed(what));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1, "byte")?[0])
    }

    pub fn bool(&mut self) -> Result<bool, Malformed> {
        Ok(self.u8()? != 0)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4, "uint32")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        self.take(len, "string")
    }

    pub fn utf8(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.string()?).map_err(|_| Malformed("text is not UTF-8"))
    }

    /// A comma-separated name-list.
    pub fn names(&mut self) -> Result<Vec<&'a str>, Malformed> {
        let list = self.utf8()?;
        Ok(if list.is_empty() {
            Vec::new()
        } else {
            list.split(',').collect()
        })
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        self.take(n, "fixed field").map(|_| ())
    }

    /// Everything left (Go's `ssh:"rest"` fields).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Builds a message.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(message_number: u8) -> Writer {
        Writer {
            buf: vec![message_number],
        }
    }

    pub fn u8(mut self, v: u8) -> Writer {
        self.buf.push(v);
        self
    }

    pub fn bool(self, v: bool) -> Writer {
        self.u8(u8::from(v))
    }

    pub fn u32(mut self, v: u32) -> Writer {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(mut self, v: &[u8]) -> Writer {
        put_string(&mut self.buf, v);
        self
    }

    pub fn raw(mut self, v: &[u8]) -> Writer {
        self.buf.extend_from_slice(v);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub fn put_string(buf: &mut Vec<u8>, v: &[u8]) {
    // SSH strings are at most a packet long; a u32 always holds their length.
    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
    buf.extend_from_slice(v);
}

/// An unsigned big-endian integer as an SSH `mpint`: no leading zero bytes, but a zero byte in
/// front when the high bit is set (so it does not read as negative).
pub fn put_mpint(buf: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
    buf.extend_from_slice(&((digits.len() + usize::from(pad)) as u32).to_be_bytes());
    if pad {
        buf.push(0);
    }
    buf.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_refuses_short_input() {
        let msg = Writer::new(80)
            .string(b"config")
            .bool(true)
            .u32(7)
            .raw(b"{}")
            .finish();
        let mut r = Reader::new(&msg);
        assert_eq!(r.u8(), Ok(80));
        assert_eq!(r.utf8(), Ok("config"));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.rest(), b"{}");
        assert_eq!(r.u8(), Err(Malformed("byte")));

        // A string whose length runs past the end.
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        assert_eq!(r.string(), Err(Malformed("string")));
    }

    #[test]
    fn name_lists() {
        let mut msg = Vec::new();
        put_string(&mut msg, b"a,b@c");
        put_string(&mut msg, b"");
        let mut r = Reader::new(&msg);
        assert_eq!(r.names().unwrap(), ["a", "b@c"]);
        assert!(r.names().unwrap().is_empty());
    }

    #[test]
    fn mpint_examples_from_rfc_4251() {
        let enc = |m: &[u8]| {
            let mut b = Vec::new();
            put_mpint(&mut b, m);
            b
        };
        assert_eq!(enc(&[0, 0]), [0, 0, 0, 0]);
        assert_eq!(
            enc(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(enc(&[0x00, 0x80]), [0, 0, 0, 2, 0x00, 0x80]);
    }
}
