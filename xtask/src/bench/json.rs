//! JSON written by hand (xtask is std-only): a value tree and a pretty printer.

use std::fmt::Write;

pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    pub(crate) fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// A number, or `null` for `None` and for NaN or infinity (which JSON cannot hold).
    pub(crate) fn num(n: impl Into<Option<f64>>) -> Json {
        match n.into() {
            Some(n) if n.is_finite() => Json::Num(n),
            _ => Json::Null,
        }
    }

    /// Pretty-printed, two spaces per level, with a final newline.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, depth: usize| out.extend(std::iter::repeat_n("  ", depth));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                let _ = write!(out, "{}", *n as i64);
            }
            Json::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => escape_into(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, depth + 1);
                    item.write(out, depth + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    pad(out, depth + 1);
                    escape_into(out, key);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped(r#"say "hi"\now"#), r#""say \"hi\"\\now""#);
        assert_eq!(escaped("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(escaped("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(escaped("µs – ×"), "\"µs – ×\"");
    }

    #[test]
    fn renders_nested_values() {
        let value = Json::Obj(vec![
            ("n", Json::num(3.0)),
            ("x", Json::num(0.25)),
            ("nan", Json::num(f64::NAN)),
            ("none", Json::num(None)),
            ("ok", Json::Bool(true)),
            ("list", Json::Arr(vec![Json::str("a"), Json::Arr(vec![])])),
        ]);
        let expected = "{\n  \"n\": 3,\n  \"x\": 0.25,\n  \"nan\": null,\n  \"none\": null,\n  \"ok\": true,\n  \"list\": [\n    \"a\",\n    []\n  ]\n}\n";
        assert_eq!(value.render(), expected);
    }
}
