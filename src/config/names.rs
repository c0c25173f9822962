//! Names that are not settings: a Go agent setting edge-agent does without, or an `EDGE_` name
//! no setting has (a typo, most likely), each worth one warning that suggests the setting meant.
//! The env file's names and the process environment's are checked alike.

use super::VARS;

/// Go agent settings that an operator may paste from the Portainer UI and that mean nothing here
/// (`EDGE=1`, which turns on edge mode in the Go agent, is always true here and accepted silently).
const IGNORED_GO_SETTINGS: &[&str] = &["EDGE_ASYNC"];

/// The warning for `name`, to follow where it was found, or `None` when there is nothing to say
/// (a setting, `EDGE`, or a name outside the agent's `EDGE_` prefix).
pub(super) fn warning(name: &str) -> Option<String> {
    if name == "EDGE" || VARS.iter().any(|v| v.env == name) {
        return None;
    }
    if IGNORED_GO_SETTINGS.contains(&name) {
        return Some(format!(
            "{name} is a Go agent setting that edge-agent does not support; ignored"
        ));
    }
    if !name.starts_with("EDGE_") {
        return None;
    }
    Some(match nearest(name) {
        Some(meant) => {
            format!("unknown setting {name} is ignored; did you mean {meant}?")
        }
        None => format!(
            "unknown setting {name} is ignored (known EDGE_ settings: {})",
            VARS.iter()
                .filter(|v| v.env.starts_with("EDGE_"))
                .map(|v| v.env)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The setting `name` most likely means: the same letters but for underscores and case, or at
/// most two letters apart.
fn nearest(name: &str) -> Option<&'static str> {
    let letters = |s: &str| s.replace('_', "").to_ascii_uppercase();
    let wanted = letters(name);
    VARS.iter()
        .map(|v| v.env)
        .map(|known| {
            let d = match letters(known) == wanted {
                true => 0,
                false => distance(&name.to_ascii_uppercase(), known),
            };
            (d, known)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Levenshtein distance between two short ASCII names.
fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_setting_meant() {
        assert_eq!(
            warning("EDGE_INSECUREPOLL").unwrap(),
            "unknown setting EDGE_INSECUREPOLL is ignored; did you mean EDGE_INSECURE_POLL?"
        );
        assert!(warning("EDGE_KYE")
            .unwrap()
            .ends_with("did you mean EDGE_KEY?"));
        assert!(warning("EDGE_TUNEL")
            .unwrap()
            .ends_with("did you mean EDGE_TUNNEL?"));
        assert!(warning("EDGE_SOMETHING_ELSE")
            .unwrap()
            .contains("known EDGE_ settings: EDGE_KEY, EDGE_ID"));
        assert!(warning("EDGE_ASYNC").unwrap().contains("Go agent setting"));
        assert_eq!(warning("EDGE_KEY"), None);
        assert_eq!(warning("EDGE"), None);
        assert_eq!(warning("HOME"), None);
    }

    #[test]
    fn distances() {
        assert_eq!(distance("EDGE_ID", "EDGE_ID"), 0);
        assert_eq!(distance("EDGE_KYE", "EDGE_KEY"), 2);
        assert_eq!(distance("EDGE_IDS", "EDGE_ID"), 1);
        assert_eq!(distance("", "AB"), 2);
    }
}
