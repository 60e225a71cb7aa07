//! The cRaft seed's client, in Rust: connect to a cluster, submit one command, print the
//! term and index it committed at.
//!
//! ```text
//! rcraft serve --id 0 --peers 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002 --data-dir d0 &
//! ... (nodes 1 and 2 likewise)
//! cargo run --example client -- 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002 greeting hello
//! ```
//!
//! The command is a put for the built-in key-value store; an embedding with its own state
//! machine would submit its own bytes the same way.

use rcraft::client::ClientOptions;
use rcraft::kv::{KvCommand, KvResponse};
use rcraft::kv_client::KvClient;
use std::net::SocketAddr;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [servers, key, value] = args.as_slice() else {
        eprintln!("usage: client HOST:PORT,HOST:PORT,... KEY VALUE");
        return ExitCode::from(2);
    };
    let servers: Vec<SocketAddr> = match rcraft::config::parse_address_list("servers", servers) {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    match submit(&servers, key, value) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::from(1)
        }
    }
}

fn submit(
    servers: &[SocketAddr],
    key: &str,
    value: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = KvClient::connect(servers, ClientOptions::default())?;
    let command = KvCommand::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    let result = client.submit(command.encode())?;
    let response = KvResponse::decode(&result.response)?;
    println!(
        "term {} index {} response {response:?}",
        result.term, result.index
    );
    Ok(())
}
