//! The agent's state file as `src/state.rs` writes it (`edge-agent-state 2 <crc32> <length>`,
//! then the JSON body), read and written independently of the agent's code; and the
//! pseudo-random moments of the kill tests.

/// CRC-32 (IEEE), as the state file's header carries it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

pub fn encode(body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let mut file = format!(
        "edge-agent-state 2 {:08x} {}\n",
        crc32(body.as_bytes()),
        body.len()
    )
    .into_bytes();
    file.extend_from_slice(body.as_bytes());
    file
}

/// The state a file's bytes hold, or why they are not one.
pub fn decode(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or("no header")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|e| e.to_string())?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let ["edge-agent-state", "2", crc, len] = fields[..] else {
        return Err(format!("header {header:?}"));
    };
    if len.parse::<usize>().ok() != Some(body.len()) {
        return Err(format!("length {len} for {} bytes", body.len()));
    }
    if u32::from_str_radix(crc, 16).ok() != Some(crc32(body)) {
        return Err("checksum".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// xorshift64*, seeded from the clock (the seed is printed).
pub struct Random(pub u64);

impl Random {
    /// Seeded from the clock; print `.0` so that a failure can be replayed.
    pub fn from_clock() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Random(nanos | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
