//! [`KvClient`]: the built-in key-value store's client, the KV codec on top of the generic
//! [`Client`] (which carries opaque commands and queries for any state machine).
//!
//! Like the `Client` it wraps, a `KvClient` is owned by one thread. It checks the store's
//! limits before sending (a refused request is a definite `InvalidInput`), encodes
//! [`KvCommand`]s, and decodes [`KvResponse`]s; an answer the store refused
//! (`KvResponse::Error`) is a definite `ClientError::Server`.

use crate::client::{Client, ClientError, ClientOptions, Result};
use crate::kv::{KEY_BYTES_MAX, KvCommand, KvResponse, SCAN_LIMIT_MAX, VALUE_BYTES_MAX};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};

/// Decoding a read's answer: a failure there is definite (a read changes nothing).
const READ: bool = true;
/// Decoding a write's answer: a failure there leaves the outcome unknown.
const WRITE: bool = false;

/// Outcome of a compare-and-swap through [`KvClient::cas`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// True when the new value was stored.
    pub swapped: bool,
    /// When not swapped, the value the key holds (`None` when absent).
    pub current: Option<Vec<u8>>,
}

/// Outcome of a [`KvClient::scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanResult {
    /// `(key, value)` pairs in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// True when more keys match than were answered.
    pub more: bool,
}

/// A client of the built-in key-value store. It dereferences to the generic [`Client`], so
/// leader discovery, status, membership and snapshot calls stay at hand.
pub struct KvClient {
    client: Client,
}

impl Deref for KvClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for KvClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl From<Client> for KvClient {
    fn from(client: Client) -> KvClient {
        KvClient { client }
    }
}

impl KvClient {
    /// A client of the KV cluster at `servers`; see [`Client::new`].
    pub fn new(servers: &[SocketAddr], options: ClientOptions) -> Result<KvClient> {
        Client::new(servers, options).map(KvClient::from)
    }

    /// A client connected to one reachable node; see [`Client::connect`].
    pub fn connect(servers: &[SocketAddr], options: ClientOptions) -> Result<KvClient> {
        Client::connect(servers, options).map(KvClient::from)
    }

    /// The generic client underneath.
    pub fn into_inner(self) -> Client {
        self.client
    }

    /// Store `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let command = KvCommand::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.kv_write(&command).and_then(|r| expect_done(r, "put"))
    }

    /// Remove `key` (succeeds when absent).
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let command = KvCommand::Delete { key: key.to_vec() };
        self.kv_write(&command).and_then(|r| expect_done(r, "del"))
    }

    /// Linearizable read of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let command = KvCommand::Get { key: key.to_vec() };
        check_kv_limits(&command)?;
        let result = self.client.query(command.encode())?;
        match decode_kv(&result.response, READ)? {
            KvResponse::Value(value) => Ok(value),
            other => Err(unexpected_kv(other, "get", READ)),
        }
    }

    /// Set `key` to `new` if it holds `expected` (`None`: if it is absent).
    pub fn cas(&mut self, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome> {
        let command = KvCommand::Cas {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        match self.kv_write(&command)? {
            KvResponse::Cas { swapped, current } => Ok(CasOutcome { swapped, current }),
            other => Err(unexpected_kv(other, "cas", WRITE)),
        }
    }

    /// The keys starting with `prefix` in key order, at most `limit` (1 to
    /// [`SCAN_LIMIT_MAX`]) of them, as a linearizable read; [`ScanResult::more`] says whether
    /// more keys match.
    pub fn scan(&mut self, prefix: &[u8], limit: u32) -> Result<ScanResult> {
        let command = KvCommand::Scan {
            prefix: prefix.to_vec(),
            limit,
        };
        check_kv_limits(&command)?;
        let result = self.client.query(command.encode())?;
        match decode_kv(&result.response, READ)? {
            KvResponse::Entries { entries, more } => Ok(ScanResult { entries, more }),
            other => Err(unexpected_kv(other, "scan", READ)),
        }
    }

    fn kv_write(&mut self, command: &KvCommand) -> Result<KvResponse> {
        check_kv_limits(command)?;
        let result = self.client.submit(command.encode())?;
        decode_kv(&result.response, WRITE)
    }
}

fn check_kv_limits(command: &KvCommand) -> Result<()> {
    let (key, value) = match command {
        KvCommand::Put { key, value } => (key, Some(value)),
        KvCommand::Get { key } | KvCommand::Delete { key } => (key, None),
        KvCommand::Scan { prefix, limit } => {
            if !(1..=SCAN_LIMIT_MAX).contains(limit) || prefix.len() > KEY_BYTES_MAX {
                let why = format!(
                    "scan of a {}-byte prefix with limit {limit}: the prefix may have up to \
                     {KEY_BYTES_MAX} bytes and the limit must be 1 to {SCAN_LIMIT_MAX}",
                    prefix.len()
                );
                return Err(ClientError::InvalidInput(why));
            }
            return Ok(());
        }
        KvCommand::Cas { key, new, expected } => {
            if let Some(expected) = expected.as_ref().filter(|e| e.len() > VALUE_BYTES_MAX) {
                let why = format!(
                    "expected value of {} bytes is over the limit of {VALUE_BYTES_MAX} bytes",
                    expected.len()
                );
                return Err(ClientError::InvalidInput(why));
            }
            (key, Some(new))
        }
    };
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        let why = format!(
            "key of {} bytes is outside the limits of 1 to {KEY_BYTES_MAX} bytes",
            key.len()
        );
        return Err(ClientError::InvalidInput(why));
    }
    if let Some(value) = value.filter(|v| v.len() > VALUE_BYTES_MAX) {
        let why = format!(
            "value of {} bytes is over the limit of {VALUE_BYTES_MAX} bytes",
            value.len()
        );
        return Err(ClientError::InvalidInput(why));
    }
    Ok(())
}

fn decode_kv(bytes: &[u8], read_only: bool) -> Result<KvResponse> {
    match KvResponse::decode(bytes) {
        // The store refused the command without changing anything.
        Ok(KvResponse::Error(message)) => Err(ClientError::Server {
            definite: true,
            message,
        }),
        Ok(response) => Ok(response),
        Err(e) => Err(ClientError::Protocol {
            definite: read_only,
            message: format!("undecodable KV response: {e}"),
        }),
    }
}

fn expect_done(response: KvResponse, what: &str) -> Result<()> {
    match response {
        KvResponse::Done => Ok(()),
        other => Err(unexpected_kv(other, what, WRITE)),
    }
}

fn unexpected_kv(response: KvResponse, what: &str, read_only: bool) -> ClientError {
    ClientError::Protocol {
        definite: read_only,
        message: format!("unexpected KV answer to {what}: {response:?}"),
    }
}
