//! Which Portainer Server versions this agent supports, and what `edge-agent check` says about
//! the version a server reports in `GET /api/system/status` (`{"Version":"2.45.0",...}`,
//! `portainer:api/portainer.go` `Status`). See docs/edge-protocol.md, "Versions".

/// The oldest and newest Portainer releases (major, minor) this agent is tested against.
pub const OLDEST: (u32, u32) = (2, 23);
pub const NEWEST: (u32, u32) = (2, 45);

/// Where a server's version stands against [`OLDEST`]..=[`NEWEST`].
#[derive(Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    Older,
    Newer,
    /// Not `MAJOR.MINOR[...]` with numbers.
    Unknown,
}

/// The major and minor of `2.45.0`, `2.45`, `2.45.1-rc1`; anything else is [`Support::Unknown`].
pub fn support(version: &str) -> Support {
    let mut parts = version.split(['.', '-']);
    let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) if (major, minor) < OLDEST => Support::Older,
        (Some(major), Some(minor)) if (major, minor) > NEWEST => Support::Newer,
        (Some(_), Some(_)) => Support::Supported,
        _ => Support::Unknown,
    }
}

/// `Portainer 2.45.0 (supported: 2.23 to 2.45)` and, outside the range, what that means.
pub fn describe(version: Option<&str>) -> String {
    let range = format!("{}.{} to {}.{}", OLDEST.0, OLDEST.1, NEWEST.0, NEWEST.1);
    let Some(version) = version else {
        return format!("version not reported (supported: {range})");
    };
    let version: String = version
        .chars()
        .take(32)
        .filter(|c| !c.is_control())
        .collect();
    match support(&version) {
        Support::Supported => format!("Portainer {version} (supported: {range})"),
        Support::Older => format!(
            "Portainer {version}, OLDER than supported ({range}): edge stacks, jobs and the \
             tunnel may not work; upgrade Portainer"
        ),
        Support::Newer => format!(
            "Portainer {version}, newer than tested ({range}): untested, report what does not \
             work"
        ),
        Support::Unknown => {
            format!("Portainer version {version:?} not understood (supported: {range})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_versions_by_major_and_minor() {
        assert_eq!(support("2.23.0"), Support::Supported);
        assert_eq!(support("2.45.0"), Support::Supported);
        assert_eq!(support("2.45.3"), Support::Supported);
        assert_eq!(support("2.33"), Support::Supported);
        assert_eq!(support("2.27.0-rc1"), Support::Supported);
        assert_eq!(support("2.22.9"), Support::Older);
        assert_eq!(support("1.24.2"), Support::Older);
        assert_eq!(support("2.46.0"), Support::Newer);
        assert_eq!(support("3.0.0"), Support::Newer);
        assert_eq!(support(""), Support::Unknown);
        assert_eq!(support("latest"), Support::Unknown);
        assert_eq!(support("2"), Support::Unknown);
    }

    #[test]
    fn describes_each_case() {
        assert_eq!(
            describe(Some("2.45.0")),
            "Portainer 2.45.0 (supported: 2.23 to 2.45)"
        );
        assert!(describe(Some("2.21.5")).contains("OLDER than supported (2.23 to 2.45)"));
        assert!(describe(Some("2.46.0")).contains("untested"));
        assert!(describe(Some("x\n")).contains("\"x\" not understood"));
        assert_eq!(
            describe(None),
            "version not reported (supported: 2.23 to 2.45)"
        );
    }
}
