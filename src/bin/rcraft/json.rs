//! JSON helpers shared by the sub-commands; every JSON line is built with `serde_json`.

use serde_json::Value;

/// A stored value as a JSON string (invalid UTF-8 replaced), or `null` when absent.
pub(crate) fn bytes_value(value: Option<&[u8]>) -> Value {
    match value {
        Some(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        None => Value::Null,
    }
}

/// `text` as a JSON string literal, for messages that quote what was given.
pub(crate) fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(quoted("é"), "\"é\"");
        assert_eq!(bytes_value(None).to_string(), "null");
        assert_eq!(bytes_value(Some(&[0xff])).to_string(), "\"\u{fffd}\"");
    }
}
