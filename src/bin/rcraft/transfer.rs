//! `rcraft transfer --to ID`: move leadership to a chosen voter (etcdctl's `move-leader`),
//! through [`rcraft::admin::MemberAdmin::transfer_leadership`]. Exit 0 once the target
//! leads, 2 for a usage error (nothing was asked of the cluster), 1 when leadership did not
//! move within the deadline.

use crate::cluster::{ClusterArgs, address_of, cluster_of, directory, tls_of, token_of};
use crate::{EXIT_FAILED, usage_error};
use clap::Args;
use rcraft::admin::{AdminError, MemberAdmin};
use rcraft::client::{ATTEMPT_TIMEOUT_MAX, ClientOptions};
use rcraft::wire::NodeId;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct TransferArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The node to lead: the id it reports (its position in an id-ordered --servers).
    #[arg(long, value_name = "ID")]
    to: String,
    /// Deadline for the whole command: finding the leader and the new leader's election.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    timeout_ms: u64,
}

/// `rcraft transfer`: prints `leadership moved from node A to node B (ADDRESS) at term T`,
/// or `node B (ADDRESS) is already the leader at term T`.
pub(crate) fn transfer(args: &TransferArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("transfer", &e),
    };
    let Ok(target) = args.to.parse().map(NodeId) else {
        let why = format!(
            "--to {:?} is not a node id (the id the node reports, as `rcraft status` shows)",
            args.to
        );
        return usage_error("transfer", &why);
    };
    let (token, tls) = match token_of(&args.cluster).and_then(|t| Ok((t, tls_of(&args.cluster)?))) {
        Ok(access) => access,
        Err(e) => return usage_error("transfer", &e),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let options = ClientOptions {
        attempt_timeout: timeout.min(ATTEMPT_TIMEOUT_MAX),
        token: token.clone(),
        tls: tls.clone(),
        ..ClientOptions::with_timeout(timeout, cluster_id)
    };
    let listed = directory(&servers, &options);
    let Some(address) = address_of(&listed, target) else {
        let why = format!("--to {target}: no listed address is node {target}");
        return usage_error("transfer", &why);
    };
    let admin = MemberAdmin::new(servers, cluster_id, timeout)
        .with_token(token)
        .with_tls(tls);
    match admin.transfer_leadership(target) {
        Ok(moved) if moved.from == moved.to => {
            println!(
                "node {target} ({address}) is already the leader at term {}",
                moved.term
            );
            ExitCode::SUCCESS
        }
        Ok(moved) => {
            println!(
                "leadership moved from node {} to node {target} ({address}) at term {}",
                moved.from, moved.term
            );
            ExitCode::SUCCESS
        }
        Err(AdminError::Refused(why)) => usage_error("transfer", &why),
        Err(AdminError::Failed(why)) => {
            eprintln!("rcraft transfer: {why}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
