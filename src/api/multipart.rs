//! `multipart/form-data` bodies (RFC 7578) without I/O and without copying: feed what has
//! arrived, learn how much was used and what it was (a part's head, a piece of its content, its
//! end, the end of the body). Content is handed back as a range of the input; only the bytes
//! that may start a delimiter are held back, so the caller's buffer is all the memory it takes.

use std::fmt;
use std::ops::Range;

/// The most bytes of one part's header lines.
pub const MAX_PART_HEAD: usize = 8 * 1024;
/// The most header fields in one part.
const MAX_PART_HEADERS: usize = 16;
/// RFC 2046's longest boundary.
const MAX_BOUNDARY: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    NotMultipart,
    BadBoundary,
    /// The body does not start with the boundary, or a delimiter is followed by junk.
    Malformed(&'static str),
    PartHeadTooLarge,
    /// The body ended before the closing delimiter.
    Truncated,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotMultipart => f.write_str("request Content-Type isn't multipart/form-data"),
            Error::BadBoundary => f.write_str("no valid boundary in the multipart Content-Type"),
            Error::Malformed(what) => write!(f, "malformed multipart body: {what}"),
            Error::PartHeadTooLarge => write!(
                f,
                "a multipart part's header is longer than {MAX_PART_HEAD} bytes"
            ),
            Error::Truncated => f.write_str("the multipart body ended before its last boundary"),
        }
    }
}

impl std::error::Error for Error {}

/// The boundary of a `multipart/form-data` Content-Type.
pub fn boundary(content_type: &str) -> Result<String, Error> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::NotMultipart);
    }
    let boundary = params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| unquote(value.trim()))
        .ok_or(Error::BadBoundary)?;
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY
        || !boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(Error::BadBoundary);
    }
    Ok(boundary)
}

/// A part's head: the form field's name and, for a file, its file name (Go's `FileName`: the
/// last path element of what the client sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHead {
    pub name: String,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Feed more input (everything up to `consumed` was used).
    More,
    Part(PartHead),
    /// Content of the current part at this range of the input.
    Data(Range<usize>),
    PartEnd,
    /// The closing delimiter: what follows (an epilogue) is not read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter, which may come without a CRLF before it.
    Preamble,
    /// Just after a delimiter: `--` (the end) or optional blanks and CRLF (a part).
    AfterDelimiter,
    Head,
    Content,
    Done,
}

pub struct Parser {
    delimiter: Delimiter,
    state: State,
}

impl Parser {
    pub fn new(boundary: &str) -> Parser {
        Parser {
            delimiter: Delimiter::new(boundary),
            state: State::Preamble,
        }
    }

    /// Reads `input` (the bytes not consumed last time, then new ones); `at_end` when no more
    /// will come. Returns how many bytes were used and what they were.
    pub fn feed(&mut self, input: &[u8], at_end: bool) -> Result<(usize, Event), Error> {
        let d = &self.delimiter.bytes;
        match self.state {
            State::Done => Ok((0, Event::End)),
            State::Preamble => {
                // The first delimiter has no CRLF before it when the body starts with it.
                let bare = &d[2..];
                if input.len() < bare.len() && bare.starts_with(input) && !at_end {
                    return Ok((0, Event::More));
                }
                if input.starts_with(bare) {
                    self.state = State::AfterDelimiter;
                    return Ok((bare.len(), Event::More));
                }
                match self.delimiter.find(input) {
                    Some(at) => {
                        self.state = State::AfterDelimiter;
                        Ok((at + d.len(), Event::More))
                    }
                    None if at_end => Err(Error::Malformed("no boundary")),
                    // Keep what may be the start of a delimiter.
                    None => Ok((input.len() - partial_suffix(input, d), Event::More)),
                }
            }
            State::AfterDelimiter => {
                if input.len() < 2 {
                    return if at_end {
                        Err(Error::Truncated)
                    } else {
                        Ok((0, Event::More))
                    };
                }
                if input.starts_with(b"--") {
                    self.state = State::Done;
                    return Ok((2, Event::End));
                }
                let blanks = input
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count();
                let rest = &input[blanks..];
                if rest.starts_with(b"\r\n") {
                    self.state = State::Head;
                    Ok((blanks + 2, Event::More))
                } else if rest.len() < 2 && blanks < 64 && !at_end {
                    Ok((0, Event::More))
                } else {
                    Err(Error::Malformed("junk after a boundary"))
                }
            }
            State::Head => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
                let scanned = &input[..input.len().min(MAX_PART_HEAD)];
                match httparse::parse_headers(scanned, &mut headers) {
                    Ok(httparse::Status::Complete((len, headers))) => {
                        self.state = State::Content;
                        Ok((len, Event::Part(part_head(headers))))
                    }
                    Ok(httparse::Status::Partial) if scanned.len() >= MAX_PART_HEAD => {
                        Err(Error::PartHeadTooLarge)
                    }
                    Ok(httparse::Status::Partial) if at_end => Err(Error::Truncated),
                    Ok(httparse::Status::Partial) => Ok((0, Event::More)),
                    Err(httparse::Error::TooManyHeaders) => Err(Error::PartHeadTooLarge),
                    Err(_) => Err(Error::Malformed("a part's header")),
                }
            }
            State::Content => Ok(content(input, &self.delimiter, at_end, &mut self.state)?),
        }
    }
}

/// Content up to a delimiter that is one: `\r\n--boundary` followed by `--` or by optional
/// blanks and CRLF (as Go's reader sees it; anything else after it is content).
fn content(
    input: &[u8],
    delimiter: &Delimiter,
    at_end: bool,
    state: &mut State,
) -> Result<(usize, Event), Error> {
    let d = &delimiter.bytes;
    let mut from = 0;
    while let Some(found) = delimiter.find(&input[from..]) {
        let at = from + found;
        match delimiter_tail(&input[at + d.len()..]) {
            Some(true) if at == 0 => {
                *state = State::AfterDelimiter;
                return Ok((d.len(), Event::PartEnd));
            }
            Some(true) => return Ok((at, Event::Data(0..at))),
            Some(false) => from = at + 1,
            // Not known yet: hold it back.
            None if at_end => from = at + 1,
            None if at == 0 => return Ok((0, Event::More)),
            None => return Ok((at, Event::Data(0..at))),
        }
    }
    if at_end {
        return Err(Error::Truncated);
    }
    let safe = input.len() - partial_suffix(&input[from..], d);
    Ok(if safe == 0 {
        (0, Event::More)
    } else {
        (safe, Event::Data(0..safe))
    })
}

/// Whether what follows a delimiter match makes it a delimiter; `None` until enough is seen.
fn delimiter_tail(after: &[u8]) -> Option<bool> {
    if after.starts_with(b"--") {
        return Some(true);
    }
    let blanks = after
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    let rest = &after[blanks..];
    if rest.starts_with(b"\r\n") {
        Some(true)
    } else if blanks > 64 || !(rest.is_empty() || rest == b"\r" || (blanks == 0 && rest == b"-")) {
        Some(false)
    } else {
        None
    }
}

fn part_head(headers: &[httparse::Header<'_>]) -> PartHead {
    let mut head = PartHead::default();
    let Some(disposition) = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Disposition"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
    else {
        return head;
    };
    for param in split_params(disposition).skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match name.trim().to_ascii_lowercase().as_str() {
            "name" => head.name = value,
            "filename" => {
                let base = value.rsplit('/').next().unwrap_or_default().to_owned();
                head.filename = Some(base);
            }
            _ => {}
        }
    }
    head
}

/// `;`-separated parameters, not splitting inside quotes.
fn split_params(text: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    text.split(move |c| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => return true,
            _ => {}
        }
        false
    })
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// `\r\n--boundary` and its Horspool shift table: the search compares a window's last byte
/// first and, unless it is the delimiter's, moves on by up to the delimiter's length (most of
/// an upload's bytes are looked at once in 40 or so) instead of comparing at every byte.
struct Delimiter {
    bytes: Vec<u8>,
    /// How far the window may move on when its last byte is this one (at most 255: a shorter
    /// move than possible is still correct).
    shift: [u8; 256],
}

impl Delimiter {
    fn new(boundary: &str) -> Delimiter {
        let bytes = format!("\r\n--{boundary}").into_bytes();
        let last = bytes.len() - 1;
        let mut shift = [u8::try_from(bytes.len()).unwrap_or(u8::MAX); 256];
        for (i, &b) in bytes[..last].iter().enumerate() {
            shift[usize::from(b)] = u8::try_from(last - i).unwrap_or(u8::MAX);
        }
        Delimiter { bytes, shift }
    }

    /// Where the delimiter first starts in `haystack`.
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        let (&last, head) = self.bytes.split_last()?;
        let mut at = 0;
        while let Some(&end) = haystack.get(at + head.len()) {
            if end == last && haystack[at..at + head.len()] == *head {
                return Some(at);
            }
            at += usize::from(self.shift[usize::from(end)]);
        }
        None
    }
}

/// How many bytes at the end of `input` are a beginning of `delimiter` (and must wait).
fn partial_suffix(input: &[u8], delimiter: &[u8]) -> usize {
    (1..delimiter.len().min(input.len() + 1))
        .rev()
        .find(|&n| input.ends_with(&delimiter[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes through a buffer, as the agent does, and returns
    /// each part's head and content.
    fn parse(boundary: &str, body: &[u8], step: usize) -> Result<Vec<(PartHead, Vec<u8>)>, Error> {
        let mut parser = Parser::new(boundary);
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
        loop {
            let at_end = fed == body.len();
            let (used, event) = parser.feed(&buf, at_end)?;
            match event {
                Event::More if used == 0 => {
                    assert!(!at_end, "asks for more at the end");
                    let n = step.min(body.len() - fed);
                    buf.extend_from_slice(&body[fed..fed + n]);
                    fed += n;
                }
                Event::More | Event::PartEnd => {}
                Event::Part(head) => parts.push((head, Vec::new())),
                Event::Data(range) => parts.last_mut().unwrap().1.extend_from_slice(&buf[range]),
                Event::End => return Ok(parts),
            }
            buf.drain(..used);
        }
    }

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/a;b.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nline 1\r\n--XyZnot yet\r\n--Xy\r\n--XyZ\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n/dir\r\n--XyZ--\r\nepilogue";

    #[test]
    fn parts_come_out_whole_at_every_split() {
        for step in [1, 2, 3, 7, 64, 4096] {
            let parts = parse("XyZ", BODY, step).unwrap();
            assert_eq!(parts.len(), 2, "step {step}");
            assert_eq!(parts[0].0.name, "file");
            assert_eq!(parts[0].0.filename.as_deref(), Some("a;b.txt"));
            assert_eq!(parts[0].1, b"line 1\r\n--XyZnot yet\r\n--Xy");
            assert_eq!(
                parts[1].0,
                PartHead {
                    name: "Path".into(),
                    filename: None
                }
            );
            assert_eq!(parts[1].1, b"/dir");
        }
    }

    #[test]
    fn a_preamble_and_empty_parts_are_fine() {
        let body = b"ignored\r\n--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--b--";
        let parts = parse("b", body, 5).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0.name, "x");
        assert!(parts[0].1.is_empty());
    }

    #[test]
    fn broken_bodies_are_errors() {
        assert_eq!(
            parse("b", b"--b\r\nX: y\r\n\r\ndata", 3),
            Err(Error::Truncated)
        );
        assert_eq!(
            parse("b", b"no boundary at all", 3),
            Err(Error::Malformed("no boundary"))
        );
        assert_eq!(
            parse("b", b"--bjunk", 3),
            Err(Error::Malformed("junk after a boundary"))
        );
        let huge = format!("--b\r\nX: {}\r\n\r\n--b--", "a".repeat(MAX_PART_HEAD));
        assert_eq!(
            parse("b", huge.as_bytes(), 1000),
            Err(Error::PartHeadTooLarge)
        );
    }

    /// The byte-by-byte search the shift table replaced: the reference for the fast one.
    fn find_at_every_byte(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// Bytes from a small alphabet that makes near-matches of `\r\n--ab-ab` common.
    fn noise(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn the_shift_table_search_finds_what_comparing_at_every_byte_finds() {
        for boundary in ["a", "ab-ab", "--", &"x".repeat(70)] {
            let delimiter = Delimiter::new(boundary);
            for seed in 0..2000 {
                let hay = noise(seed, (seed % 97) as usize, b"\r\n-abx");
                assert_eq!(
                    delimiter.find(&hay),
                    find_at_every_byte(&hay, &delimiter.bytes),
                    "boundary {boundary:?} in {:?}",
                    String::from_utf8_lossy(&hay)
                );
            }
        }
    }

    #[test]
    fn a_long_boundary_split_across_reads_amid_near_misses() {
        let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let mut content = noise(7, 20_000, b"\r\n-WebKitFormBoundary7MA4x\0\xff");
        // Near misses: the delimiter cut short, or followed by junk (then it is content).
        content.extend_from_slice(b"\r\n------WebKitFormBoundary7MA4YWxkTrZu0g\r\n");
        content.extend_from_slice(b"\r\n------WebKitFormBoundary7MA4YWxkTrZu0gWjunk");
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        for step in [1, 5, 39, 40, 41, 1000, 4096, 65536] {
            let parts = parse(boundary, &body, step).unwrap();
            assert_eq!(parts.len(), 1, "step {step}");
            assert!(parts[0].1 == content, "step {step}: the content differs");
        }
    }

    /// The speed of the shift table search against comparing at every byte, over a 64 MiB
    /// upload of random bytes with a browser's boundary. Run:
    /// `cargo test --release --lib multipart -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints the speed ratio"]
    fn search_speed_against_comparing_at_every_byte() {
        let delimiter = Delimiter::new("----WebKitFormBoundary7MA4YWxkTrZu0gW");
        let all: Vec<u8> = (0..=255).collect();
        let data = noise(42, 64 << 20, &all);
        let time = |search: &dyn Fn(&[u8]) -> Option<usize>| {
            let start = std::time::Instant::now();
            for chunk in data.chunks(64 * 1024) {
                assert_eq!(std::hint::black_box(search(chunk)), None);
            }
            start.elapsed()
        };
        let every_byte = time(&|h| find_at_every_byte(h, &delimiter.bytes));
        let shift_table = time(&|h| delimiter.find(h));
        let mb_s = |t: std::time::Duration| data.len() as f64 / 1e6 / t.as_secs_f64();
        println!(
            "multipart delimiter search over 64 MiB: every byte {:.0} MB/s, shift table {:.0} MB/s: {:.1}x",
            mb_s(every_byte),
            mb_s(shift_table),
            every_byte.as_secs_f64() / shift_table.as_secs_f64()
        );
    }

    #[test]
    fn boundaries_from_content_types() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4").unwrap(),
            "----WebKitFormBoundary7MA4"
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"").unwrap(),
            "a b"
        );
        assert_eq!(boundary("application/json"), Err(Error::NotMultipart));
        assert_eq!(boundary("multipart/form-data"), Err(Error::BadBoundary));
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        assert_eq!(boundary(&long), Err(Error::BadBoundary));
    }
}
