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

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PollResponse {
    #[serde(alias = "Status", default, deserialize_with = "status")]
    pub status: TunnelStatus,
    #[serde(alias = "Port", default)]
    pub port: u16,
    /// Edge jobs; `null` is the same as none.
    #[serde(alias = "Schedules", default, deserialize_with = "null_as_empty")]
    pub schedules: Vec<Schedule>,
    /// Seconds; the server sends an int, the Go agent decodes a float (so must we).
    #[serde(alias = "Checkin", alias = "CheckinInterval", default)]
    pub checkin: f64,
    #[serde(alias = "Credentials", default)]
    pub credentials: String,
    /// `None` when the server sent `null` (keep the stack list), `Some([])` removes all stacks.
    #[serde(alias = "Stacks", default)]
    pub stacks: Option<Vec<StackRef>>,
}

fn status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TunnelStatus, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .map(TunnelStatus::from)
        .unwrap_or_default())
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Check-in intervals outside this range are clamped: a zero or tiny value would make the agent
/// spin, a huge one would make it look dead.
pub const MIN_CHECKIN: Duration = Duration::from_millis(10);
pub const MAX_CHECKIN: Duration = Duration::from_secs(24 * 3600);

impl PollResponse {
    pub fn parse(body: &[u8]) -> Result<PollResponse, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The check-in interval the server asks for, if it asks for a usable one (`checkin > 0`).
    pub fn checkin_interval(&self) -> Option<Duration> {
        // `>` is false for NaN too.
        if self.checkin.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let wanted = Duration::try_from_secs_f64(self.checkin).unwrap_or(MAX_CHECKIN);
        Some(wanted.clamp(MIN_CHECKIN, MAX_CHECKIN))
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
        assert_eq!(with("0.000001"), Some(MIN_CHECKIN));
        assert_eq!(with("1e300"), Some(MAX_CHECKIN));
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
