//! Interpolation of the tree, as compose-go's `interpolation` package walks it: every scalar
//! value (not key) substituted by [`crate::compose::interpolate`], `x-*` subtrees left alone,
//! unset names collected for one warning each, and the output of the whole file bounded by
//! [`interpolate::MAX_OUTPUT`].

use super::context::{join, Ctx};
use super::error::Fail;
use crate::compose::interpolate;
use crate::compose::yaml::{Node, Value};

impl Ctx<'_> {
    /// `node` with every scalar value (not key) substituted; `x-*` subtrees are left alone.
    pub(super) fn interpolate(&mut self, node: &Node, path: &str) -> Result<Node, Fail> {
        let value = match &node.value {
            Value::Null => Value::Null,
            Value::Scalar(text, plain) => {
                let env = self.env;
                let mut unset = Vec::new();
                let out = interpolate::substitute(
                    text,
                    &|n| env.get(n).cloned(),
                    &mut |n| unset.push(n.to_owned()),
                    self.budget,
                )
                .map_err(|m| self.err(node, path, m))?;
                self.budget -= out.len();
                self.unset.extend(unset);
                Value::Scalar(out, *plain)
            }
            Value::Seq(items) => Value::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.interpolate(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(key, item)| {
                        if key.starts_with("x-") {
                            return Ok::<_, Fail>((key.clone(), item.clone()));
                        }
                        Ok((key.clone(), self.interpolate(item, &join(path, key))?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Node {
            value,
            line: node.line,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::load::tests::load_files;

    #[test]
    fn variables_that_multiply_past_the_interpolation_bound_are_an_error_not_an_oom() {
        // The eighth 512 KiB copy passes 4 MiB.
        let big = "x".repeat(512 * 1024);
        let yaml = format!(
            "services:\n  web:\n    image: a\n    command: [{}]\n",
            ["\"${BIG}\""; 9].join(", ")
        );
        let (_dir, project) = load_files(&[("compose.yaml", &yaml)], &[("BIG", &big)]);
        let e = project.unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(4), "services.web.command[7]"),
            "{e}"
        );
        assert!(e.message.contains("more than 4 MiB"), "{e}");
        let yaml = "services:\n  web:\n    image: a\n    command: [\"${BIG}\", \"${BIG}\"]\n";
        let (_dir, project) = load_files(&[("compose.yaml", yaml)], &[("BIG", &big)]);
        assert!(project.is_ok(), "two of them (1 MiB) are fine");
    }
}
