//! Streaming answers made of one JSON document per line (events, pull progress), read one line
//! at a time: a line longer than the limit is an error, not a growing buffer.

use super::connection::Body;
use super::{snippet, Error};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// An iterator over the items of a streaming answer; it ends with the answer, or after the
/// first error. Dropping it closes the connection.
pub struct JsonLines<T> {
    body: Body,
    line: Vec<u8>,
    limit: usize,
    ended: bool,
    item: PhantomData<T>,
}

impl<T> JsonLines<T> {
    pub(super) fn new(body: Body, limit: usize) -> JsonLines<T> {
        JsonLines {
            body,
            line: Vec::new(),
            limit,
            ended: false,
            item: PhantomData,
        }
    }

    /// "METHOD path on socket", as errors name it.
    pub fn call(&self) -> &str {
        self.body.call()
    }

    /// The next non-blank line into `self.line`; `false` at the end of the answer.
    fn next_line(&mut self) -> Result<bool, Error> {
        self.line.clear();
        loop {
            let chunk = self.body.chunk()?;
            if chunk.is_empty() {
                return Ok(!self.line.trim_ascii().is_empty());
            }
            let (used, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (chunk.len(), false),
            };
            if self.line.len() + used > self.limit {
                return Err(Error::TooLarge {
                    call: self.body.call().to_owned(),
                    limit: self.limit,
                });
            }
            self.line.extend_from_slice(&chunk[..used]);
            self.body.consume(used);
            if complete && !self.line.trim_ascii().is_empty() {
                return Ok(true);
            }
            if complete {
                self.line.clear();
            }
        }
    }
}

impl<T: DeserializeOwned> Iterator for JsonLines<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let item = match self.next_line() {
            Ok(false) => None,
            Ok(true) => Some(
                serde_json::from_slice(&self.line).map_err(|e| Error::Unexpected {
                    call: self.body.call().to_owned(),
                    what: format!("{e} in {}", snippet(&self.line)),
                }),
            ),
            Err(e) => Some(Err(e)),
        };
        self.ended = !matches!(item, Some(Ok(_)));
        item
    }
}
