//! The body of `GET /api/endpoints/{id}/edge/status` as typed values (server
//! `endpointedge_status_inspect.go`, agent `edge/client/interface.go`). Go decodes JSON keys
//! case-insensitively, so the spellings the server and EE use are all accepted.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStatus {
    Idle,
    Required,
    /// Legacy `ACTIVE` (servers ≤ 2.20) or anything else: no tunnel action, as in the Go agent.
    Other(String),
}

impl From<String> for TunnelStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "IDLE" => TunnelStatus::Idle,
            "REQUIRED" => TunnelStatus::Required,
            _ => TunnelStatus::Other(s),
        }
    }
}

impl Default for TunnelStatus {
    fn default() -> Self {
        TunnelStatus::Other(String::new())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Schedule {
    #[serde(rename = "Id", alias = "ID", alias = "id")]
    pub id: i64,
    #[serde(rename = "CollectLogs", alias = "collectLogs", default)]
    pub collect_logs: bool,
    #[serde(rename = "CronExpression", alias = "cronExpression", default)]
    pub cron_expression: String,
    /// Base64 (RawStd) of the script.
    #[serde(rename = "Script", alias = "script", default)]
    pub script: String,
    #[serde(rename = "Version", alias = "version", default)]
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct StackRef {
    #[serde(rename = "ID", alias = "Id", alias = "id")]
    pub id: i64,
    #[serde(rename = "Version", alias = "version", default)]
    pub version: i64,
}

/// Edge stacks and jobs taken from one answer, the most this agent runs: the rest of a longer
/// list is skipped unread (its count is kept, for the log), so a hostile list costs no memory.
pub const MAX_STACKS: usize = 64;
pub const MAX_JOBS: usize = 64;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Wire")]
pub struct PollResponse {
    pub status: TunnelStatus,
    pub port: u16,
    /// Edge jobs, the first [`MAX_JOBS`]; `null` is the same as none.
    pub schedules: Vec<Schedule>,
    /// How many jobs the server listed.
    pub schedules_listed: usize,
    /// Seconds; the server sends an int, the Go agent decodes a float (so must we). `None`
    /// when absent or `null`.
    pub checkin: Option<f64>,
    pub credentials: String,
    /// The first [`MAX_STACKS`]; `None` when the server sent `null` (keep the stack list),
    /// `Some([])` removes all stacks.
    pub stacks: Option<Vec<StackRef>>,
    /// How many stacks the server listed.
    pub stacks_listed: usize,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(alias = "Status", default, deserialize_with = "status")]
    status: TunnelStatus,
    #[serde(alias = "Port", default)]
    port: u16,
    #[serde(alias = "Schedules", default)]
    schedules: Option<Capped<Schedule, MAX_JOBS>>,
    #[serde(alias = "Checkin", alias = "CheckinInterval", default)]
    checkin: Option<f64>,
    #[serde(alias = "Credentials", default)]
    credentials: String,
    #[serde(alias = "Stacks", default)]
    stacks: Option<Capped<StackRef, MAX_STACKS>>,
}

impl PollResponse {
    /// Whether [`stacks`](Self::stacks) is the whole list the server sent (not cut at
    /// [`MAX_STACKS`]): only then is a stack missing from it unassigned.
    pub fn stacks_complete(&self) -> bool {
        self.stacks
            .as_ref()
            .is_none_or(|kept| self.stacks_listed <= kept.len())
    }

    /// The same for [`schedules`](Self::schedules) and [`MAX_JOBS`].
    pub fn schedules_complete(&self) -> bool {
        self.schedules_listed <= self.schedules.len()
    }
}

impl From<Wire> for PollResponse {
    fn from(w: Wire) -> PollResponse {
        let schedules = w.schedules.unwrap_or_default();
        PollResponse {
            status: w.status,
            port: w.port,
            schedules_listed: schedules.listed,
            schedules: schedules.kept,
            checkin: w.checkin,
            credentials: w.credentials,
            stacks_listed: w.stacks.as_ref().map_or(0, |s| s.listed),
            stacks: w.stacks.map(|s| s.kept),
        }
    }
}

/// The first `N` entries of a JSON list and how many it had; the others are skipped
/// (`IgnoredAny`: read, not stored).
struct Capped<T, const N: usize> {
    kept: Vec<T>,
    listed: usize,
}

impl<T, const N: usize> Default for Capped<T, N> {
    fn default() -> Self {
        Capped {
            kept: Vec::new(),
            listed: 0,
        }
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for List<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut list = Capped::default();
                while list.kept.len() < N {
                    match seq.next_element()? {
                        Some(item) => list.kept.push(item),
                        None => break,
                    }
                }
                list.listed = list.kept.len();
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    list.listed += 1;
                }
                Ok(list)
            }
        }
        d.deserialize_seq(List(std::marker::PhantomData))
    }
}

fn status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TunnelStatus, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .map(TunnelStatus::from)
        .unwrap_or_default())
}

/// Check-in intervals outside this range are clamped: a zero or tiny value would make the agent
/// spin, a huge one would make it look dead.
pub const MIN_CHECKIN: Duration = Duration::from_millis(10);
pub const MAX_CHECKIN: Duration = Duration::from_secs(24 * 3600);

impl PollResponse {
    pub fn parse(body: &[u8]) -> Result<PollResponse, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The check-in interval the server asks for, if it asks for a usable one (`checkin > 0`),
    /// clamped to [`MIN_CHECKIN`, `MAX_CHECKIN`].
    pub fn checkin_interval(&self) -> Option<Duration> {
        let checkin = self.checkin?;
        // `>` is false for NaN too.
        if checkin.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let wanted = Duration::try_from_secs_f64(checkin).unwrap_or(MAX_CHECKIN);
        Some(wanted.clamp(MIN_CHECKIN, MAX_CHECKIN))
    }

    /// What is wrong with the `checkin` sent, if anything: not an interval (`current` is kept),
    /// or out of the agent's bounds (clamped). One line for the log; the value itself is not
    /// shown (formatting floats would cost the binary more than the line is worth).
    pub fn checkin_problem(&self, current: Duration) -> Option<String> {
        use crate::config::duration::display;
        let checkin = self.checkin?;
        match self.checkin_interval() {
            None => Some(format!(
                "Portainer's checkin is not a positive number of seconds: keeping {}",
                display(current)
            )),
            Some(MAX_CHECKIN) if checkin > MAX_CHECKIN.as_secs_f64() => Some(format!(
                "Portainer's checkin is over {0}: clamped to {0}, the longest this agent waits",
                display(MAX_CHECKIN)
            )),
            Some(MIN_CHECKIN) if checkin < MIN_CHECKIN.as_secs_f64() => Some(format!(
                "Portainer's checkin is under {0}: clamped to {0}, the shortest this agent waits",
                display(MIN_CHECKIN)
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples() {
        let body = br#"{"status":"REQUIRED","port":51234,"schedules":[{"Id":2,"CollectLogs":false,"CronExpression":"*/5 * * * *","Script":"ZWNobyBoZWxsbwo","Version":1}],"checkin":5,"credentials":"RmQx","stacks":[{"ID":1,"Version":3}]}"#;
        let r = PollResponse::parse(body).unwrap();
        assert_eq!(r.status, TunnelStatus::Required);
        assert_eq!(r.port, 51234);
        assert_eq!(r.schedules[0].id, 2);
        assert_eq!(r.schedules[0].cron_expression, "*/5 * * * *");
        assert_eq!(r.checkin_interval(), Some(Duration::from_secs(5)));
        assert_eq!(r.credentials, "RmQx");
        assert_eq!(r.stacks, Some(vec![StackRef { id: 1, version: 3 }]));

        let idle = PollResponse::parse(
            br#"{"status":"IDLE","port":0,"schedules":[],"checkin":5,"credentials":"","stacks":[]}"#,
        )
        .unwrap();
        assert_eq!(idle.status, TunnelStatus::Idle);
        assert_eq!(idle.stacks, Some(vec![]));
    }

    #[test]
    fn float_checkin_nulls_other_spellings_and_unknown_fields() {
        let r = PollResponse::parse(
            br#"{"Status":"ACTIVE","checkin":0.01,"schedules":null,"stacks":null,"Stacks2":1,"edge_configurations":{"1":2}}"#,
        )
        .unwrap();
        assert_eq!(r.status, TunnelStatus::Other("ACTIVE".into()));
        assert_eq!(r.checkin_interval(), Some(Duration::from_millis(10)));
        assert!(r.schedules.is_empty());
        assert_eq!(r.stacks, None);
        let r = PollResponse::parse(br#"{"stacks":[{"Id":4,"version":2}]}"#).unwrap();
        assert_eq!(r.stacks, Some(vec![StackRef { id: 4, version: 2 }]));
    }

    #[test]
    fn unusable_checkins_are_ignored_or_clamped() {
        let with = |c: &str| {
            PollResponse::parse(format!(r#"{{"checkin":{c}}}"#).as_bytes())
                .unwrap()
                .checkin_interval()
        };
        assert_eq!(with("0"), None);
        assert_eq!(with("-3"), None);
        assert_eq!(with("null"), None);
        assert_eq!(with("0.000001"), Some(MIN_CHECKIN));
        assert_eq!(with("1e300"), Some(MAX_CHECKIN));
        assert_eq!(with("1e308"), Some(MAX_CHECKIN));
        let problem = |c: &str| {
            PollResponse::parse(format!(r#"{{"checkin":{c}}}"#).as_bytes())
                .unwrap()
                .checkin_problem(Duration::from_secs(5))
        };
        assert_eq!(problem("5"), None);
        assert_eq!(problem("null"), None);
        let unusable = "Portainer's checkin is not a positive number of seconds: keeping 5s";
        assert_eq!(problem("0").as_deref(), Some(unusable));
        assert_eq!(problem("-3").as_deref(), Some(unusable));
        assert!(problem("1e308")
            .unwrap()
            .contains("over 24h0m0s: clamped to 24h0m0s"));
        assert!(problem("0.001")
            .unwrap()
            .contains("under 10ms: clamped to 10ms"));
        assert_eq!(problem("86400"), None);
        assert_eq!(problem("0.01"), None);
        // JSON has no NaN: the whole answer is refused.
        assert!(PollResponse::parse(br#"{"checkin":NaN}"#).is_err());
        assert!(PollResponse::parse(br#"{"checkin":"NaN"}"#).is_err());
        assert!(PollResponse::parse(br#"{"checkin":1e309}"#).is_err());
    }

    #[test]
    fn long_lists_keep_their_first_entries_and_their_count() {
        let stacks: Vec<String> = (1..=1000).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
        let jobs: Vec<String> = (1..=70).map(|i| format!(r#"{{"Id":{i}}}"#)).collect();
        let r = PollResponse::parse(
            format!(
                r#"{{"stacks":[{}],"schedules":[{}]}}"#,
                stacks.join(","),
                jobs.join(",")
            )
            .as_bytes(),
        )
        .unwrap();
        let kept = r.stacks.unwrap();
        assert_eq!((kept.len(), r.stacks_listed), (MAX_STACKS, 1000));
        assert_eq!(kept[63].id, 64);
        assert_eq!((r.schedules.len(), r.schedules_listed), (MAX_JOBS, 70));
        let r = PollResponse::parse(br#"{"stacks":null,"schedules":null}"#).unwrap();
        assert_eq!(
            (r.stacks, r.stacks_listed, r.schedules_listed),
            (None, 0, 0)
        );
        assert!(PollResponse::parse(br#"{"stacks":{"id":1}}"#).is_err());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b"<html>"[..],
            b"",
            b"null",
            br#"{"port":70000}"#,
            br#"{"stacks":[{"Version":1}]}"#,
        ] {
            assert!(
                PollResponse::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
