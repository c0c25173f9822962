//! The fuzz targets' bodies (fuzz/fuzz_targets/ calls one each), built only under cargo-fuzz's
//! `cfg(fuzzing)`. Each feeds arbitrary bytes to a pure parser and checks what must hold for
//! any input: no panic, no unbounded allocation (fuzz/src/lib.rs's allocation limit and
//! libFuzzer's RSS limit), and where we both encode and decode a format, decode(encode(x)) == x.

use crate::api::signature::{Verdict, Verifier};
use crate::api::{boundary, MultipartEvent, MultipartParser};
use crate::compose::{self, Source};
use crate::config::{duration, edge_key::EdgeKey, parse_env_file};
use crate::docker::ApiVersion;
use crate::http1::{self, ChunkedDecoder, Framing};
use crate::jobs::{parse_cron, tz, Civil, CronSpec};
use crate::portainer::poll_response::PollResponse;
use crate::stacks::StackPayload;
use crate::state::{self, Persisted, Store};
use crate::tunnel::{negotiate, Algorithm, Cipher, Reader, SshClient, SshEvent, Writer};
use crate::websocket::{self, Control, Decoder, Encoder, Role};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The bytes before the first `sep` and after it (all and nothing without one).
fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Piece sizes (1..=256) to cut a stream into, taken from the first byte: readers get bytes
/// in arbitrary pieces, and the result must not depend on them.
fn piece(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (usize::from(*first) + 1, rest),
        None => (1, data),
    }
}

pub fn edge_key(data: &[u8]) {
    let _ = EdgeKey::decode(&text(data));
}

pub fn env_file(data: &[u8]) {
    let _ = parse_env_file(&text(data));
}

/// Whatever parses displays as something that parses back to it (to the millisecond, which is
/// all `display` shows).
pub fn duration(data: &[u8]) {
    let Ok(d) = duration::parse(&text(data)) else {
        return;
    };
    let shown = duration::display(d);
    let again = duration::parse(&shown).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
    let millis = std::time::Duration::new(d.as_secs(), d.subsec_millis() * 1_000_000);
    assert_eq!(again, millis, "{shown:?}");
}

pub fn poll_response(data: &[u8]) {
    if let Ok(poll) = PollResponse::parse(data) {
        let _ = poll.checkin_interval();
    }
}

pub fn stack_payload(data: &[u8]) {
    if let Ok(payload) = StackPayload::parse(data) {
        let _ = payload.files_hash();
    }
}

/// A response head, its framing for a GET and a HEAD, and a chunked body after it.
pub fn http_response(data: &[u8]) {
    let (step, data) = piece(data);
    let Ok(Some(head)) = http1::parse_response_head(data, 16 * 1024) else {
        return;
    };
    for method in ["GET", "HEAD"] {
        if let Ok(Framing::Chunked) = http1::framing(method, &head) {
            dechunk(&data[head.len..], step);
        }
    }
}

/// A request head, and its body when chunked.
pub fn http_request(data: &[u8]) {
    let (step, data) = piece(data);
    let Ok(Some(head)) = http1::parse_request_head(data, 16 * 1024) else {
        return;
    };
    let _ = (head.path(), head.query_decoded("path"));
    if let Ok(Framing::Chunked) = head.body() {
        dechunk(&data[head.len..], step);
    }
}

/// Decodes a chunked body fed in pieces of `step`, as a reader does; the body and where it
/// ends are the same as when fed whole.
fn dechunk(input: &[u8], step: usize) -> Option<(Vec<u8>, usize)> {
    let whole = dechunk_in_pieces(input, input.len().max(1));
    let pieces = dechunk_in_pieces(input, step);
    assert_eq!(whole, pieces, "pieces of {step}");
    whole
}

/// The body and the bytes used, or `None` on an error or when the input ends early.
fn dechunk_in_pieces(input: &[u8], step: usize) -> Option<(Vec<u8>, usize)> {
    let mut decoder = ChunkedDecoder::default();
    let (mut body, mut pending, mut fed, mut used) = (Vec::new(), Vec::new(), 0, 0);
    loop {
        let take = step.min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + take]);
        fed += take;
        loop {
            let step = decoder.decode(&pending).ok()?;
            assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
            assert!(step.consumed <= pending.len());
            body.extend_from_slice(&pending[step.data.clone()]);
            pending.drain(..step.consumed);
            used += step.consumed;
            if decoder.is_done() {
                return Some((body, used));
            }
            if step.consumed == 0 || pending.is_empty() {
                break;
            }
        }
        if fed == input.len() {
            return None;
        }
    }
}

/// Chunked encoding of arbitrary data in arbitrary chunk sizes decodes back to the data.
pub fn chunked_round_trip(data: &[u8]) {
    let (step, data) = piece(data);
    let mut encoded = Vec::new();
    for chunk in data.chunks(step) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\nNEXT");
    let (body, used) = dechunk(&encoded, step).expect("a well-formed chunked body");
    assert_eq!(body, data);
    assert_eq!(
        used,
        encoded.len() - 4,
        "the bytes after the body are not ours"
    );
}

/// Request heads we write read back the same (with as many headers as we read).
pub fn http_request_round_trip(data: &[u8]) {
    let data = text(data);
    let mut lines = data.split('\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .take(http1::MAX_HEADERS)
        .collect();
    let mut out = Vec::new();
    if http1::write_request_head(&mut out, method, target, &headers, None).is_err() {
        return;
    }
    let head = match http1::parse_request_head(&out, out.len()) {
        Ok(Some(head)) => head,
        other => panic!("{:?} does not read back: {other:?}", text(&out)),
    };
    assert_eq!(
        (head.method.as_str(), head.target.as_str()),
        (method, target)
    );
    assert_eq!(head.len, out.len());
    let read: Vec<(&str, &str)> = head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let trimmed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (*n, v.trim_matches([' ', '\t'])))
        .collect();
    assert_eq!(read, trimmed);
}

/// A server's frames, as the agent's tunnel reads them.
pub fn websocket_client(data: &[u8]) {
    websocket_decode(data, Role::Client);
}

/// A client's frames, as a server end reads them.
pub fn websocket_server(data: &[u8]) {
    websocket_decode(data, Role::Server);
}

/// The peer's frames, as a `role` end reads them, fed in pieces.
fn websocket_decode(data: &[u8], role: Role) {
    let (step, data) = piece(data);
    let mut decoder = Decoder::new(role);
    let mut received = Vec::new();
    for chunk in data.chunks(step) {
        if decoder.decode(chunk, &mut received).is_err() {
            return;
        }
        assert!(received.len() <= data.len());
    }
}

/// Frames one end encodes (opcode and length from the input) the other end decodes, fed in
/// pieces: the same data, pings and closes in order.
pub fn websocket_round_trip(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let (sender, receiver) = if first & 1 == 0 {
        (Role::Client, Role::Server)
    } else {
        (Role::Server, Role::Client)
    };
    let step = usize::from(first >> 1) + 1;
    let mut encoder = Encoder::new(sender);
    let (mut wire, mut sent, mut controls) = (Vec::new(), Vec::new(), Vec::new());
    while let Some((&kind, tail)) = rest.split_first() {
        // Up to 127 KB: all three length encodings (control frames stay within 125 bytes).
        let len = (usize::from(kind >> 2).pow(2) * 32).min(tail.len());
        let len = if kind & 2 == 0 { len } else { len.min(125) };
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let encoded = match kind & 3 {
            0 | 1 => {
                sent.extend_from_slice(payload);
                let opcode = [websocket::OP_BINARY, websocket::OP_TEXT][usize::from(kind & 1)];
                encoder.frame(opcode, payload, &mut wire)
            }
            2 => {
                controls.push(Control::Ping(payload.to_vec()));
                encoder.frame(websocket::OP_PING, payload, &mut wire)
            }
            _ => encoder.pong(payload, &mut wire),
        };
        encoded.expect("frames encode");
    }
    encoder.close(&mut wire).expect("a close frame encodes");
    controls.push(Control::Close);
    let mut decoder = Decoder::new(receiver);
    let (mut received, mut got) = (Vec::new(), Vec::new());
    for chunk in wire.chunks(step) {
        got.extend(
            decoder
                .decode(chunk, &mut received)
                .expect("our frames decode"),
        );
    }
    assert_eq!(received, sent);
    assert_eq!(got, controls);
}

const FUZZ_KEY: [u8; 64] = [0x5a; 64];
const FUZZ_IV: [u8; 12] = [0xa5; 12];

fn algorithm(selector: u8) -> Algorithm {
    Algorithm::preferred()[usize::from(selector) % 3]
}

fn keyed(algorithm: Algorithm) -> Cipher {
    Cipher::new(
        algorithm,
        &FUZZ_KEY[..algorithm.key_len()],
        &FUZZ_IV[..algorithm.iv_len()],
    )
}

/// SSH messages a server sends once keys are set (fixed test keys): each payload, 2-byte
/// length first, is sealed and fed to a client, in pieces; the client echoes channel data.
/// Channels open and close in pairs, never more at once than allowed.
pub fn ssh_client(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let algorithm = algorithm(first);
    let step = usize::from(first >> 2) * 4 + 1;
    let mut seal = keyed(algorithm);
    let mut wire = Vec::new();
    let mut sequence = 0u32;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let payload = &rest[2..2 + len];
        rest = &rest[2 + len..];
        seal.seal(sequence, payload, &mut wire);
        sequence = sequence.wrapping_add(1);
    }
    let max_channels = 4;
    let mut client = SshClient::keyed(keyed(algorithm), b"{}".to_vec(), max_channels);
    let mut open = HashSet::new();
    for chunk in wire.chunks(step) {
        if client.feed(chunk).is_err() {
            return;
        }
        while let Some(event) = client.next_event() {
            match event {
                SshEvent::Opened { id, .. } => assert!(open.insert(id), "channel {id} twice"),
                SshEvent::Closed { id } => assert!(open.remove(&id), "channel {id} not open"),
                SshEvent::Data { id, data } => {
                    client.consumed(id, data.len() as u32);
                    client.send_data(id, &data);
                }
                SshEvent::Eof { id } => client.close(id),
                _ => {}
            }
        }
        assert!(open.len() <= max_channels);
        client.output().clear();
    }
}

/// A server's KEXINIT, negotiated against ours.
pub fn ssh_kexinit(data: &[u8]) {
    let _ = negotiate(data);
}

/// Packets sealed with the fixed test keys open to the same payloads, whichever the cipher;
/// arbitrary bytes as packets are refused, not a panic.
pub fn ssh_packet(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let algorithm = algorithm(first);
    let mut open = keyed(algorithm);
    let mut wire = rest.to_vec();
    let mut at = 0;
    let mut sequence = 0;
    while wire.len() - at >= 4 {
        let head = [wire[at], wire[at + 1], wire[at + 2], wire[at + 3]];
        let Ok(size) = open.packet_size(sequence, head) else {
            break;
        };
        if wire.len() - at < size || open.open(sequence, &mut wire[at..at + size]).is_err() {
            break;
        }
        at += size;
        sequence += 1;
    }
    let (mut seal, mut open) = (keyed(algorithm), keyed(algorithm));
    let payloads: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let mut wire = Vec::new();
    for (sequence, payload) in (0..).zip(&payloads) {
        seal.seal(sequence, payload, &mut wire);
    }
    let mut at = 0;
    for (sequence, payload) in (0..).zip(&payloads) {
        let head = [wire[at], wire[at + 1], wire[at + 2], wire[at + 3]];
        let size = open.packet_size(sequence, head).expect("our length");
        let opened = open
            .open(sequence, &mut wire[at..at + size])
            .expect("our packet");
        assert_eq!(opened, *payload);
        at += size;
    }
    assert_eq!(at, wire.len());
}

/// SSH wire types: what a Writer writes, a Reader reads back; arbitrary bytes read field by
/// field end in an error, not a panic.
pub fn ssh_wire(data: &[u8]) {
    let mut r = Reader::new(data);
    while let Ok(kind) = r.u8() {
        let read = match kind % 4 {
            0 => r.u32().is_ok(),
            1 => r.string().is_ok(),
            2 => r.names().is_ok(),
            _ => r.bool().is_ok(),
        };
        if !read {
            break;
        }
    }
    let fields: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let mut w = Writer::new(data.len() as u8);
    for field in &fields {
        w = w
            .string(field)
            .u32(field.len() as u32)
            .bool(field.is_empty());
    }
    let message = w.finish();
    let mut r = Reader::new(&message);
    assert_eq!(r.u8(), Ok(data.len() as u8));
    for field in &fields {
        assert_eq!(r.string(), Ok(*field));
        assert_eq!(r.u32(), Ok(field.len() as u32));
        assert_eq!(r.bool(), Ok(field.is_empty()));
    }
    assert!(r.rest().is_empty());
}

/// The signature headers: public key, newline, signature.
pub fn signature(data: &[u8]) {
    static PERSISTED: OnceLock<Arc<Persisted>> = OnceLock::new();
    let persisted = PERSISTED.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edge-agent-fuzz-{}", std::process::id()));
        let (store, state) = Store::open(&dir).expect("a state folder in the temporary folder");
        Arc::new(Persisted::new(store, state))
    });
    let (key, signature) = split(data, b'\n');
    let (key, signature) = (text(key), text(signature));
    let verifier = Verifier::new(None, persisted.clone());
    if verifier.check(Some(&key), Some(&signature)) == Verdict::Valid {
        persisted
            .update(|s| s.server_key = None)
            .expect("the state saves");
    }
}

/// A compose file, then after a NUL byte the project's `.env`, through the whole load
/// pipeline; a project that loads gives Engine request bodies and `config` YAML that parses.
pub fn compose(data: &[u8]) {
    let (file, dotenv) = split(data, 0);
    let (file, dotenv) = (text(file), text(dotenv));
    let source = Source {
        working_dir: PathBuf::from("/fuzz/demo"),
        files: vec![PathBuf::from("compose.yaml")],
        project_name: String::new(),
        environment: BTreeMap::from([("HOME".into(), "/root".into()), ("TAG".into(), "1".into())]),
        env_file: None,
    };
    let read = |path: &Path| -> Result<Option<String>, String> {
        Ok(match path.file_name().and_then(|n| n.to_str()) {
            Some("compose.yaml") => Some(file.clone()),
            Some(".env") if !dotenv.is_empty() => Some(dotenv.clone()),
            _ => None,
        })
    };
    let Ok(project) = compose::load_with(&source, &read) else {
        return;
    };
    let api = ApiVersion {
        major: 1,
        minor: 41,
    };
    for (key, service) in &project.services {
        for number in 1..=service.scale.min(2) {
            compose::container_body(&project, key, number, "sha256:fuzz", api);
        }
    }
    for key in project.networks.keys() {
        compose::network_body(&project, key);
    }
    let yaml = compose::to_yaml(&serde_json::json!(project));
    if let Err(e) = compose::parse_yaml(&yaml) {
        panic!("`config` output does not parse ({e}):\n{yaml}");
    }
}

pub fn dotenv(data: &[u8]) {
    let env = |name: &str| (name == "HOME").then(|| "/root".to_owned());
    let _ = compose::parse_dotenv(&text(data), &env);
}

/// A cron expression, then after a newline a local minute to match it against.
pub fn cron(data: &[u8]) {
    let (expression, minute) = split(data, b'\n');
    let Ok(CronSpec::Cron(fields)) = parse_cron(&text(expression)) else {
        return;
    };
    let minute = minute
        .iter()
        .fold(0i64, |m, b| m.wrapping_mul(256) | i64::from(*b));
    // Within ±100,000 years: the clock's range, with room.
    let minute = minute % (100_000 * 366 * 1440);
    let _ = (
        fields.matches(&Civil::from_local_minute(minute)),
        fields.is_wildcard(),
    );
}

/// A TZif file (or a POSIX TZ rule, when it is not one) and the offsets it gives around now.
pub fn tz_file(data: &[u8]) {
    let zone = match tz::parse_tzif(data, "fuzz") {
        Ok(zone) => zone,
        Err(_) => match tz::Zone::load(
            Some(&text(data)),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        ) {
            Ok(zone) => zone,
            Err(_) => return,
        },
    };
    // 1900 to 2200, in steps of about a month.
    for t in (-2_208_988_800i64..7_258_118_400).step_by(2_629_800) {
        let _ = zone.local_minute(t);
    }
}

/// A Content-Type header, a newline, then a body fed in pieces as the agent API does.
pub fn multipart(data: &[u8]) {
    let (step, data) = piece(data);
    let (content_type, body) = split(data, b'\n');
    let Ok(boundary) = boundary(&text(content_type)) else {
        return;
    };
    let mut parser = MultipartParser::new(&boundary);
    let (mut buf, mut fed, mut data_bytes) = (Vec::new(), 0, 0);
    loop {
        let at_end = fed == body.len();
        let Ok((used, event)) = parser.feed(&buf, at_end) else {
            return;
        };
        assert!(used <= buf.len());
        match event {
            MultipartEvent::More if used == 0 => {
                assert!(!at_end, "asks for more at the end");
                let n = step.min(body.len() - fed);
                buf.extend_from_slice(&body[fed..fed + n]);
                fed += n;
            }
            MultipartEvent::Data(range) => {
                assert!(range.end <= used, "data past what it used");
                data_bytes += range.len();
            }
            MultipartEvent::End => break,
            _ => {}
        }
        assert!(data_bytes <= body.len());
        // The parser keeps no more than a part head in the buffer.
        assert!(buf.len() <= 16 * 1024 + step);
        buf.drain(..used);
    }
}

/// The state file: its bytes as read from disk (first byte 0), or a JSON body under a valid
/// header (so the fuzzer gets past the checksum); whatever decodes encodes to a file that
/// decodes to the same state.
pub fn state_file(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode == 0 {
        rest.to_vec()
    } else {
        let mut bytes = format!(
            "edge-agent-state 2 {:08x} {}\n",
            state::crc32(rest),
            rest.len()
        )
        .into_bytes();
        bytes.extend_from_slice(rest);
        bytes
    };
    let Ok(decoded) = state::decode(&bytes) else {
        return;
    };
    let encoded = state::encode(&decoded).expect("a state encodes");
    assert_eq!(state::decode(&encoded), Ok(decoded));
}
