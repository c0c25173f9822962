//! Compose's dotenv syntax (`.env` and `env_file:`), as compose-go's `dotenv` parser reads it:
//! `KEY=value` lines, `#` comments, an optional `export ` prefix, a bare `KEY` taking its value
//! from the environment (left out when unset); 'single quotes' are literal, "double quotes" know
//! `\n \t \r \\ \" \$` and may span lines; unquoted values are trimmed and end at ` #`. Double
//! quoted and unquoted values are interpolated, with the environment first and then the keys
//! defined earlier in the same file.

use super::interpolate;

/// Entries in file order; a later duplicate overrides an earlier one when collected.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut budget = interpolate::MAX_OUTPUT;
    let mut line_no = 0;
    let mut lines = text.split('\n');
    while let Some(raw) = lines.next() {
        line_no += 1;
        let start = line_no;
        let line = raw.trim_start();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let key_len = line
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
            .count();
        let (key, rest) = line.split_at(key_len);
        if key.is_empty() {
            return Err((
                start,
                "expected KEY=value (a key is letters, digits and _ . -)".into(),
            ));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let lookup = |name: &str| {
            env(name).or_else(|| {
                entries
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let Some(value) = rest.strip_prefix('=') else {
            if rest.trim_end().is_empty() || rest.starts_with('#') {
                if let Some(value) = lookup(key) {
                    entries.push((key.to_owned(), value));
                }
                continue;
            }
            return Err((start, format!("expected = after {key}")));
        };
        let value = value.trim_start_matches([' ', '\t']);
        let parsed = match value.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                // The value runs to the closing quote, possibly on a later line.
                let mut body = value[1..].to_owned();
                let end = loop {
                    if let Some(end) = closing_quote(&body, quote) {
                        break end;
                    }
                    match lines.next() {
                        Some(more) => {
                            line_no += 1;
                            body.push('\n');
                            body.push_str(more);
                        }
                        None => return Err((start, format!("the {quote} quote is not closed"))),
                    }
                };
                let after = body[end + 1..].trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err((
                        start,
                        format!("unexpected {after:?} after the closing quote"),
                    ));
                }
                let inner = &body[..end];
                if quote == '\'' {
                    inner.to_owned()
                } else {
                    expand(&unescape(inner), &lookup, &mut budget).map_err(|e| (start, e))?
                }
            }
            _ => {
                let value = match value.find(" #") {
                    Some(at) => &value[..at],
                    None => value,
                };
                expand(value.trim(), &lookup, &mut budget).map_err(|e| (start, e))?
            }
        };
        entries.push((key.to_owned(), parsed));
    }
    Ok(entries)
}

/// `text` interpolated, taking its length from what is left of the file's `budget`.
fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    budget: &mut usize,
) -> Result<String, String> {
    let out = interpolate::substitute(text, lookup, &mut |_| {}, *budget)?;
    *budget -= out.len();
    Ok(out)
}

/// The index of the quote that ends `body` (a double quote can be escaped).
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Double-quote escapes; `\$` stays `$$` so that expansion makes it one literal `$`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('$') => out.push_str("$$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "FROM_ENV").then(|| "outside".to_owned())
    }

    fn parse_ok(text: &str) -> Vec<(String, String)> {
        parse(text, &env).unwrap()
    }

    fn pairs(entries: &[(String, String)]) -> Vec<(&str, &str)> {
        entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn compose_dotenv_syntax() {
        let entries = parse_ok(
            "# comment\n\nexport A=1\nB = two words  # note\nC='lit $A \\n'\nD=\"x\\ty\\\"z\\$A\"\n\
             E=${A}-$FROM_ENV\nFROM_ENV\nMISSING\nF=\"multi\nline\"\nG=a#b\nH=\n",
        );
        assert_eq!(
            pairs(&entries),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $A \\n"),
                ("D", "x\ty\"z$A"),
                ("E", "1-outside"),
                ("FROM_ENV", "outside"),
                ("F", "multi\nline"),
                ("G", "a#b"),
                ("H", ""),
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\n=2\n", &env).unwrap_err().0, 2);
        assert_eq!(parse("A=1\nB x\n", &env).unwrap_err().0, 2);
        let e = parse("A=1\nB=\"open\nC=2\n", &env).unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("not closed"), "{e:?}");
        assert_eq!(parse("A=${B:?needed}\n", &env).unwrap_err().0, 1);
    }

    #[test]
    fn values_that_expand_each_other_end_in_an_error_not_gigabytes() {
        // Found by fuzz/ (dotenv): each line doubling the one before, 40 lines ask for 2^40
        // bytes.
        let mut text = String::from("A0=xxxxxxxx\n");
        for i in 1..40 {
            text.push_str(&format!("A{i}=${{A{}}}$A{}\n", i - 1, i - 1));
        }
        let (line, message) = parse(&text, &env).unwrap_err();
        // A19 (line 20) is 8 bytes doubled 19 times, 4 MiB; the values before take 4 MiB too.
        assert_eq!(line, 20, "{message}");
        assert!(message.contains("more than 4 MiB"), "{message}");
        assert!(parse("A=1\nB=$A$A\n", &env).is_ok());
    }
}
