//! Where the client commands find the cluster: `--servers`, `--config` or
//! `~/craft/craft.conf`, and the cluster id for the handshake.

use clap::Args;
use rcraft::client::{Client, ClientError, ClientOptions};
use rcraft::config::{self, ConfigFile};
use rcraft::node::net::auth::Token;
use rcraft::tls::ClientTls;
use rcraft::wire::{NodeId, NodeStatus};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the client finds the cluster.
#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// Every node's address, in id order. Without it, $RCRAFT_SERVERS, else the servers of
    /// --config (or of ~/craft/craft.conf) are used.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub(crate) servers: Option<String>,
    /// A craft.conf to take the servers and cluster id from.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Cluster id sent in the handshake [default: the file's, else rcraft's].
    #[arg(long, value_name = "N")]
    pub(crate) cluster_id: Option<String>,
    /// A file (mode 600) whose first line is the client or admin token to send, for nodes
    /// started with token files [default: $RCRAFT_TOKEN_FILE, else none].
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate (PEM) the nodes' certificates must chain to: talk TLS to nodes started
    /// with --cert-file (needs rcraft built with the `tls` feature) [default: plaintext].
    #[arg(long, value_name = "PATH")]
    pub(crate) cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for nodes started with --client-cert-auth.
    #[arg(long, value_name = "PATH")]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PATH")]
    pub(crate) key: Option<PathBuf>,
}

/// The TLS settings of `--cacert`, `--cert` and `--key`; `None` (plaintext) without
/// `--cacert`.
pub(crate) fn tls_of(args: &ClusterArgs) -> Result<Option<ClientTls>, String> {
    match &args.cacert {
        Some(ca) => ClientTls::from_files(ca, args.cert.as_deref(), args.key.as_deref())
            .map(Some)
            .map_err(|e| e.to_string()),
        None if args.cert.is_some() || args.key.is_some() => {
            Err("--cert and --key need --cacert (the CA of the nodes' certificates)".into())
        }
        None => Ok(None),
    }
}

/// The environment variable that stands in for `--token-file`.
pub(crate) const TOKEN_FILE_ENV: &str = "RCRAFT_TOKEN_FILE";

/// The token to send: `--token-file`, else `RCRAFT_TOKEN_FILE`, else none.
pub(crate) fn token_of(args: &ClusterArgs) -> Result<Option<Token>, String> {
    let from_env = || {
        std::env::var_os(TOKEN_FILE_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    match args.token_file.clone().or_else(from_env) {
        Some(path) => Token::from_file(&path).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The environment variable that stands in for `--servers` (as `ETCDCTL_ENDPOINTS` does).
pub(crate) const SERVERS_ENV: &str = "RCRAFT_SERVERS";

/// The server list given as text, and where: `--servers`, else (without `--config`)
/// `RCRAFT_SERVERS`.
fn servers_given(args: &ClusterArgs) -> Option<(&'static str, String)> {
    if let Some(list) = &args.servers {
        return Some(("--servers", list.clone()));
    }
    let from_env = std::env::var(SERVERS_ENV)
        .ok()
        .filter(|l| !l.trim().is_empty());
    from_env
        .filter(|_| args.config.is_none())
        .map(|list| (SERVERS_ENV, list))
}

/// The servers and cluster id: `--servers` (or `RCRAFT_SERVERS`) and `--cluster-id`, else a
/// craft.conf's (`--config`, or `~/craft/craft.conf`).
pub(crate) fn cluster_of(args: &ClusterArgs) -> Result<(Vec<SocketAddr>, u64), String> {
    let given = servers_given(args);
    let path = match (&given, &args.config) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(path.clone()),
        (None, None) => config::default_config_path().filter(|p| p.exists()),
    };
    let file = match path {
        Some(path) => Some(ConfigFile::read(&path).map_err(|e| e.to_string())?),
        None if given.is_none() => {
            return Err(format!(
                "give --servers HOST:PORT,... (or set {SERVERS_ENV}, or give --config PATH)"
            ));
        }
        None => None,
    };
    let servers = match (&given, &file) {
        (Some((origin, list)), _) => {
            config::parse_address_list(origin, list).map_err(|e| e.to_string())?
        }
        (None, Some(f)) if !f.servers.is_empty() => f.servers.iter().map(|s| s.value).collect(),
        (None, _) => return Err("no servers listed: give --servers HOST:PORT,...".to_string()),
    };
    let cluster_id = match (
        &args.cluster_id,
        file.as_ref().and_then(|f| f.get("cluster_id")),
    ) {
        (Some(id), _) => config::parse_flag_u64("--cluster-id", id).map_err(|e| e.to_string())?,
        (None, Some(id)) => id.value.number(),
        // The cluster id is made at bootstrap: without one, any cluster's nodes answer.
        (None, None) => rcraft::wire::CLUSTER_ID_UNKNOWN,
    };
    Ok((servers, cluster_id))
}

pub(crate) fn client_options(timeout_ms: u64, cluster_id: u64) -> ClientOptions {
    ClientOptions::with_timeout(Duration::from_millis(timeout_ms), cluster_id)
}

/// Options for commands that ask each node once: each answer may take the whole `timeout_ms`.
pub(crate) fn per_node_options(timeout_ms: u64, cluster_id: u64) -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(timeout_ms.max(1)),
        ..client_options(timeout_ms, cluster_id)
    }
}

/// Asks every address at once, each from its own scoped thread and client, and returns the
/// answers in the order of `addresses`.
pub(crate) fn ask_each<T: Send>(
    addresses: &[SocketAddr],
    options: &ClientOptions,
    ask: impl Fn(&mut Client, SocketAddr) -> Result<T, ClientError> + Sync,
) -> Vec<Result<T, ClientError>> {
    let ask = &ask;
    std::thread::scope(|scope| {
        let asks: Vec<_> = addresses
            .iter()
            .map(|&address| {
                let options = options.clone();
                scope.spawn(move || ask(&mut Client::new(&[address], options)?, address))
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().expect("a node's asking thread panicked"))
            .collect()
    })
}

/// One listed address and what its node said about itself.
pub(crate) struct Listed {
    pub(crate) address: SocketAddr,
    /// The id the node reports; its position in the list when it does not answer.
    pub(crate) id: NodeId,
    pub(crate) status: Result<NodeStatus, ClientError>,
}

/// Every listed address with the id its node reports, so commands name nodes as the nodes
/// do, whatever the order of `--servers` (an unanswered address keeps its position as id).
pub(crate) fn directory(servers: &[SocketAddr], options: &ClientOptions) -> Vec<Listed> {
    let answers = ask_each(servers, options, |client, address| {
        client.status_of(address)
    });
    servers
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(position, (&address, status))| Listed {
            address,
            id: status
                .as_ref()
                .map_or(NodeId(position as u64), |status| status.id),
            status,
        })
        .collect()
}

/// The address of node `id` in a directory.
pub(crate) fn address_of(directory: &[Listed], id: NodeId) -> Option<SocketAddr> {
    let answered = directory.iter().find(|l| l.id == id && l.status.is_ok());
    answered
        .or_else(|| directory.iter().find(|l| l.id == id))
        .map(|l| l.address)
}
