//! Who this device is, decided once at startup from the configuration and the state file:
//! the Edge key (configured, else the one saved at first boot), the Edge ID (configured, else the
//! saved one, else a fresh UUIDv4 saved for good, so one image can be flashed to many devices)
//! and the endpoint id (from the key, else the one learned through a global key).

use crate::config::edge_key::EdgeKey;
use crate::config::Config;
use crate::state::State;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key: EdgeKey,
    pub edge_id: String,
    /// Known endpoint id; `None` until a global key has been resolved by the server.
    pub endpoint_id: Option<i64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NoKey { env_file: String },
    SavedKeyInvalid(crate::config::edge_key::Error),
    NoRandomness,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoKey { env_file } => write!(
                f,
                "EDGE_KEY is not set: in Portainer open Environments > your Edge environment, copy its Edge key and put it in {env_file} as EDGE_KEY=<key> (and EDGE_ID=<id> if Portainer shows one); or, on a prestaged device, set EDGE_SETUP_PAGE=true to enter the key on a web page the agent serves on the local network (docs/provisioning.md)"
            ),
            Error::SavedKeyInvalid(e) => write!(
                f,
                "the Edge key saved in the state file is not valid ({e}); set EDGE_KEY"
            ),
            Error::NoRandomness => f.write_str(
                "cannot generate an Edge ID: the system random generator failed; set EDGE_ID",
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Works out the identity and the state that records it. Logs what was decided.
pub fn resolve(config: &Config, saved: &State) -> Result<(Identity, State), Error> {
    let mut state = saved.clone();
    let key = match &config.edge_key {
        Some(configured) => {
            if saved
                .edge_key
                .as_deref()
                .is_some_and(|k| k != configured.text)
            {
                log::info!(
                    "Edge key from {} replaces the saved one: the endpoint id and Portainer's pinned public key are forgotten",
                    configured.source
                );
                state.endpoint_id = None;
                state.server_key = None;
            }
            state.edge_key = Some(configured.text.clone());
            configured.key.clone()
        }
        None => match &saved.edge_key {
            Some(text) => EdgeKey::decode(text).map_err(Error::SavedKeyInvalid)?,
            None => {
                return Err(Error::NoKey {
                    env_file: config.env_file.display().to_string(),
                })
            }
        },
    };
    let edge_id = match (&config.edge_id, &saved.edge_id) {
        (Some((id, source)), saved_id) => {
            if saved_id.as_ref().is_some_and(|s| s != id) {
                log::warn!(
                    "EDGE_ID from {source} replaces the saved Edge ID {}",
                    saved_id.as_deref().unwrap_or_default()
                );
                state.endpoint_id = None;
            }
            id.clone()
        }
        (None, Some(id)) => id.clone(),
        (None, None) => {
            let id = crate::system::random::uuid_v4().ok_or(Error::NoRandomness)?;
            log::info!("generated Edge ID {id} for this device (kept in the state file)");
            id
        }
    };
    state.edge_id = Some(edge_id.clone());
    let endpoint_id = key.endpoint_id.or(state.endpoint_id);
    state.endpoint_id = endpoint_id;
    Ok((
        Identity {
            key,
            edge_id,
            endpoint_id,
        },
        state,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvFileChoice, Var, VARS};
    use base64::Engine;

    fn key(id: i64) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(format!("https://p.example:9443|p.example:8000|fp|{id}"))
    }

    fn config(flags: &[(&str, String)]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.env");
        std::fs::write(&empty, "").unwrap();
        let flags: Vec<(&'static Var, String)> = flags
            .iter()
            .map(|(name, v)| (VARS.iter().find(|var| var.env == *name).unwrap(), v.clone()))
            .collect();
        Config::load(
            EnvFileChoice::Named(empty),
            &crate::config::tests::env_of(&[]),
            &flags,
        )
        .unwrap()
    }

    #[test]
    fn first_boot_generates_and_keeps_an_edge_id() {
        let c = config(&[("EDGE_KEY", key(3))]);
        let (first, state) = resolve(&c, &State::default()).unwrap();
        assert_eq!(first.endpoint_id, Some(3));
        assert_eq!(state.edge_id.as_deref(), Some(first.edge_id.as_str()));
        assert_eq!(state.edge_key, Some(key(3)));
        let (second, again) = resolve(&c, &state).unwrap();
        assert_eq!(second.edge_id, first.edge_id);
        assert_eq!(again, state);
    }

    #[test]
    fn configured_edge_id_wins_and_saved_key_is_reused() {
        let c = config(&[("EDGE_KEY", key(3)), ("EDGE_ID", "dev-1".into())]);
        let (_, state) = resolve(&c, &State::default()).unwrap();
        let c = config(&[]);
        let (id, _) = resolve(&c, &state).unwrap();
        assert_eq!((id.edge_id.as_str(), id.endpoint_id), ("dev-1", Some(3)));
    }

    #[test]
    fn global_key_keeps_learned_endpoint_until_key_or_id_changes() {
        let c = config(&[("EDGE_KEY", key(0)), ("EDGE_ID", "dev-1".into())]);
        let (id, mut state) = resolve(&c, &State::default()).unwrap();
        assert_eq!(id.endpoint_id, None);
        state.endpoint_id = Some(9);
        assert_eq!(resolve(&c, &state).unwrap().0.endpoint_id, Some(9));
        let other_id = config(&[("EDGE_KEY", key(0)), ("EDGE_ID", "dev-2".into())]);
        assert_eq!(resolve(&other_id, &state).unwrap().0.endpoint_id, None);
        let other_key = config(&[("EDGE_KEY", key(4)), ("EDGE_ID", "dev-1".into())]);
        assert_eq!(resolve(&other_key, &state).unwrap().0.endpoint_id, Some(4));
    }

    #[test]
    fn a_new_edge_key_unpins_portainers_public_key() {
        let c = config(&[("EDGE_KEY", key(3)), ("EDGE_ID", "dev-1".into())]);
        let (_, mut state) = resolve(&c, &State::default()).unwrap();
        state.server_key = Some("3059...".into());
        assert_eq!(resolve(&c, &state).unwrap().1.server_key, state.server_key);
        let other_key = config(&[("EDGE_KEY", key(4)), ("EDGE_ID", "dev-1".into())]);
        assert_eq!(resolve(&other_key, &state).unwrap().1.server_key, None);
    }

    #[test]
    fn no_key_anywhere_tells_the_operator_what_to_do() {
        let err = resolve(&config(&[]), &State::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EDGE_KEY is not set")
                && err.contains("EDGE_KEY=<key>")
                && err.contains("EDGE_SETUP_PAGE=true"),
            "{err}"
        );
    }
}
