//! The images step: each distinct image resolved to its id, pulled first when missing (or
//! `pull_policy: always`; `never` and missing is an error) with the registry credentials of the
//! Docker CLI's config (`docker::registry_auth`), the pull's progress streamed to the end and
//! logged once with its size and time.

use super::error::{is_not_found, UpError};
use super::{Phase, Up};
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
        let progress = self
            .call(true, || {
                streaming.pull(name, tag, credentials.auth.as_ref())
            })
            .map_err(refused)?;
        for item in progress {
            item.map_err(refused)?;
        }
        self.pulled.push((image.to_owned(), started.elapsed()));
        Ok(())
    }
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
