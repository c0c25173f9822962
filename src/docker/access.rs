//! Who may use the Docker socket, for a "permission denied" an operator can fix: the socket's
//! owner, group and mode, and who the agent runs as. Names come from `/etc/passwd` and
//! `/etc/group` directly (a static binary has no NSS).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Owner and group ids with their names when known, and the permission bits; `None` when
    /// the socket cannot be examined either.
    pub socket: Option<(Id, Id, u32)>,
    /// The agent's user.
    pub agent: Id,
}

/// A user or group id and its name, if the account files have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    pub id: u32,
    pub name: Option<String>,
}

impl Access {
    pub fn of(socket: &Path) -> Access {
        let passwd = read_account_file("/etc/passwd");
        let group = read_account_file("/etc/group");
        Access::from_parts(
            socket.metadata().ok().map(|m| (m.uid(), m.gid(), m.mode())),
            nix::unistd::getuid().as_raw(),
            &passwd,
            &group,
        )
    }

    fn from_parts(
        socket: Option<(u32, u32, u32)>,
        agent_uid: u32,
        passwd: &str,
        group: &str,
    ) -> Access {
        let id = |id, text| Id {
            id,
            name: name_of(text, id),
        };
        Access {
            socket: socket.map(|(uid, gid, mode)| (id(uid, passwd), id(gid, group), mode & 0o777)),
            agent: id(agent_uid, passwd),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "{}", self.id),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let agent = match &self.agent.name {
            Some(name) => format!("uid {} ({name})", self.agent.id),
            None => format!("uid {}", self.agent.id),
        };
        match &self.socket {
            Some((owner, group, mode)) => write!(
                f,
                "the socket belongs to user {owner} and group {group} with mode {mode:04o}, and edge-agent runs as {agent}: add {user} to group {group} (usermod -aG {group} {user}) and restart edge-agent, or run it as root",
                user = self.agent
            ),
            None => write!(
                f,
                "edge-agent runs as {agent} and cannot even examine the socket's folder; run it as root or as a member of the socket's group"
            ),
        }
    }
}

/// The name on the line of `text` (`name:password:id:...`) whose id is `id`.
fn name_of(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == id && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The file's text, at most 1 MiB of it; empty when unreadable.
fn read_account_file(path: &str) -> String {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        // A partial or non-UTF-8 file just gives fewer names.
        let _ = file.take(1024 * 1024).read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\n# comment\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n";
    const GROUP: &str = "root:x:0:\ndocker:x:995:\npi:x:1000:\n";

    #[test]
    fn names_the_owner_group_and_agent_with_a_fix() {
        let access = Access::from_parts(Some((0, 995, 0o140660)), 1000, PASSWD, GROUP);
        assert_eq!(
            access.to_string(),
            "the socket belongs to user root and group docker with mode 0660, and edge-agent runs as uid 1000 (pi): add pi to group docker (usermod -aG docker pi) and restart edge-agent, or run it as root"
        );
    }

    #[test]
    fn unknown_ids_are_shown_as_numbers() {
        let access = Access::from_parts(Some((7, 8, 0o600)), 4242, PASSWD, GROUP);
        let text = access.to_string();
        assert!(
            text.contains("user 7 and group 8 with mode 0600")
                && text.contains("runs as uid 4242:"),
            "{text}"
        );
        let hidden = Access::from_parts(None, 1000, PASSWD, GROUP);
        assert!(hidden.to_string().contains("cannot even examine"));
    }
}
