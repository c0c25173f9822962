//! The images step: each distinct image resolved to its id, pulled first when missing (or
//! `pull_policy: always`; `never` and missing is an error) with the registry credentials of the
//! Docker CLI's config (`docker::registry_auth`), the pull's progress streamed to the end and
//! logged once with its size and time.

use super::error::{is_not_found, UpError};
use super::{Phase, Up};
use crate::compose::model::Project;
use crate::docker::{self, registry_auth, Client, Limits};
use std::time::{Duration, Instant};

/// The longest silence of a pull's progress stream.
const PULL_IDLE: Duration = Duration::from_secs(120);

impl Up {
    /// Resolves image `i` to its id; pulls it when missing (or `pull_policy: always`).
    pub(super) fn image(&mut self, docker: &Client, i: usize) -> Result<(), UpError> {
        let Some((image, policy)) = self.images.get(i).cloned() else {
            self.phase = Phase::Networks(0);
            return Ok(());
        };
        let pulled = self.pulled.iter().any(|(i, _)| *i == image);
        if policy == "always" && !pulled {
            return self.pull(docker, &image);
        }
        match self.call(false, || docker.inspect_image(&image)) {
            Ok(inspect) => {
                if let Some((_, took)) = self.pulled.iter().find(|(i, _)| *i == image) {
                    let (mb, ms) = (inspect.size.max(0) / 100_000, took.as_millis() / 100);
                    log::info!(
                        "pulled image {image} ({}.{} MB, {}.{} s)",
                        mb / 10,
                        mb % 10,
                        ms / 10,
                        ms % 10
                    );
                }
                self.image_ids.insert(image, inspect.id);
                self.phase = Phase::Images(i + 1);
                Ok(())
            }
            Err(e) if is_not_found(&e) && policy == "never" => Err(UpError::Pull {
                image,
                message: "it is not on this machine and pull_policy is never".into(),
            }),
            Err(e) if is_not_found(&e) && !pulled => self.pull(docker, &image),
            Err(e) => Err(e.into()),
        }
    }

    fn pull(&mut self, docker: &Client, image: &str) -> Result<(), UpError> {
        let started = Instant::now();
        // One call, which changes something (as `Up::call` counts them).
        self.calls += 1;
        self.changes += 1;
        pull_image(docker, image)?;
        self.pulled.push((image.to_owned(), started.elapsed()));
        Ok(())
    }
}

/// `edge-agent compose pull`: the images of `services` (all when empty) pulled one after the
/// other, each once, with a progress line per service as compose v2's `pull` prints them
/// (` web Pulling`, ` web Pulled`, ` web Skipped` for `pull_policy: never`). A failed pull
/// ends it, unless `ignore_failures`, where it is reported and the others go on.
pub fn pull(
    docker: &Client,
    project: &Project,
    services: &[String],
    ignore_failures: bool,
    mut progress: impl FnMut(std::fmt::Arguments),
) -> Result<(), UpError> {
    if let Some(missing) = services.iter().find(|s| !project.services.contains_key(*s)) {
        return Err(UpError::Conflict(format!(
            "no such service: {missing} (not in the compose file)"
        )));
    }
    let mut pulling: Vec<(&str, &str)> = Vec::new();
    for (key, s) in &project.services {
        if !services.is_empty() && !services.contains(key) {
            continue;
        }
        if s.pull_policy == "never" {
            progress(format_args!(" {key} Skipped"));
            continue;
        }
        if let Some((_, by)) = pulling.iter().find(|(image, _)| *image == s.image) {
            progress(format_args!(
                " {key} Skipped - Image is already being pulled by {by}"
            ));
            continue;
        }
        pulling.push((&s.image, key));
        progress(format_args!(" {key} Pulling"));
        match pull_image(docker, &s.image) {
            Ok(()) => progress(format_args!(" {key} Pulled")),
            Err(e) => {
                progress(format_args!(" {key} Error {e}"));
                if !ignore_failures {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Pulls `image` with the Docker CLI's credentials for its registry, its progress streamed to
/// the end (each read bounded by [`PULL_IDLE`]).
fn pull_image(docker: &Client, image: &str) -> Result<(), UpError> {
    let (name, tag) = split_reference(image);
    let streaming = docker.with_limits(Limits {
        stream_idle: Some(PULL_IDLE),
        ..Limits::default()
    });
    let failed = |message: String| UpError::Pull {
        image: image.to_owned(),
        message,
    };
    let credentials = registry_auth::for_image(image).map_err(|e| failed(e.to_string()))?;
    let refused = |e: docker::Error| failed(credentials.explain(&docker_message(&e)));
    let progress = streaming
        .pull(name, tag, credentials.auth.as_ref())
        .map_err(refused)?;
    for item in progress {
        item.map_err(refused)?;
    }
    Ok(())
}

/// Docker's own message, without the call.
fn docker_message(e: &docker::Error) -> String {
    match e {
        docker::Error::Docker { message, .. } | docker::Error::Failed { message, .. } => {
            message.clone()
        }
        other => other.to_string(),
    }
}

/// `registry:5000/a/b:tag` → (`registry:5000/a/b`, `tag`); a digest is the tag Docker takes;
/// no tag is `latest`.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(at) => (&image[..last + at], &image[last + at + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_as_docker_pulls_them() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("registry.lan:5000/a/b"),
            ("registry.lan:5000/a/b", "latest")
        );
        assert_eq!(
            split_reference("registry.lan:5000/a/b:2"),
            ("registry.lan:5000/a/b", "2")
        );
        assert_eq!(split_reference("a/b@sha256:abc"), ("a/b", "sha256:abc"));
    }
}
