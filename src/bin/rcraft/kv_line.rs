//! One `rcraft kv` command, parsed from words (`put KEY VALUE`, as arguments or one stdin
//! line) or from a JSON object (`{"op":"put","key":"a b","value":"c d"}`, one stdin line), so
//! keys and values with spaces work in pipe mode too. Runs on the main thread.

use crate::json::quoted;
use serde_json::{Map, Value};

/// Entries `scan` lists when no limit is given.
pub(crate) const SCAN_LIMIT_DEFAULT: u32 = 100;

/// One command, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KvLine {
    Put(String, String),
    Get(String),
    Del(String),
    /// Key, expected value (`None`: the key must not exist; JSON form only), new value.
    Cas(String, Option<String>, String),
    /// Prefix and most entries.
    Scan(String, u32),
}

const EXPECTED: &str = "expected put, get, del, cas or scan";

/// A stdin line: a JSON object when it starts with `{`, else words split at whitespace.
pub(crate) fn parse_line(text: &str) -> Result<KvLine, String> {
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let tokens: Vec<&str> = text.split_whitespace().collect();
    parse_words(&tokens)
}

/// The word form: `put KEY VALUE`, `get KEY`, `del KEY`, `cas KEY EXPECTED NEW`,
/// `scan PREFIX [LIMIT]`.
pub(crate) fn parse_words(tokens: &[&str]) -> Result<KvLine, String> {
    let owned = |i: usize| tokens[i].to_string();
    match tokens {
        [] => Err(format!("empty command ({EXPECTED})")),
        ["put", _, _] => Ok(KvLine::Put(owned(1), owned(2))),
        ["get", _] => Ok(KvLine::Get(owned(1))),
        ["del", _] => Ok(KvLine::Del(owned(1))),
        ["cas", _, _, _] => Ok(KvLine::Cas(owned(1), Some(owned(2)), owned(3))),
        ["scan", _] => Ok(KvLine::Scan(owned(1), SCAN_LIMIT_DEFAULT)),
        ["scan", _, limit] => Ok(KvLine::Scan(owned(1), parse_limit(limit)?)),
        ["put", ..] => Err("usage: put KEY VALUE".to_string()),
        ["get", ..] => Err("usage: get KEY".to_string()),
        ["del", ..] => Err("usage: del KEY".to_string()),
        ["cas", ..] => Err("usage: cas KEY EXPECTED NEW".to_string()),
        ["scan", ..] => Err("usage: scan PREFIX [LIMIT]".to_string()),
        [other, ..] => Err(format!("unknown command {} ({EXPECTED})", quoted(other))),
    }
}

fn parse_limit(text: &str) -> Result<u32, String> {
    let max = rcraft::kv::SCAN_LIMIT_MAX;
    match text.parse::<u32>() {
        Ok(limit @ 1..) if limit <= max => Ok(limit),
        _ => Err(format!("scan limit {} must be 1 to {max}", quoted(text))),
    }
}

/// The JSON form: `{"op":"put","key":K,"value":V}`, `{"op":"get","key":K}`,
/// `{"op":"del","key":K}`, `{"op":"cas","key":K,"expected":E_OR_NULL,"new":N}`,
/// `{"op":"scan","prefix":P,"limit":L}` (`limit` optional).
pub(crate) fn parse_json(text: &str) -> Result<KvLine, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON command: {e}"))?;
    let Value::Object(object) = value else {
        return Err("a JSON command must be an object".to_string());
    };
    let text = |name: &str| field(&object, name);
    match object.get("op").and_then(Value::as_str) {
        Some("put") => Ok(KvLine::Put(text("key")?, text("value")?)),
        Some("get") => Ok(KvLine::Get(text("key")?)),
        Some("del") => Ok(KvLine::Del(text("key")?)),
        Some("cas") => {
            let expected = match object.get("expected") {
                Some(Value::Null) => None,
                _ => Some(text("expected")?),
            };
            Ok(KvLine::Cas(text("key")?, expected, text("new")?))
        }
        Some("scan") => {
            let limit = match object.get("limit") {
                None | Some(Value::Null) => SCAN_LIMIT_DEFAULT,
                Some(limit) => parse_limit(&limit.to_string())?,
            };
            Ok(KvLine::Scan(text("prefix")?, limit))
        }
        Some(other) => Err(format!("unknown op {} ({EXPECTED})", quoted(other))),
        None => Err(format!("a JSON command needs \"op\" ({EXPECTED})")),
    }
}

/// The string field `name` of a JSON command.
fn field(object: &Map<String, Value>, name: &str) -> Result<String, String> {
    match object.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(format!("\"{name}\" must be a string")),
        None => Err(format!("missing \"{name}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_lines_parse() {
        assert_eq!(
            parse_words(&["put", "k", "v"]),
            Ok(KvLine::Put("k".into(), "v".into()))
        );
        assert_eq!(parse_words(&["get", "k"]), Ok(KvLine::Get("k".into())));
        assert_eq!(parse_words(&["del", "k"]), Ok(KvLine::Del("k".into())));
        assert!(matches!(
            parse_words(&["cas", "k", "a", "b"]),
            Ok(KvLine::Cas(..))
        ));
        assert_eq!(
            parse_words(&["scan", "p"]),
            Ok(KvLine::Scan("p".into(), SCAN_LIMIT_DEFAULT))
        );
        assert_eq!(
            parse_words(&["scan", "p", "7"]),
            Ok(KvLine::Scan("p".into(), 7))
        );
        for bad in [
            &[][..],
            &["put", "k"],
            &["get"],
            &["cas", "k", "a"],
            &["PUT", "k", "v"],
            &["scan", "p", "0"],
            &["scan", "p", "x"],
        ] {
            assert!(parse_words(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_lines_parse() {
        assert_eq!(
            parse_line(r#" {"op":"put","key":"a b","value":"c d"}"#),
            Ok(KvLine::Put("a b".into(), "c d".into()))
        );
        assert_eq!(
            parse_line(r#"{"op":"cas","key":"k","expected":null,"new":"n"}"#),
            Ok(KvLine::Cas("k".into(), None, "n".into()))
        );
        assert_eq!(
            parse_line(r#"{"op":"scan","prefix":""}"#),
            Ok(KvLine::Scan(String::new(), SCAN_LIMIT_DEFAULT))
        );
        assert_eq!(parse_line("get  k "), Ok(KvLine::Get("k".into())));
        for (bad, why) in [
            (r#"{"op":"get"}"#, "missing \"key\""),
            (r#"{"op":"get","key":1}"#, "\"key\" must be a string"),
            (r#"{"key":"k"}"#, "needs \"op\""),
            (r#"{"op":"nope"}"#, "unknown op"),
            ("{not json", "not a JSON command"),
            (r#"{"op":"scan","prefix":"","limit":0}"#, "scan limit"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
