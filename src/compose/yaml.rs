//! YAML 1.2 into a tree of [`Node`]s with their line numbers, from saphyr-parser's events:
//! anchors and aliases expanded, `<<` merge keys applied (explicit keys win, then the merged
//! maps in order), duplicate keys refused. Expanding aliases is bounded by [`MAX_NODES`] in the
//! whole tree and nesting by [`MAX_DEPTH`], so a "billion laughs" file is an error, not an OOM.
//! [`to_yaml`] writes a JSON value back as block YAML (for `compose config`).

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::fmt;

/// Most nodes of a document once aliases are expanded (a large compose file has a few thousand).
pub const MAX_NODES: usize = 100_000;
/// Deepest nesting of sequences and mappings (compose files use under ten levels).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain `null`, `~` or nothing.
    Null,
    /// The text, and whether it was plain (unquoted, untagged): only plain scalars are booleans
    /// or numbers to the keys that take them.
    Scalar(String, bool),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique.
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line where the node starts.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        line: usize,
        anchor: usize,
        start: usize,
    },
    Map {
        entries: Vec<(String, Node)>,
        merges: Vec<Node>,
        key: Option<(String, usize)>,
        line: usize,
        anchor: usize,
        start: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    /// Anchor id to its node and the count of nodes in it.
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
    documents: usize,
}

/// The first (only) document of `text`; an empty file is [`Value::Null`].
pub fn parse(text: &str) -> Result<Node, Error> {
    parse_strict(text).or_else(|e| match e.message.starts_with("invalid indentation") {
        true => {
            relax_flow_indentation(text).map_or(Err(e.clone()), |t| parse_strict(&t).or(Err(e)))
        }
        false => Err(e),
    })
}

fn parse_strict(text: &str) -> Result<Node, Error> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        documents: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| Error {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        builder.event(event, span.start.line())?;
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        line: 1,
    }))
}

impl Builder {
    fn event(&mut self, event: Event<'_>, line: usize) -> Result<(), Error> {
        let error = |message: String| Error { line, message };
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(error(
                        "a second YAML document (---): a compose file holds one".into(),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tagged = tag.is_some();
                let plain = style == ScalarStyle::Plain && !tagged;
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar(text.into_owned(), plain)
                };
                let start = self.nodes;
                self.count(1, line)?;
                self.finish(Node { value, line }, anchor, start)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(error(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let start = self.nodes;
                self.count(1, line)?;
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            items: Vec::new(),
                            line,
                            anchor,
                            start,
                        }
                    } else {
                        Frame::Map {
                            entries: Vec::new(),
                            merges: Vec::new(),
                            key: None,
                            line,
                            anchor,
                            start,
                        }
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, start) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        line,
                        anchor,
                        start,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            line,
                        },
                        anchor,
                        start,
                    ),
                    Some(Frame::Map {
                        entries,
                        merges,
                        line,
                        anchor,
                        start,
                        ..
                    }) => (
                        Node {
                            value: Value::Map(merge(entries, merges)?),
                            line,
                        },
                        anchor,
                        start,
                    ),
                    None => return Err(error("unbalanced YAML events".into())),
                };
                self.finish(node, anchor, start)?;
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    return Err(error("an alias (*name) to an unknown anchor".into()));
                };
                let start = self.nodes;
                self.count(size, line)?;
                self.finish(Node { line, ..node }, 0, start)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn count(&mut self, nodes: usize, line: usize) -> Result<(), Error> {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(Error {
                line,
                message: format!(
                    "more than {MAX_NODES} values once aliases are expanded (an alias bomb?)"
                ),
            });
        }
        Ok(())
    }

    /// A complete node: remembered under its anchor, then added to its parent.
    fn finish(&mut self, node: Node, anchor: usize, start: usize) -> Result<(), Error> {
        if anchor > 0 {
            self.anchors
                .insert(anchor, (node.clone(), self.nodes - start));
        }
        let line = node.line;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merges,
                key,
                ..
            }) => match key.take() {
                None => {
                    let text = match node.value {
                        Value::Scalar(text, _) => text,
                        Value::Null => String::new(),
                        _ => {
                            return Err(Error {
                                line,
                                message: "a mapping key must be a string, not a list or mapping"
                                    .into(),
                            })
                        }
                    };
                    *key = Some((text, line));
                }
                Some((name, _)) if name == "<<" => merges.push(node),
                Some((name, key_line)) => {
                    if let Some((_, first)) = entries.iter().find(|(k, _)| *k == name) {
                        return Err(Error {
                            line: key_line,
                            message: format!(
                                "key {name:?} is defined twice (first on line {})",
                                first.line
                            ),
                        });
                    }
                    entries.push((name, node));
                }
            },
        }
        Ok(())
    }
}

/// `text` with every line that starts inside a flow collection (`[ ]`, `{ }`) indented past the
/// outermost bracket, or None if there is no such line. saphyr-parser wants those lines indented
/// more than the block around them; go-yaml (libyaml) takes any indentation there, so
/// `command: [` ... `]` with the `]` at the key's column is valid to Compose.
fn relax_flow_indentation(text: &str) -> Option<String> {
    let (mut out, mut changed) = (String::with_capacity(text.len() + 64), false);
    let (mut depth, mut outer, mut quote) = (0usize, 0usize, None::<char>);
    for line in text.split_inclusive('\n') {
        if depth > 0 && quote.is_none() {
            // Bounded: a bracket far right over many lines must not take gigabytes.
            if out.len() + outer > 2 * text.len() + 4096 {
                return None;
            }
            out.extend(std::iter::repeat_n(' ', outer + 1));
            changed = true;
        }
        out.push_str(line);
        // A token starts at the line's first character, after `- `, `? `, `: ` and (in flow)
        // after `[`, `{`, `,`; only there do brackets and quotes mean anything.
        let (mut start, mut prev) = (true, ' ');
        let mut chars = line.chars().enumerate().peekable();
        while let Some((col, c)) = chars.next() {
            let next = chars.peek().map_or('\n', |&(_, n)| n);
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), _) if c == q => {
                    if q == '\'' && next == '\'' {
                        chars.next();
                    } else {
                        quote = None;
                        start = false;
                    }
                }
                (Some(_), _) => {}
                (None, '#') if prev.is_whitespace() => break,
                (None, '\'' | '"') if start => quote = Some(c),
                (None, '[' | '{') if start || depth > 0 => {
                    if depth == 0 {
                        outer = col;
                    }
                    depth += 1;
                    start = true;
                }
                (None, ']' | '}') if depth > 0 => depth -= 1,
                (None, ',') if depth > 0 => start = true,
                (None, '-' | '?' | ':') if next.is_whitespace() || (depth > 0 && c == ':') => {
                    start = true
                }
                (None, _) if c.is_whitespace() => {}
                (None, _) => start = false,
            }
            prev = c;
        }
    }
    changed.then_some(out)
}

/// `<<: *a` or `<<: [*a, *b]`: keys of the merged maps not already set are added.
fn merge(
    mut entries: Vec<(String, Node)>,
    merges: Vec<Node>,
) -> Result<Vec<(String, Node)>, Error> {
    let mut sources = Vec::new();
    for node in merges {
        match node.value {
            Value::Map(map) => sources.push(map),
            Value::Seq(items) => {
                for item in items {
                    match item.value {
                        Value::Map(map) => sources.push(map),
                        _ => return Err(merge_error(item.line)),
                    }
                }
            }
            _ => return Err(merge_error(node.line)),
        }
    }
    for map in sources {
        for (key, value) in map {
            if !entries.iter().any(|(k, _)| *k == key) {
                entries.push((key, value));
            }
        }
    }
    Ok(entries)
}

fn merge_error(line: usize) -> Error {
    Error {
        line,
        message: "a merge key (<<) takes a mapping or a list of mappings".into(),
    }
}

/// `value` as block YAML, keys in the value's order; strings quoted when YAML would read them
/// as something else.
pub fn to_yaml(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_block(&mut out, value, 0);
    out
}

fn write_block(out: &mut String, value: &serde_json::Value, indent: usize) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match value {
        J::Object(map) => {
            for (key, item) in map {
                let key = scalar_text(key);
                out.push_str(&pad);
                // YAML allows implicit keys of up to 1024 characters: longer ones are explicit.
                if key.len() > 1024 {
                    out.push_str("? ");
                    out.push_str(&key);
                    out.push('\n');
                    out.push_str(&pad);
                } else {
                    out.push_str(&key);
                }
                out.push(':');
                write_child(out, item, indent);
            }
        }
        J::Array(items) => {
            for item in items {
                match item {
                    // `- key: value` with the other keys under the first.
                    J::Object(map) if !map.is_empty() => {
                        let mut block = String::new();
                        write_block(&mut block, item, indent + 2);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&block[indent + 2..]);
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push('-');
                        write_child(out, item, indent);
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn write_child(out: &mut String, item: &serde_json::Value, indent: usize) {
    use serde_json::Value as J;
    match item {
        J::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_block(out, item, indent + 2);
        }
        J::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_block(out, item, indent + 2);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(item));
            out.push('\n');
        }
    }
}

fn inline(value: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match value {
        J::String(text) => scalar_text(text),
        J::Object(_) => "{}".into(),
        J::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A string as a YAML scalar: plain when it reads back as the same string, else JSON-quoted
/// (a JSON string is a valid YAML double-quoted scalar).
fn scalar_text(text: &str) -> String {
    let special = text.is_empty()
        || text.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`~".contains(c) || c.is_ascii_digit())
        || text.ends_with(' ')
        || text.ends_with(':')
        || text.contains(": ")
        || text.contains(" #")
        || text.contains(|c: char| c.is_control())
        || matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | ".inf" | ".nan"
        );
    if special {
        serde_json::Value::String(text.to_owned()).to_string()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> Vec<(&str, &Node)> {
        match &node.value {
            Value::Map(entries) => entries.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            other => panic!("not a map: {other:?}"),
        }
    }

    fn text(node: &Node) -> &str {
        match &node.value {
            Value::Scalar(text, _) => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn scalars_keep_their_style_and_line() {
        let root = parse("a: 1\nb: '1'\nc:\nd: ~\ne: \"x\"\n").unwrap();
        let entries = map(&root);
        assert_eq!(entries[0].1.value, Value::Scalar("1".into(), true));
        assert_eq!(entries[1].1.value, Value::Scalar("1".into(), false));
        assert_eq!(entries[2].1.value, Value::Null);
        assert_eq!(entries[3].1.value, Value::Null);
        assert_eq!((text(entries[4].1), entries[4].1.line), ("x", 5));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let root = parse(
            "x-base: &base\n  image: a\n  restart: always\nx-more: &more\n  tty: true\n  restart: no\n\
             web:\n  <<: [*base, *more]\n  restart: unless-stopped\nlist: &l [1, 2]\ncopy: *l\n",
        )
        .unwrap();
        let entries = map(&root);
        let web: Vec<(&str, &str)> = map(entries[2].1)
            .into_iter()
            .map(|(k, v)| (k, text(v)))
            .collect();
        assert_eq!(
            web,
            [
                ("restart", "unless-stopped"),
                ("image", "a"),
                ("tty", "true")
            ]
        );
        assert_eq!(entries[3].1.value, entries[4].1.value);
        assert_eq!(entries[4].1.line, 11);
    }

    #[test]
    fn alias_bombs_depth_and_duplicates_are_errors() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("\"a\" is defined twice (first on line 1)"),
            "{e}"
        );
        assert!(parse("a: [1\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .message
            .contains("second"));
        assert!(parse("<<: 1\n").unwrap_err().message.contains("merge key"));
    }

    #[test]
    fn a_flow_collection_may_close_at_its_key_column_as_in_go_yaml() {
        let yaml = "services:\n  s:\n    command: [\n      \"sh\", \"-c\",\n\"x # ]\"\n    ]\n    \
                    labels: {\n  a: 'it''s [',\n    }\n    image: a # [\n";
        let root = parse(yaml).unwrap();
        let s = map(map(&root)[0].1)[0].1;
        let entries = map(s);
        match &entries[0].1.value {
            Value::Seq(items) => {
                assert_eq!(
                    items.iter().map(text).collect::<Vec<_>>(),
                    ["sh", "-c", "x # ]"]
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(text(map(entries[1].1)[0].1), "it's [");
        assert_eq!((entries[2].0, entries[2].1.line), ("image", 10));
        // Padding is bounded (the error stays).
        let far = format!("a: {}[\n{}]\n", " ".repeat(5000), "\n".repeat(5000));
        assert!(relax_flow_indentation(&far).is_none());
        // Block indentation errors stay errors.
        let e = parse("a:\n    b: 1\n  c: 2\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn yaml_output_reads_back() {
        let value = serde_json::json!({
            "name": "p", "services": {"web": {"command": ["echo", "a: b", "true", "", "8080"],
            "environment": {"A": "1"}, "tty": true, "empty": [], "labels": {},
            "volumes": [{"type": "bind", "source": "/a"}]}}
        });
        let out = to_yaml(&value);
        assert!(out.starts_with("name: p\nservices:\n  web:\n    command:\n      - echo\n      - \"a: b\"\n      - \"true\""), "{out}");
        let back = parse(&out).unwrap();
        let web = map(map(map(&back)[1].1)[0].1);
        assert_eq!(web[0].0, "command");
        assert!(
            out.contains("\n    volumes:\n      - source: /a\n        type: bind\n"),
            "{out}"
        );
        assert_eq!(web[5].0, "volumes");
        assert_eq!(
            map(match &web[5].1.value {
                Value::Seq(items) => &items[0],
                other => panic!("{other:?}"),
            })
            .into_iter()
            .map(|(k, v)| (k, text(v)))
            .collect::<Vec<_>>(),
            [("source", "/a"), ("type", "bind")]
        );
        match &web[0].1.value {
            Value::Seq(items) => assert_eq!(
                items.iter().map(text).collect::<Vec<_>>(),
                ["echo", "a: b", "true", "", "8080"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_string_ending_in_a_colon_is_quoted_so_config_output_reads_back() {
        // Found by fuzz/ (compose): `image: nginx:${UNSET}` came out of `compose config` as
        // `image: nginx:`, which reads as a mapping, not a string.
        for text in ["nginx:", "a:b:", ":"] {
            let out = to_yaml(&serde_json::json!({ "image": text }));
            let back = parse(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            assert_eq!(self::text(map(&back)[0].1), text, "{out:?}");
        }
    }

    #[test]
    fn a_key_longer_than_1024_characters_is_written_as_an_explicit_key_that_reads_back() {
        // Found by fuzz/ (compose): `environment: [<a 1100-byte name>=0]` came out of
        // `compose config` as an implicit key, which YAML limits to 1024 characters.
        let long = "K".repeat(1100);
        for value in [
            serde_json::json!({ "environment": { "B": "2", long.clone(): "0" } }),
            serde_json::json!({ "list": [{ long.clone(): { "a": 1 }, "b": [] }] }),
        ] {
            let out = to_yaml(&value);
            let back = parse(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            let top = map(&back);
            let inner = match &top[0].1.value {
                Value::Seq(items) => map(&items[0]),
                _ => map(top[0].1),
            };
            assert!(inner.iter().any(|(k, _)| *k == long), "{out}");
        }
        let short = to_yaml(&serde_json::json!({ "K".repeat(1024): 1 }));
        assert!(!short.starts_with('?'), "{short}");
    }
}
