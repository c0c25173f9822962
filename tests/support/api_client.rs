//! Portainer's side of the agent API, for tests and benches: requests signed as Portainer's Go
//! code signs them (`api/crypto/ecdsa.go`: ECDSA P-256 over the MD5 of "Portainer-App" or the
//! secret, RawStd base64 `r || s`, the key as hex PKIX), sent through the tunnel's reverse port
//! like Portainer's HTTP client does, and plain readers for the answers.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// DER SubjectPublicKeyInfo of a P-256 key, up to the point.
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A Portainer instance's key pair and the signature it puts on every request.
#[derive(Clone)]
pub struct Signer {
    pub key: String,
    pub signature: String,
}

impl Signer {
    /// Portainer with the key from `seed`, signing `message` ("Portainer-App" or the secret).
    pub fn new(seed: u8, message: &str) -> Signer {
        let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point.as_bytes());
        let signature: Signature = signing
            .sign_prehash(&Md5::digest(message.as_bytes()))
            .unwrap();
        Signer {
            key: spki.iter().map(|b| format!("{b:02x}")).collect(),
            signature: STANDARD_NO_PAD.encode(signature.to_bytes()),
        }
    }

    pub fn headers(&self) -> String {
        format!(
            "X-PortainerAgent-PublicKey: {}\r\nX-PortainerAgent-Signature: {}\r\n",
            self.key, self.signature
        )
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A `multipart/form-data` body as the UI's ng-file-upload sends it: the file first, then
/// `Path`.
pub fn upload_body(filename: &str, content: &[u8], path: &str) -> (String, Vec<u8>) {
    let boundary = "----edgeAgentTestBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n{path}\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    (
        format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        body,
    )
}

/// A connection kept alive across requests: to the tunnel's reverse port, as Portainer, or
/// straight to the Docker socket, for comparison.
pub struct Connection {
    pub reader: BufReader<Box<dyn Read + Send>>,
    pub writer: Box<dyn Write + Send>,
}

impl Connection {
    pub fn open(port: u16) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Connection {
            writer: Box::new(stream.try_clone().unwrap()),
            reader: BufReader::new(Box::new(stream)),
        }
    }

    pub fn open_unix(socket: &std::path::Path) -> Connection {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Connection {
            writer: Box::new(stream.try_clone().unwrap()),
            reader: BufReader::new(Box::new(stream)),
        }
    }

    /// Sends a request: `signer`'s headers (when given), `extra` header lines, and `body`.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        signer: Option<&Signer>,
        extra: &str,
        body: &[u8],
    ) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\n"
        );
        if let Some(signer) = signer {
            head.push_str(&signer.headers());
        }
        head.push_str(extra);
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
    }

    /// Reads an answer head.
    pub fn head(&mut self) -> (u16, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed after {head:?}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head)
    }

    /// Reads a whole answer (Content-Length, chunked, or no body).
    pub fn answer(&mut self, method: &str) -> Answer {
        let (status, head) = self.head();
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        if method == "HEAD" || status == 204 || status == 304 || status == 101 {
            return answer;
        }
        if answer
            .header("Transfer-Encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                answer.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = answer.header("Content-Length") {
            let mut body = vec![0u8; length.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            answer.body = body;
        } else {
            self.reader.read_to_end(&mut answer.body).unwrap();
        }
        answer
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        signer: Option<&Signer>,
        body: &[u8],
    ) -> Answer {
        self.send(method, path, signer, "", body);
        self.answer(method)
    }
}
