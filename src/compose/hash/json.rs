//! The JSON that Go's `encoding/json` `Marshal` writes, for compose's config hash: no spaces,
//! struct fields in the order the writer gives them, map keys sorted (a `BTreeMap` is), strings
//! with Go's escapes (`<`, `>`, `&`, U+2028 and U+2029 as `\u003c`..., `\b`, `\f`), and the
//! custom forms of compose-go's types (durations as Go prints them, byte sizes as quoted
//! decimals).

use std::collections::BTreeMap;

/// A value as `json.Marshal` writes it; [`Value::omit`] is what `omitempty` leaves out.
pub trait Value {
    fn write(&self, out: &mut String);
    /// `false`, `0`, `""`, an empty slice or map, a nil pointer (`None`); never a struct.
    fn omit(&self) -> bool {
        false
    }
}

/// A struct's fields, in declaration order.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    /// A field without `omitempty`.
    pub fn always(&mut self, key: &str, value: &dyn Value) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
        value.write(self.out);
        self
    }

    /// A field with `omitempty`.
    pub fn field(&mut self, key: &str, value: &dyn Value) -> &mut Self {
        if value.omit() {
            return self;
        }
        self.always(key, value)
    }

    pub fn end(&mut self) {
        self.out.push('}');
    }
}

/// Go's `encodeState.string` with HTML escaping on (what `json.Marshal` does).
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Value for &str {
    fn write(&self, out: &mut String) {
        string(out, self)
    }
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

impl Value for String {
    fn write(&self, out: &mut String) {
        string(out, self)
    }
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

impl Value for bool {
    fn write(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" })
    }
    fn omit(&self) -> bool {
        !*self
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut String) {
                out.push_str(&self.to_string())
            }
            fn omit(&self) -> bool {
                *self == 0
            }
        }
    )*};
}
integer!(i64, u64, u32, u16);

/// A `float32` (`cpus`): Go's shortest form, like Rust's for the values compose files hold.
impl Value for f32 {
    fn write(&self, out: &mut String) {
        out.push_str(&self.to_string())
    }
    fn omit(&self) -> bool {
        *self == 0.0
    }
}

/// A pointer: `null` when nil, omitted by `omitempty` then only.
impl<T: Value> Value for Option<T> {
    fn write(&self, out: &mut String) {
        match self {
            Some(value) => value.write(out),
            None => out.push_str("null"),
        }
    }
    fn omit(&self) -> bool {
        self.is_none()
    }
}

impl<T: Value> Value for [T] {
    fn write(&self, out: &mut String) {
        out.push('[');
        for (i, value) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            value.write(out);
        }
        out.push(']');
    }
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Value> Value for Vec<T> {
    fn write(&self, out: &mut String) {
        self.as_slice().write(out)
    }
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Value> Value for BTreeMap<String, T> {
    fn write(&self, out: &mut String) {
        let mut object = Object::new(out);
        for (key, value) in self {
            object.always(key, value);
        }
        object.end();
    }
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

/// compose-go's `UnitBytes`: a quoted decimal.
pub struct Bytes(pub i64);

impl Value for Bytes {
    fn write(&self, out: &mut String) {
        out.push_str(&format!("\"{}\"", self.0))
    }
    fn omit(&self) -> bool {
        self.0 == 0
    }
}

/// compose-go's `Duration` (nanoseconds): Go's `time.Duration.String()`, quoted.
pub struct GoDuration(pub u64);

impl Value for GoDuration {
    fn write(&self, out: &mut String) {
        string(out, &go_duration(self.0))
    }
    fn omit(&self) -> bool {
        self.0 == 0
    }
}

/// `time.Duration.String()`: `0s`, `750ms`, `1.5s`, `1m30s`, `2h0m0s`.
pub fn go_duration(ns: u64) -> String {
    const SECOND: u64 = 1_000_000_000;
    match ns {
        0 => "0s".into(),
        1..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{}µs", fraction(ns, 1_000)),
        1_000_000..=999_999_999 => format!("{}ms", fraction(ns, 1_000_000)),
        _ => {
            let (minutes, rest) = (ns / (60 * SECOND), ns % (60 * SECOND));
            let seconds = format!("{}s", fraction(rest, SECOND));
            match (minutes / 60, minutes % 60) {
                (0, 0) => seconds,
                (0, m) => format!("{m}m{seconds}"),
                (h, m) => format!("{h}h{m}m{seconds}"),
            }
        }
    }
}

/// `value / unit` with its decimals, trailing zeros dropped (`1.5`, `2`).
fn fraction(value: u64, unit: u64) -> String {
    let (whole, rest) = (value / unit, value % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let decimals = format!("{rest:0digits$}");
    format!("{whole}.{}", decimals.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        let cases = [
            (0, "0s"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (750_000_000, "750ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_250_000_000, "1h2m3.25s"),
        ];
        for (ns, text) in cases {
            assert_eq!(go_duration(ns), text);
        }
    }

    #[test]
    fn strings_with_go_escapes() {
        let mut out = String::new();
        string(&mut out, "a<b>&\"q\"\\\n\t\u{8}\u{c}\u{1}é\u{2028}\u{2029}");
        assert_eq!(
            out,
            r#""a\u003cb\u003e\u0026\"q\"\\\n\t\b\f\u0001é\u2028\u2029""#
        );
    }

    #[test]
    fn omitempty_and_pointers() {
        let mut out = String::new();
        let mut o = Object::new(&mut out);
        o.field("a", &"")
            .field("b", &0i64)
            .field("c", &Some(false))
            .always("d", &None::<Vec<String>>)
            .field("e", &Bytes(64))
            .always("f", &Vec::<String>::new());
        o.end();
        assert_eq!(out, r#"{"c":false,"d":null,"e":"64","f":[]}"#);
    }
}
