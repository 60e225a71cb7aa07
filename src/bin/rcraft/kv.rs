//! `rcraft kv`: the key-value client, single-shot (the command as arguments) or pipe mode
//! (one command per stdin line, one JSON object per stdout line, flushed each time).

use crate::cluster::{ClusterArgs, client_options, cluster_of, tls_of, token_of};
use crate::json::bytes_value;
use crate::kv_line::{KvLine, parse_line, parse_words};
use crate::{EXIT_FAILED, EXIT_USAGE, usage_error};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use rcraft::client::ClientOptions;
use rcraft::kv_client::{CasOutcome, KvClient};
use rcraft::wire::ReadMode;
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
    /// How `get` and `scan` read: `linearizable` (the leader, after confirming it leads, or
    /// from its lease when the cluster runs lease reads), `lease` (the leader's lease; refused
    /// unless the servers run with `--lease-reads on`) or `follower` (the node given first in
    /// `--servers`, or any node the client is connected to, once the leader confirmed a read
    /// index; as fresh as `linearizable`).
    #[arg(long, value_name = "MODE", default_value = "linearizable",
          value_parser = PossibleValuesParser::new(ReadMode::ALL.map(ReadMode::name))
              .try_map(|name| name.parse::<ReadMode>()))]
    read_mode: ReadMode,
    /// A single command (`put KEY VALUE`, `get KEY`, `del KEY`, `cas KEY EXPECTED NEW`,
    /// `scan PREFIX [LIMIT]`); flags may come before or after it, and words after `--` are
    /// taken as they are (`-- put k -1`). Without it, commands are read from stdin, one per
    /// line, as words or as a JSON object (`{"op":"put","key":"a b","value":"c"}`).
    #[arg(value_name = "COMMAND")]
    command: Vec<String>,
}

/// Carry out one command and render its JSON line; the bool is true on success.
fn run_kv_line(client: &mut KvClient, line: &KvLine) -> (String, bool) {
    let result = match line {
        KvLine::Put(key, value) => client
            .put(key.as_bytes(), value.as_bytes())
            .map(|()| json!({"ok": true})),
        KvLine::Get(key) => client
            .get(key.as_bytes())
            .map(|value| json!({"ok": true, "value": bytes_value(value.as_deref())})),
        KvLine::Del(key) => client.delete(key.as_bytes()).map(|()| json!({"ok": true})),
        KvLine::Cas(key, expected, new) => {
            let expected = expected.as_ref().map(String::as_bytes);
            client
                .cas(key.as_bytes(), expected, new.as_bytes())
                .map(|outcome| cas_json(&outcome))
        }
        KvLine::Scan(prefix, limit) => client
            .scan(prefix.as_bytes(), *limit)
            .map(|scan| scan_json(&scan.entries, scan.more)),
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

fn scan_json(entries: &[(Vec<u8>, Vec<u8>)], more: bool) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(key, value)| {
            let (key, value) = (bytes_value(Some(key)), bytes_value(Some(value)));
            json!({"key": key, "value": value})
        })
        .collect();
    json!({"ok": true, "entries": entries, "more": more})
}

fn failure_json(definite: bool, message: &str) -> String {
    json!({"ok": false, "definite": definite, "error": message}).to_string()
}

pub(crate) fn kv(args: &KvArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("kv", &e),
    };
    let options = match token_of(&args.cluster).and_then(|t| Ok((t, tls_of(&args.cluster)?))) {
        Ok((token, tls)) => ClientOptions {
            token,
            tls,
            read_mode: args.read_mode,
            ..client_options(args.timeout_ms, cluster_id)
        },
        Err(e) => return usage_error("kv", &e),
    };
    let mut client = match KvClient::new(&servers, options) {
        Ok(client) => client,
        Err(e) => return usage_error("kv", &e),
    };
    if args.command.is_empty() {
        kv_pipe(&mut client)
    } else {
        kv_single(&mut client, &args.command)
    }
}

fn kv_single(client: &mut KvClient, words: &[String]) -> ExitCode {
    let tokens: Vec<&str> = words.iter().map(String::as_str).collect();
    let (json, succeeded, status) = match parse_words(&tokens) {
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
fn kv_pipe(client: &mut KvClient) -> ExitCode {
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
            Ok(text) => match parse_line(text) {
                Ok(line) => run_kv_line(client, &line).0,
                Err(why) => failure_json(true, &why),
            },
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
