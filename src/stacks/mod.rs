//! Edge stacks: what Portainer assigns to this environment, deployed with the compose engine
//! and reported back as the UI expects. See `docs/edge-stacks.md`.

mod folder;
mod payload;
mod reconciler;
mod reporter;
mod status;

pub use status::Status;
