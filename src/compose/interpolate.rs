//! Variable substitution in values, as compose-go v2.9.1's `template` package does it (the one
//! in Compose v2.40.3): `$$` is a `$`; `$NAME` and `${NAME}` (NAME is `[_A-Za-z][_A-Za-z0-9]*`);
//! `${NAME:-default}` (unset or empty), `${NAME-default}` (unset), `${NAME:?message}` /
//! `${NAME?message}` (an error), `${NAME:+alt}` / `${NAME+alt}` (alt when set); defaults,
//! alternatives and messages are substituted in turn, so they nest. A `${` that is not one of
//! these is an error; any other `$` (`$2a`, `cost $`) stays a literal `$`, as upstream's pattern
//! does not match it. An unset name without an operator becomes "" and is reported once through
//! `unset`.

/// What interpolation may produce for one compose file, or one env file, in all (the caller
/// counts): far more than a real file needs (files are at most 1 MiB), and a bound on variables
/// that expand each other (`B=$A$A`, `C=$B$B`, ...: a few lines would take gigabytes).
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// `text` with its variables replaced, in at most `limit` bytes (what is left of
/// [`MAX_OUTPUT`]); the error says what is wrong (the caller adds where).
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&str),
    limit: usize,
) -> Result<String, String> {
    let too_large = || {
        format!(
            "the variables expand to more than {} MiB in all (do they expand each other?)",
            MAX_OUTPUT >> 20
        )
    };
    if !text.contains('$') {
        return if text.len() > limit {
            Err(too_large())
        } else {
            Ok(text.to_owned())
        };
    }
    let mut out = String::with_capacity(text.len().min(limit));
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        if out.len() > limit {
            return Err(too_large());
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner)
                .ok_or_else(|| format!("invalid interpolation in {text:?}: a ${{ without }}"))?;
            out.push_str(&braced(&inner[..end], text, lookup, unset, limit)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&value(&after[..len], lookup, unset));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// The length of the variable name that `text` starts with (0 if none).
fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// The index of the `}` that closes a `${`, as upstream's `getFirstBraceClosingIndex` finds it:
/// every `{` opens a level (and the character after it is skipped), every `}` closes one; when
/// they do not balance, upstream's pattern ends at the last `}`.
fn closing_brace(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut depth = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    inner.rfind('}')
}

fn value(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&str),
) -> String {
    lookup(name).unwrap_or_else(|| {
        unset(name);
        String::new()
    })
}

/// What `${inner}` stands for.
fn braced(
    inner: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&str),
    limit: usize,
) -> Result<String, String> {
    let len = name_len(inner);
    let (name, op) = inner.split_at(len);
    if len == 0 {
        return Err(format!(
            "invalid interpolation in {text:?}: ${{{inner}}} does not start with a variable name"
        ));
    }
    if op.is_empty() {
        return Ok(value(name, lookup, unset));
    }
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, op),
    };
    let mut chars = op.chars();
    let kind = chars.next();
    let arg = chars.as_str();
    let current = lookup(name);
    // With a colon, an empty value counts as unset.
    let set = current.as_deref().is_some_and(|v| !colon || !v.is_empty());
    match kind {
        Some('-') if set => Ok(current.unwrap_or_default()),
        Some('-') => substitute(arg, lookup, unset, limit),
        Some('+') if set => substitute(arg, lookup, unset, limit),
        Some('+') => Ok(current.unwrap_or_default()),
        Some('?') if set => Ok(current.unwrap_or_default()),
        Some('?') => Err(format!(
            "required variable {name} is missing a value: {}",
            substitute(arg, lookup, unset, limit)?
        )),
        _ => Err(format!(
            "invalid interpolation in {text:?}: after ${{{name} comes }}, :-, -, :?, ?, :+ or +"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Result<String, String>, Vec<String>) {
        let lookup = |name: &str| match name {
            "SET" => Some("v".to_owned()),
            "EMPTY" => Some(String::new()),
            "lower_1" => Some("l".to_owned()),
            _ => None,
        };
        let mut missing = Vec::new();
        let out = substitute(
            text,
            &lookup,
            &mut |n| missing.push(n.to_owned()),
            MAX_OUTPUT,
        );
        (out, missing)
    }

    fn ok(text: &str) -> String {
        run(text).0.unwrap()
    }

    #[test]
    fn plain_and_braced_names() {
        assert_eq!(ok("no vars"), "no vars");
        assert_eq!(ok("$SET-$lower_1/${SET}x"), "v-l/vx");
        assert_eq!(ok("$$SET costs $$5"), "$SET costs $5");
        // A `$` that starts neither a name, `{` nor `$$` is literal (a bcrypt hash).
        assert_eq!(ok("${NOPE:-$2a$14$SET}"), "$2a$14v");
        assert_eq!(ok("$1 cost $ a$-b $} $"), "$1 cost $ a$-b $} $");
        let (out, missing) = run("a${NOPE}b$NOPE2");
        assert_eq!(out.unwrap(), "ab");
        assert_eq!(missing, ["NOPE", "NOPE2"]);
    }

    #[test]
    fn every_operator() {
        assert_eq!(ok("${SET:-d} ${EMPTY:-d} ${NOPE:-d}"), "v d d");
        assert_eq!(ok("${SET-d} ${EMPTY-d} ${NOPE-d}"), "v  d");
        assert_eq!(ok("${SET:+a} ${EMPTY:+a} ${NOPE:+a}"), "a  ");
        assert_eq!(ok("${SET+a} ${EMPTY+a} ${NOPE+a}"), "a a ");
        assert_eq!(ok("${SET:?e} ${EMPTY?e}"), "v ");
        assert_eq!(
            run("${EMPTY:?set it in .env}").0.unwrap_err(),
            "required variable EMPTY is missing a value: set it in .env"
        );
        assert_eq!(
            run("${NOPE?}").0.unwrap_err(),
            "required variable NOPE is missing a value: "
        );
        // Operators with a default are not "unset" warnings.
        assert!(run("${NOPE:-x}").1.is_empty());
    }

    #[test]
    fn nesting() {
        assert_eq!(ok("${NOPE:-${ALSO:-${SET}}}"), "v");
        assert_eq!(ok("${NOPE:-a-$SET-b}"), "a-v-b");
        assert_eq!(ok("${SET:+[${SET}]}"), "[v]");
        // Cases checked against docker-compose v2.40.3 `config`.
        assert_eq!(ok("${NOPE:-a}}"), "a}");
        assert_eq!(ok("${NOPE-a-b} ${SET}} $SET}"), "a-b v} v}");
        assert_eq!(ok("${NOPE:-${SET}x}y"), "vxy");
        assert_eq!(ok("${NOPE:-{a}}"), "{a}");
        assert_eq!(ok("${NOPE:-$} ${NOPE:-$$} ${NOPE:-}"), "$ $ ");
        assert_eq!(ok("${NOPE:-${X:-1}-${Y:-2}}"), "1-2");
        assert_eq!(
            run("${NOPE?x:-y}").0.unwrap_err(),
            "required variable NOPE is missing a value: x:-y"
        );
        assert_eq!(
            run("${NOPE:?${SET} is needed}").0.unwrap_err(),
            "required variable NOPE is missing a value: v is needed"
        );
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in [
            "${", "${SET", "${1A}", "${SET!x}", "${}", "${SET:x}", "${SET x}", "${ SET}",
        ] {
            let e = run(bad).0.unwrap_err();
            assert!(e.contains("invalid interpolation"), "{bad}: {e}");
        }
    }
}
