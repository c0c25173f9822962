//! Edge stack statuses as Portainer numbers them (`EdgeStackStatusType` in portainer
//! `api/portainer.go`, `Pending = iota`), and the body of `PUT /api/edge_stacks/{id}/status`
//! (agent `edge/client/portainer_edge_client.go` `setEdgeStackStatusPayload`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The statuses this agent sends (Portainer has more: pending, images pulled, EE rollbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Status {
    DeploymentReceived = 1,
    Error = 2,
    Acknowledged = 3,
    Removed = 4,
    Running = 7,
    Deploying = 8,
    Removing = 9,
    Completed = 13,
}

impl From<Status> for u8 {
    fn from(s: Status) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for Status {
    type Error = String;
    fn try_from(n: u8) -> Result<Status, String> {
        Ok(match n {
            1 => Status::DeploymentReceived,
            2 => Status::Error,
            3 => Status::Acknowledged,
            4 => Status::Removed,
            7 => Status::Running,
            8 => Status::Deploying,
            9 => Status::Removing,
            13 => Status::Completed,
            _ => return Err(format!("{n} is not an edge stack status this agent sends")),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Status::DeploymentReceived => "deployment received",
            Status::Error => "error",
            Status::Acknowledged => "acknowledged",
            Status::Removed => "removed",
            Status::Running => "running",
            Status::Deploying => "deploying",
            Status::Removing => "removing",
            Status::Completed => "completed",
        };
        write!(f, "{name} ({})", *self as u8)
    }
}

/// The JSON body, keys in the Go agent's order; `RollbackTo` (EE, no longer read by 2.45) is
/// omitted as Go omits a nil. `Version` is the stack version the status is about (the 2.44 Go
/// agent sends the version from the poll): 2.45 ignores a report for a version older than the
/// stack's, 2.23 ignores the field.
pub fn body(status: Status, error: &str, endpoint_id: i64, time: i64, version: i64) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "Error")]
        error: &'a str,
        #[serde(rename = "Status")]
        status: u8,
        #[serde(rename = "EndpointID")]
        endpoint_id: i64,
        #[serde(rename = "Time")]
        time: i64,
        #[serde(rename = "Version")]
        version: i64,
    }
    serde_json::to_string(&Body {
        error,
        status: status as u8,
        endpoint_id,
        time,
        version,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_what_the_go_agent_sends() {
        assert_eq!(
            body(Status::Acknowledged, "", 12, 1729000000, 4),
            r#"{"Error":"","Status":3,"EndpointID":12,"Time":1729000000,"Version":4}"#
        );
        assert_eq!(
            body(Status::Error, "service \"db\" exited with code 1", 3, 5, 1),
            r#"{"Error":"service \"db\" exited with code 1","Status":2,"EndpointID":3,"Time":5,"Version":1}"#
        );
    }

    #[test]
    fn numbers_round_trip_and_unknown_ones_are_refused() {
        for n in [1u8, 2, 3, 4, 7, 8, 9, 13] {
            assert_eq!(u8::from(Status::try_from(n).unwrap()), n);
        }
        assert!(Status::try_from(0).is_err());
        assert!(Status::try_from(6).is_err());
    }
}
