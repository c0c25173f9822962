//! The agent's only persistent file, in `DATA_PATH`: edge key, Edge ID, endpoint id, the pinned
//! Portainer public key, deployed edge stacks and job versions.
//!
//! Format: one header line `edge-agent-state <format> <crc32 hex> <length>` and a JSON body of
//! exactly that length. A write goes to a temporary file that is fsynced, the current file becomes
//! the backup, the temporary file is renamed over it and the folder is fsynced. A file whose
//! checksum or length does not match is refused and the backup used instead, with a log line.
//! Nothing is written when nothing changed (flash wear).

use crate::portainer::stack_status::Status;
use crate::system::durable::{self, Disk};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub const FILE_NAME: &str = "edge-agent.state";
/// 2: stacks are records (format 1 had id → version, still read). An older agent refuses a
/// newer format instead of starting afresh with a new Edge ID.
const FORMAT: u32 = 2;
const MAGIC: &str = "edge-agent-state";
/// A state file is a few hundred bytes; anything this large is not ours.
const MAX_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The Edge key text as configured.
    pub edge_key: Option<String>,
    pub edge_id: Option<String>,
    /// The endpoint id in use: from the key, or learned through the global-key route.
    pub endpoint_id: Option<i64>,
    /// Portainer's public key (hex SubjectPublicKeyInfo) once pinned.
    pub server_key: Option<String>,
    /// Edge stacks this agent has taken on, by id.
    #[serde(deserialize_with = "stack_records")]
    pub stacks: BTreeMap<i64, StackRecord>,
    /// Scheduled edge jobs: id → version and cron expression.
    pub jobs: BTreeMap<i64, JobRecord>,
}

/// An edge job as scheduled; its script is in `DATA_PATH/jobs/<id>/script`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    pub version: i64,
    pub expression: String,
}

/// `{"version": n, "expression": "..."}`, or the version alone as earlier files held it. A
/// visitor: `#[serde(untagged)]` would buffer the value through serde's `Content`, more code.
impl<'de> Deserialize<'de> for JobRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JobRecord, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JobRecord;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job version or {version, expression}")
            }
            fn visit_i64<E: serde::de::Error>(self, version: i64) -> Result<JobRecord, E> {
                Ok(JobRecord {
                    version,
                    expression: String::new(),
                })
            }
            fn visit_u64<E: serde::de::Error>(self, version: u64) -> Result<JobRecord, E> {
                let version = i64::try_from(version).map_err(E::custom)?;
                self.visit_i64(version)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JobRecord, A::Error> {
                let mut record = JobRecord {
                    version: 0,
                    expression: String::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "version" => record.version = map.next_value()?,
                        "expression" => record.expression = map.next_value()?,
                        _ => map.next_value::<serde::de::IgnoredAny>().map(drop)?,
                    }
                }
                Ok(record)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What the agent did with one edge stack, written on transitions only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StackRecord {
    /// The version from the poll that the rest of the record is about.
    pub version: i64,
    /// The stack's name in Portainer.
    pub name: String,
    /// The compose project deployed for it (`edge_<name>` normalised); empty until one was.
    pub project: String,
    /// The compose file, relative to the stack folder.
    pub entry_file: String,
    /// A hash of the files written for `version`; empty when its payload was refused.
    pub files_hash: String,
    /// The last status decided for `version`, and its error text.
    pub status: Option<Status>,
    pub error: String,
    /// The last status Portainer accepted.
    pub sent: Option<Status>,
}

/// Format 1 stored `id → version`: such a stack is known by version only (deployed again).
fn stack_records<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<i64, StackRecord>, D::Error> {
    let raw = BTreeMap::<i64, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(id, value)| {
            let record = match value.as_i64() {
                Some(version) => StackRecord {
                    version,
                    ..StackRecord::default()
                },
                None => serde_json::from_value(value).map_err(serde::de::Error::custom)?,
            };
            Ok((id, record))
        })
        .collect()
}

#[derive(Debug)]
pub enum Error {
    Dir(PathBuf, io::Error),
    NotWritable(PathBuf, nix::Error),
    Read(PathBuf, io::Error),
    Write(PathBuf, io::Error),
    NewerFormat(PathBuf, u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dir(path, e) => write!(
                f,
                "cannot create DATA_PATH {}: {e}; create it or point DATA_PATH to a writable folder",
                path.display()
            ),
            Error::NotWritable(path, e) => write!(
                f,
                "DATA_PATH {} is not writable ({e}); the agent must be able to save its state there",
                path.display()
            ),
            Error::Read(path, e) => write!(f, "cannot read state file {}: {e}", path.display()),
            Error::Write(path, e) => write!(f, "cannot save state file {}: {e}", path.display()),
            Error::NewerFormat(path, v) => write!(
                f,
                "state file {} has format {v}, newer than this edge-agent understands ({FORMAT}); run the newer edge-agent or move the file away",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Why a copy of the state could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    Missing,
    Corrupt(&'static str),
    NewerFormat(u32),
}

pub struct Store {
    path: PathBuf,
    backup: PathBuf,
    /// What is on disk, to skip writes that change nothing.
    saved: State,
}

impl Store {
    /// Opens the state in `dir`, creating the folder. Returns the store and the state it holds
    /// (default when this is the first boot). Logs when the backup had to be used.
    pub fn open(dir: &Path) -> Result<(Store, State), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Dir(dir.to_owned(), e))?;
        nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|e| Error::NotWritable(dir.to_owned(), e))?;
        let path = dir.join(FILE_NAME);
        let store = Store {
            backup: dir.join(format!("{FILE_NAME}.bak")),
            path,
            saved: State::default(),
        };
        let state = store.read_best()?;
        Ok((
            Store {
                saved: state.clone(),
                ..store
            },
            state,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state without creating anything (for `edge-agent check`).
    pub fn peek(dir: &Path) -> Result<State, Error> {
        let store = Store {
            path: dir.join(FILE_NAME),
            backup: dir.join(format!("{FILE_NAME}.bak")),
            saved: State::default(),
        };
        store.read_best()
    }

    fn read_best(&self) -> Result<State, Error> {
        let main_damage = match read_copy(&self.path)? {
            Ok(state) => return Ok(state),
            Err(damage) => damage,
        };
        if let Damage::NewerFormat(v) = main_damage {
            return Err(Error::NewerFormat(self.path.clone(), v));
        }
        match read_copy(&self.backup)? {
            Ok(state) => {
                log::warn!(
                    "state file {} is {}; using the last good copy {}",
                    self.path.display(),
                    describe(&main_damage),
                    self.backup.display()
                );
                Ok(state)
            }
            Err(Damage::Missing) if main_damage == Damage::Missing => Ok(State::default()),
            Err(backup_damage) => {
                log::error!(
                    "state file {} is {} and its backup {} is {}: starting with an empty state (a new Edge ID is generated unless EDGE_ID is set)",
                    self.path.display(),
                    describe(&main_damage),
                    self.backup.display(),
                    describe(&backup_damage)
                );
                Ok(State::default())
            }
        }
    }

    /// Persists `state` if it differs from what is on disk.
    pub fn save(&mut self, state: &State) -> Result<(), Error> {
        self.save_on(&mut durable::Real::default(), state)
    }

    fn save_on(&mut self, disk: &mut impl Disk, state: &State) -> Result<(), Error> {
        if *state == self.saved {
            return Ok(());
        }
        let bytes =
            encode(state).map_err(|e| Error::Write(self.path.clone(), io::Error::other(e)))?;
        // A cut between the renames leaves the previous state as the backup: still good.
        durable::replace_keeping(disk, &self.path, Some(&self.backup), &bytes, 0o600)
            .map_err(|e| Error::Write(self.path.clone(), e))?;
        self.saved = state.clone();
        Ok(())
    }
}

/// The state and its file together, shared by the poll loop and the agent API: every change is
/// made under one lock and saved whole, so no writer overwrites another's change.
pub struct Persisted {
    inner: Mutex<(Store, State)>,
}

impl Persisted {
    pub fn new(store: Store, state: State) -> Persisted {
        Persisted {
            inner: Mutex::new((store, state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Store, State)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().1)
    }

    /// Changes the state and saves it. When saving fails the change stays in memory and is
    /// saved with the next one.
    pub fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), Error> {
        let mut guard = self.lock();
        let (store, state) = &mut *guard;
        f(state);
        store.save(state)
    }

    /// Holds the lock until the process exits, so no write is cut in half by the exit.
    pub fn freeze(&self) -> MutexGuard<'_, (Store, State)> {
        self.lock()
    }
}

fn describe(damage: &Damage) -> String {
    match damage {
        Damage::Missing => "missing".into(),
        Damage::Corrupt(why) => format!("damaged ({why})"),
        Damage::NewerFormat(v) => format!("in a newer format ({v})"),
    }
}

/// Reads one copy. I/O errors other than "not found" are fatal: an unreadable file must not be
/// mistaken for a missing one and silently replaced.
fn read_copy(path: &Path) -> Result<Result<State, Damage>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(Damage::Missing)),
        Err(e) => return Err(Error::Read(path.to_owned(), e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Read(path.to_owned(), e))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Ok(Err(Damage::Corrupt("too large")));
    }
    Ok(decode(&bytes))
}

/// The file's bytes for `state`: a header line (magic, format, CRC-32 and length of the body),
/// then the JSON body.
pub fn encode(state: &State) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec(state)?;
    let mut bytes = format!("{MAGIC} {FORMAT} {:08x} {}\n", crc32(&body), body.len()).into_bytes();
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// A state file's content, or what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<State, Damage> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(Damage::Corrupt("no header line"))?;
    let header =
        std::str::from_utf8(&bytes[..newline]).map_err(|_| Damage::Corrupt("bad header"))?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [MAGIC, format, crc, len] = fields[..] else {
        return Err(Damage::Corrupt("bad header"));
    };
    let format: u32 = format.parse().map_err(|_| Damage::Corrupt("bad header"))?;
    if format > FORMAT {
        return Err(Damage::NewerFormat(format));
    }
    let crc = u32::from_str_radix(crc, 16).map_err(|_| Damage::Corrupt("bad header"))?;
    let len: usize = len.parse().map_err(|_| Damage::Corrupt("bad header"))?;
    if body.len() != len {
        return Err(Damage::Corrupt("truncated or extended"));
    }
    if crc32(body) != crc {
        return Err(Damage::Corrupt("checksum mismatch"));
    }
    serde_json::from_slice(body).map_err(|_| Damage::Corrupt("unreadable content"))
}

/// CRC-32 (IEEE), bitwise: the file is tiny and written rarely.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            edge_key: Some("a2V5".into()),
            edge_id: Some("7e2b0a2c-4d1b-4c55-9f0e-2f3f5a6b7c8d".into()),
            endpoint_id: Some(3),
            server_key: None,
            stacks: BTreeMap::from([(
                1,
                StackRecord {
                    version: 3,
                    name: "web".into(),
                    project: "edge_web".into(),
                    entry_file: "docker-compose.yml".into(),
                    files_hash: "0123456789abcdef".into(),
                    status: Some(Status::Running),
                    error: String::new(),
                    sent: Some(Status::Running),
                },
            )]),
            jobs: BTreeMap::new(),
        }
    }

    #[test]
    fn jobs_of_older_files_load_as_versions() {
        let old = br#"{"edge_id":"e","jobs":{"2":5}}"#;
        let state: State = serde_json::from_slice(old).unwrap();
        assert_eq!(
            state.jobs[&2],
            JobRecord {
                version: 5,
                expression: String::new()
            }
        );
        let mut new = state.clone();
        new.jobs.insert(
            3,
            JobRecord {
                version: 1,
                expression: "*/5 * * * *".into(),
            },
        );
        let text = serde_json::to_string(&new).unwrap();
        assert!(
            text.contains(r#""3":{"version":1,"expression":"*/5 * * * *"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), new);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn first_boot_then_round_trip_with_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let (mut store, state) = Store::open(&data).unwrap();
        assert_eq!(state, State::default());
        assert!(
            !store.path().exists(),
            "nothing written before something changed"
        );
        store.save(&sample()).unwrap();
        let (_, again) = Store::open(&data).unwrap();
        assert_eq!(again, sample());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(data.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unchanged_state_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.save(&sample()).unwrap();
        let before = fs::metadata(store.path()).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.save(&sample()).unwrap();
        assert_eq!(
            fs::metadata(store.path()).unwrap().modified().unwrap(),
            before
        );
        assert!(!dir.path().join(format!("{FILE_NAME}.bak")).exists());
    }

    #[test]
    fn torn_or_corrupt_file_falls_back_to_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let first = sample();
        store.save(&first).unwrap();
        let mut second = sample();
        second.stacks.insert(
            2,
            StackRecord {
                version: 1,
                ..StackRecord::default()
            },
        );
        store.save(&second).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();

        // Torn: cut in the middle of the body.
        fs::write(&path, &good[..good.len() - 7]).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, first);
        // Bit flip inside the JSON that keeps it valid JSON.
        let flipped = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"2\":{\"version\":1", "\"2\":{\"version\":7");
        fs::write(&path, flipped).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, first);
        // Zero-filled (what some filesystems leave after a power cut).
        fs::write(&path, vec![0u8; good.len()]).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, first);
        // Intact again: the newest copy wins.
        fs::write(&path, &good).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, second);
    }

    /// Four saves from first boot (a torn temporary file of an earlier cut lying about), cut
    /// at every step: loading gives the state before the save in progress or after it.
    #[test]
    fn every_power_cut_during_saves_loads_the_previous_or_the_new_state() {
        use crate::system::power_cut::{self, Recorder};
        let mut states = vec![State::default(), sample()];
        let mut next = sample();
        next.server_key = Some("3059301306072a8648ce3d0201".into());
        states.push(next.clone());
        next.stacks.clear();
        next.endpoint_id = Some(7);
        states.push(next.clone());
        next.jobs.insert(
            1,
            JobRecord {
                version: 2,
                expression: "@hourly".into(),
            },
        );
        states.push(next);

        let mut recorder = Recorder::new();
        fs::write(recorder.root().join(format!("{FILE_NAME}.tmp")), b"edge-ag").unwrap();
        recorder.start();
        let (mut store, first) = Store::open(recorder.root()).unwrap();
        assert_eq!(first, State::default());
        let mut ends = Vec::new();
        for state in &states[1..] {
            store.save_on(&mut recorder, state).unwrap();
            ends.push(recorder.steps());
        }
        let points = power_cut::each_image(&recorder, |image, at| {
            let save = ends.iter().position(|end| at.after <= *end).unwrap();
            let loaded = match Store::open(image) {
                Ok((_, state)) => state,
                Err(e) => panic!("{at}: {e}"),
            };
            assert!(
                loaded == states[save] || loaded == states[save + 1],
                "{at}: loaded {loaded:?}"
            );
        });
        eprintln!(
            "state file: {points} power cuts over {} steps of {} saves",
            recorder.steps(),
            ends.len()
        );
        assert!(points > 1000, "{points}");
    }

    #[test]
    fn crash_between_renames_keeps_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.save(&sample()).unwrap();
        // As if the agent died after moving the current file to the backup.
        fs::rename(
            dir.path().join(FILE_NAME),
            dir.path().join(format!("{FILE_NAME}.bak")),
        )
        .unwrap();
        fs::write(dir.path().join(format!("{FILE_NAME}.tmp")), b"half").unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, sample());
    }

    #[test]
    fn both_copies_damaged_starts_empty_and_newer_format_refuses() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        fs::write(dir.path().join(format!("{FILE_NAME}.bak")), b"").unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, State::default());

        fs::write(
            dir.path().join(FILE_NAME),
            b"edge-agent-state 9 00000000 2\n{}",
        )
        .unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("format 9"), "{err}");
    }

    #[test]
    fn format_1_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let body = br#"{"edge_key":"a2V5","edge_id":"x","endpoint_id":3,"server_key":null,"stacks":{"4":2},"jobs":{}}"#;
        let mut file =
            format!("edge-agent-state 1 {:08x} {}\n", crc32(body), body.len()).into_bytes();
        file.extend_from_slice(body);
        fs::write(dir.path().join(FILE_NAME), file).unwrap();
        let state = Store::open(dir.path()).unwrap().1;
        assert_eq!(state.endpoint_id, Some(3));
        assert_eq!(
            state.stacks[&4],
            StackRecord {
                version: 2,
                ..StackRecord::default()
            }
        );
    }

    #[test]
    fn unwritable_data_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"").unwrap();
        let err = Store::open(&file.join("sub")).err().unwrap().to_string();
        assert!(err.contains("DATA_PATH") && err.contains("a-file"), "{err}");
    }
}
