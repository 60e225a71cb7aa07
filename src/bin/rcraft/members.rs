//! `rcraft members list|add|promote|remove`: the command line over [`rcraft::admin`], which
//! plans each change against the leader's configuration, promotes a learner once it has
//! caught up and retries refusals. Exit 0 on success, 2 for a usage error (nothing was asked
//! of the cluster), 1 when the cluster did not do it.

use crate::cluster::{ClusterArgs, Listed, address_of, cluster_of, directory, tls_of, token_of};
use crate::{EXIT_FAILED, EXIT_USAGE};
use clap::{Args, Subcommand};
use rcraft::admin::{AdminError, MemberAdmin, MemberChange, describe_membership};
use rcraft::client::{ATTEMPT_TIMEOUT_MAX, ClientOptions};
use rcraft::wire::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Default deadline of a `rcraft members` command, in milliseconds.
pub(crate) const MEMBERS_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// `rcraft members [FLAGS] COMMAND [FLAGS]`: the common flags go before or after the command.
#[derive(Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) common: MembersCommon,
    #[command(subcommand)]
    pub(crate) command: MembersCommand,
}

/// `rcraft members ...`, named after `etcdctl member ...`.
#[derive(Subcommand)]
pub(crate) enum MembersCommand {
    /// Show every listed address: voter, learner, voter (outgoing) while a joint change is
    /// under way, or none; which one leads; each node's own log indexes. Exit 0 when a
    /// leader answered, 1 otherwise.
    List(MembersListArgs),
    /// Add node ID (the id it reports; its position in an id-ordered list): as a learner, then, without --learner, wait
    /// until it has caught up with the leader's log and promote it to voter.
    Add(MembersAddArgs),
    /// Promote learner ID to voter once it has caught up with the leader's log.
    Promote(MembersIdArgs),
    /// Remove node ID, voter or learner. Removing the leader works: once the change is
    /// committed it hands leadership to a remaining voter and steps down.
    Remove(MembersIdArgs),
}

/// Flags every `rcraft members` command takes (global: before or after the command).
#[derive(Args)]
pub(crate) struct MembersCommon {
    /// Every node's address, in id order. Without it, $RCRAFT_SERVERS, else the servers of
    /// --config (or of ~/craft/craft.conf) are used.
    #[arg(long, value_name = "HOST:PORT,...", global = true)]
    pub(crate) servers: Option<String>,
    /// A craft.conf to take the servers and cluster id from.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// Cluster id sent in the handshake [default: the file's, else rcraft's].
    #[arg(long, value_name = "N", global = true)]
    pub(crate) cluster_id: Option<String>,
    /// A file (mode 600) whose first line is the admin token to send, for nodes started with
    /// token files [default: $RCRAFT_TOKEN_FILE, else none].
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate (PEM) the nodes' certificates must chain to: talk TLS (the `tls`
    /// feature) [default: plaintext].
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for nodes started with --client-cert-auth.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) key: Option<PathBuf>,
    /// Deadline for the whole command: finding the leader, the change, catching up.
    #[arg(long, value_name = "N", default_value_t = MEMBERS_TIMEOUT_MS_DEFAULT, global = true)]
    pub(crate) timeout_ms: u64,
}

impl MembersCommon {
    /// The cluster flags in the form the other commands take them.
    pub(crate) fn cluster(&self) -> ClusterArgs {
        ClusterArgs {
            servers: self.servers.clone(),
            config: self.config.clone(),
            cluster_id: self.cluster_id.clone(),
            token_file: self.token_file.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

#[derive(Args)]
pub(crate) struct MembersListArgs {
    /// One JSON object per address and line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct MembersAddArgs {
    /// Only add it as a learner (it receives the log but does not vote).
    #[arg(long)]
    pub(crate) learner: bool,
    /// The node: the id it reports (its position in an id-ordered --servers), from 0.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
}

#[derive(Args)]
pub(crate) struct MembersIdArgs {
    /// The node: the id it reports (its position in an id-ordered --servers), from 0.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
}

/// How a `rcraft members` command failed: the message, and whether it was a usage error
/// (exit 2: nothing was asked of the cluster) or an operation that failed (exit 1).
pub(crate) struct MembersFailure {
    pub(crate) usage: bool,
    pub(crate) message: String,
}

impl MembersFailure {
    pub(crate) fn usage(message: impl Into<String>) -> MembersFailure {
        MembersFailure {
            usage: true,
            message: message.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> MembersFailure {
        MembersFailure {
            usage: false,
            message: message.into(),
        }
    }
}

impl From<AdminError> for MembersFailure {
    fn from(error: AdminError) -> MembersFailure {
        match error {
            AdminError::Refused(message) => MembersFailure::usage(message),
            AdminError::Failed(message) => MembersFailure::failed(message),
        }
    }
}

pub(crate) fn members(members: &MembersArgs) -> ExitCode {
    let common = &members.common;
    let (name, result) = match &members.command {
        MembersCommand::List(args) => (
            "members list",
            crate::members_list::members_list(common, args),
        ),
        MembersCommand::Add(args) => ("members add", members_add(common, args)),
        MembersCommand::Promote(args) => ("members promote", members_promote(common, args)),
        MembersCommand::Remove(args) => ("members remove", members_remove(common, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("rcraft {name}: {}", failure.message);
            ExitCode::from(if failure.usage {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            })
        }
    }
}

/// What every members command starts from: the servers, the id each listed node reports,
/// and the library's administration of them, bounded by the command's deadline.
pub(crate) struct MembersContext {
    pub(crate) servers: Vec<SocketAddr>,
    pub(crate) listed: Vec<Listed>,
    pub(crate) admin: MemberAdmin,
}

impl MembersContext {
    pub(crate) fn new(common: &MembersCommon) -> Result<MembersContext, MembersFailure> {
        let (servers, cluster_id) = cluster_of(&common.cluster()).map_err(MembersFailure::usage)?;
        let token = token_of(&common.cluster()).map_err(MembersFailure::usage)?;
        let tls = tls_of(&common.cluster()).map_err(MembersFailure::usage)?;
        let timeout = Duration::from_millis(common.timeout_ms);
        let options = ClientOptions {
            attempt_timeout: timeout.min(ATTEMPT_TIMEOUT_MAX),
            token: token.clone(),
            tls: tls.clone(),
            ..ClientOptions::with_timeout(timeout, cluster_id)
        };
        Ok(MembersContext {
            admin: MemberAdmin::new(servers.clone(), cluster_id, timeout)
                .with_token(token)
                .with_tls(tls),
            listed: directory(&servers, &options),
            servers,
        })
    }

    /// The id given on the command line: a node id, as the nodes report it.
    fn parse_id(text: &str) -> Result<NodeId, MembersFailure> {
        text.parse().map(NodeId).map_err(|_| {
            MembersFailure::usage(format!(
                "{text:?} is not a node id (the id the node reports, as `rcraft status` shows)"
            ))
        })
    }

    /// The id given on the command line, which must be a listed node's.
    fn node_id(&self, text: &str) -> Result<NodeId, MembersFailure> {
        let id = MembersContext::parse_id(text)?;
        if address_of(&self.listed, id).is_none() {
            let mut ids: Vec<u64> = self.listed.iter().map(|l| l.id.0).collect();
            ids.sort_unstable();
            let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
            return Err(MembersFailure::usage(format!(
                "node {id} has no address in --servers ({} listed: ids {})",
                self.servers.len(),
                ids.join(",")
            )));
        }
        Ok(id)
    }

    /// `node 3 (127.0.0.1:7003)`, or `node 3` when no listed address is node 3.
    fn label(&self, id: NodeId) -> String {
        match address_of(&self.listed, id) {
            Some(address) => format!("node {id} ({address})"),
            None => format!("node {id}"),
        }
    }
}

fn members_add(common: &MembersCommon, args: &MembersAddArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let id = context.node_id(&args.id)?;
    let admin = &context.admin;
    let current = admin.leader_status()?.membership;
    // A learner already (e.g. an earlier `add` that timed out while it caught up): go on
    // with the promotion.
    let resuming = !args.learner && current.learners.contains(&id);
    let now = if resuming {
        current
    } else {
        admin
            .apply_change(&current, MemberChange::AddLearner(id))?
            .0
    };
    if args.learner {
        println!(
            "added node {id} as a learner; now {}",
            describe_membership(&now)
        );
        return Ok(());
    }
    let promoted = admin
        .promote_when_caught_up(id, &context.label(id), &now)
        .map_err(|error| {
            error.with_message(format!(
                "{error}; node {id} stays a learner (now {}); promote it later with \
                 `rcraft members promote {id}`",
                describe_membership(&now)
            ))
        })?;
    print_promoted(id, &promoted);
    Ok(())
}

fn print_promoted(id: NodeId, now: &rcraft::wire::Membership) {
    println!(
        "promoted node {id} to voter; now {}",
        describe_membership(now)
    );
}

fn members_promote(common: &MembersCommon, args: &MembersIdArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let id = context.node_id(&args.id)?;
    let current = context.admin.leader_status()?.membership;
    rcraft::admin::plan_member_change(&current, MemberChange::Promote(id))
        .map_err(MembersFailure::usage)?;
    let promoted = context
        .admin
        .promote_when_caught_up(id, &context.label(id), &current)?;
    print_promoted(id, &promoted);
    Ok(())
}

fn members_remove(common: &MembersCommon, args: &MembersIdArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    // A failed node need not be listed to be removed: the leader's configuration decides.
    let id = MembersContext::parse_id(&args.id)?;
    let current = context.admin.leader_status()?.membership;
    let (now, committed_by) = context
        .admin
        .apply_change(&current, MemberChange::Remove(id))?;
    let stepped_down = if committed_by == Some(id) {
        " (it was the leader: it hands leadership to a remaining voter and steps down)"
    } else {
        ""
    };
    println!(
        "removed node {id}{stepped_down}; now {}",
        describe_membership(&now)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_have_an_address() {
        let servers: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let options = ClientOptions::with_timeout(Duration::from_millis(50), 0);
        let context = MembersContext {
            admin: MemberAdmin::new(servers.clone(), 0, Duration::ZERO),
            listed: crate::cluster::directory(&servers, &options),
            servers,
        };
        assert_eq!(context.node_id("1").ok(), Some(NodeId(1)));
        for (bad, why) in [
            (
                "2",
                "node 2 has no address in --servers (2 listed: ids 0,1)",
            ),
            ("-1", "\"-1\" is not a node id"),
            ("one", "\"one\" is not a node id"),
        ] {
            let failure = context.node_id(bad).expect_err("refused");
            assert!(failure.usage, "{bad}");
            assert!(failure.message.starts_with(why), "{}", failure.message);
        }
    }
}
