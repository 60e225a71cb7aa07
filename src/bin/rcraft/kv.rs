//! `rcraft kv`: the key-value client, single-shot (the command as arguments) or pipe mode
//! (one command per stdin line, one JSON object per stdout line, flushed each time).

use crate::cluster::{ClusterArgs, client_options, cluster_of};
use crate::json::{bytes_value, quoted};
use crate::{EXIT_FAILED, EXIT_USAGE, usage_error};
use clap::Args;
use rcraft::client::{CasOutcome, Client};
use serde_json::{Value, json};
use std::io::{self, BufRead, Write};
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct KvArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Deadline for each command, retries included.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    timeout_ms: u64,
    /// A single command (`put KEY VALUE`, `get KEY`, `del KEY`, `cas KEY EXPECTED NEW`);
    /// without it, commands are read from stdin, one per line.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// One line of `rcraft kv` input, parsed.
#[derive(Debug, PartialEq, Eq)]
enum KvLine {
    Put(String, String),
    Get(String),
    Del(String),
    Cas(String, String, String),
}

fn parse_kv_line(tokens: &[&str]) -> Result<KvLine, String> {
    let owned = |i: usize| tokens[i].to_string();
    match tokens {
        [] => Err("empty command (expected put, get, del or cas)".to_string()),
        ["put", _, _] => Ok(KvLine::Put(owned(1), owned(2))),
        ["get", _] => Ok(KvLine::Get(owned(1))),
        ["del", _] => Ok(KvLine::Del(owned(1))),
        ["cas", _, _, _] => Ok(KvLine::Cas(owned(1), owned(2), owned(3))),
        ["put", ..] => Err("usage: put KEY VALUE".to_string()),
        ["get", ..] => Err("usage: get KEY".to_string()),
        ["del", ..] => Err("usage: del KEY".to_string()),
        ["cas", ..] => Err("usage: cas KEY EXPECTED NEW".to_string()),
        [other, ..] => Err(format!(
            "unknown command {} (expected put, get, del or cas)",
            quoted(other)
        )),
    }
}

/// Carry out one command and render its JSON line; the bool is true on success.
fn run_kv_line(client: &mut Client, line: &KvLine) -> (String, bool) {
    let result = match line {
        KvLine::Put(key, value) => client
            .put(key.as_bytes(), value.as_bytes())
            .map(|()| json!({"ok": true})),
        KvLine::Get(key) => client
            .get(key.as_bytes())
            .map(|value| json!({"ok": true, "value": bytes_value(value.as_deref())})),
        KvLine::Del(key) => client.delete(key.as_bytes()).map(|()| json!({"ok": true})),
        KvLine::Cas(key, expected, new) => client
            .cas(key.as_bytes(), Some(expected.as_bytes()), new.as_bytes())
            .map(|outcome| cas_json(&outcome)),
    };
    match result {
        Ok(json) => (json.to_string(), true),
        Err(e) => (failure_json(e.is_definite(), &e.to_string()), false),
    }
}

fn cas_json(outcome: &CasOutcome) -> Value {
    if outcome.swapped {
        json!({"ok": true, "swapped": true})
    } else {
        let current = bytes_value(outcome.current.as_deref());
        json!({"ok": true, "swapped": false, "value": current})
    }
}

fn failure_json(definite: bool, message: &str) -> String {
    json!({"ok": false, "definite": definite, "error": message}).to_string()
}

pub(crate) fn kv(args: &KvArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("kv", &e),
    };
    let options = client_options(args.timeout_ms, cluster_id);
    let mut client = match Client::new(&servers, options) {
        Ok(client) => client,
        Err(e) => return usage_error("kv", &e),
    };
    if args.command.is_empty() {
        kv_pipe(&mut client)
    } else {
        kv_single(&mut client, &args.command)
    }
}

fn kv_single(client: &mut Client, words: &[String]) -> ExitCode {
    let tokens: Vec<&str> = words.iter().map(String::as_str).collect();
    let (json, succeeded, status) = match parse_kv_line(&tokens) {
        Ok(line) => {
            let (json, ok) = run_kv_line(client, &line);
            (json, ok, EXIT_FAILED)
        }
        Err(why) => (failure_json(true, &why), false, EXIT_USAGE),
    };
    let _ = writeln!(io::stdout().lock(), "{json}");
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status)
    }
}

/// One JSON line per input line, in order, flushed each time. A line that is not valid
/// UTF-8 or not a command is a definite failure and reading goes on.
fn kv_pipe(client: &mut Client) -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => return usage_error("kv", &format!("reading stdin: {e}")),
        }
        let json = match std::str::from_utf8(&raw) {
            Ok(text) => {
                let tokens: Vec<&str> = text.split_whitespace().collect();
                match parse_kv_line(&tokens) {
                    Ok(line) => run_kv_line(client, &line).0,
                    Err(why) => failure_json(true, &why),
                }
            }
            Err(_) => failure_json(true, "line is not valid UTF-8"),
        };
        // A closed stdout (the reader went away) ends the session quietly.
        if writeln!(out, "{json}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_lines_parse() {
        assert_eq!(
            parse_kv_line(&["put", "k", "v"]),
            Ok(KvLine::Put("k".into(), "v".into()))
        );
        assert_eq!(parse_kv_line(&["get", "k"]), Ok(KvLine::Get("k".into())));
        assert_eq!(parse_kv_line(&["del", "k"]), Ok(KvLine::Del("k".into())));
        assert!(matches!(
            parse_kv_line(&["cas", "k", "a", "b"]),
            Ok(KvLine::Cas(..))
        ));
        for bad in [
            &[][..],
            &["put", "k"],
            &["get"],
            &["cas", "k", "a"],
            &["PUT", "k", "v"],
        ] {
            assert!(parse_kv_line(bad).is_err(), "{bad:?}");
        }
    }

    fn cas_json_text(outcome: &CasOutcome) -> String {
        cas_json(outcome).to_string()
    }

    #[test]
    fn outputs_match_the_contract() {
        assert_eq!(
            cas_json_text(&CasOutcome {
                swapped: false,
                current: None
            }),
            r#"{"ok":true,"swapped":false,"value":null}"#
        );
        assert_eq!(
            cas_json_text(&CasOutcome {
                swapped: false,
                current: Some(b"7".to_vec())
            }),
            r#"{"ok":true,"swapped":false,"value":"7"}"#
        );
        assert_eq!(
            cas_json_text(&CasOutcome {
                swapped: true,
                current: None
            }),
            r#"{"ok":true,"swapped":true}"#
        );
        assert_eq!(
            failure_json(false, "x"),
            r#"{"ok":false,"definite":false,"error":"x"}"#
        );
    }
}
