//! `rcraft doctor DATA_DIR [--json]`: what a data directory holds and whether a node would
//! start on it, read without changing it ([`rcraft::node::doctor`]). Exit 0 when healthy, 1
//! when damage was found (something to repair, or a start that would be refused), 2 for a
//! usage error (no such directory). `rcraft doctor force-new-cluster DATA_DIR --dry-run`:
//! what a one-node cluster made from the directory would keep and may lose; without
//! `--dry-run` it makes that cluster ([`rcraft::node::force_new_cluster`]).

use crate::{EXIT_FAILED, usage_error};
use clap::{Args, Subcommand};
use rcraft::node::doctor::{
    ForceNewClusterPlan, HardStateReport, MembershipSource, PartError, Report, SnapshotsReport,
    Verdict, WalReport, inspect,
};
use rcraft::node::force_new_cluster::Forced;
use rcraft::wire::{Membership, NodeId};
use rcraft_storage::{HardState, HardStateSlot};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct DoctorArgs {
    #[command(subcommand)]
    command: Option<DoctorCommand>,
    /// The node's data directory (its --data-dir).
    #[arg(value_name = "DATA_DIR", required = true)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// After losing a quorum: make the stopped node of DATA_DIR the only voter of a new
    /// cluster, keeping what it holds; --dry-run says what would be kept and lost.
    ForceNewCluster(ForceNewClusterArgs),
}

#[derive(Args)]
struct ForceNewClusterArgs {
    /// The surviving node's data directory.
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,
    /// Say what would be kept and lost, change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn doctor(args: &DoctorArgs) -> ExitCode {
    if let Some(DoctorCommand::ForceNewCluster(force)) = &args.command {
        return force_new_cluster(force);
    }
    let Some(data_dir) = &args.data_dir else {
        return usage_error("doctor", &"give a DATA_DIR");
    };
    if !data_dir.is_dir() {
        let why = format!("{} is not a directory", data_dir.display());
        return usage_error("doctor", &why);
    }
    let report = inspect(data_dir);
    let verdict = report.verdict();
    if args.json {
        println!("{}", to_json(&report, &verdict));
    } else {
        print!("{}", to_text(&report, &verdict));
    }
    match verdict {
        Verdict::Healthy => ExitCode::SUCCESS,
        Verdict::Repair(_) | Verdict::Refuse(_) => ExitCode::from(EXIT_FAILED),
    }
}

/// `rcraft doctor force-new-cluster DATA_DIR [--dry-run]`: exit 0 with the plan (and, without
/// `--dry-run`, what was written), 1 when the data dir cannot seed a new cluster or a node
/// runs on it, 2 for a usage error.
fn force_new_cluster(args: &ForceNewClusterArgs) -> ExitCode {
    const WHAT: &str = "doctor force-new-cluster";
    if !args.data_dir.is_dir() {
        let why = format!("{} is not a directory", args.data_dir.display());
        return usage_error(WHAT, &why);
    }
    let mut out = Lines::default();
    let dir = args.data_dir.display();
    if !args.dry_run {
        return match rcraft::node::force_new_cluster::force_new_cluster(&args.data_dir) {
            Ok(forced) => {
                out.line("forced", format!("force-new-cluster on {dir}: done"));
                plan_text(&forced.plan, &mut out);
                forced_text(&forced, &mut out);
                print!("{}", out.0);
                ExitCode::SUCCESS
            }
            Err(why) => cannot(why, out),
        };
    }
    let report = inspect(&args.data_dir);
    out.line(
        "dry run",
        format!("force-new-cluster on {dir}: nothing was changed"),
    );
    if let Ok(Some(pid)) = &report.running_pid {
        out.line(
            "running",
            format!("YES: process {pid} holds the WAL lock; stop it before forcing anything"),
        );
    }
    match report.force_new_cluster_plan() {
        Ok(plan) => {
            plan_text(&plan, &mut out);
            print!("{}", out.0);
            ExitCode::SUCCESS
        }
        Err(why) => cannot(why, out),
    }
}

/// Prints `out` followed by one `cannot` line per reason; exit 1.
fn cannot(why: Vec<String>, mut out: Lines) -> ExitCode {
    for item in why {
        out.line("cannot", item);
    }
    print!("{}", out.0);
    ExitCode::from(EXIT_FAILED)
}

/// Text of `key   value` lines, the key padded to one column.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, key: &str, value: String) {
        self.0.push_str(&format!("{key:<15} {value}\n"));
    }
}

/// What a forced new cluster keeps and may lose (the dry run's lines).
fn plan_text(plan: &ForceNewClusterPlan, out: &mut Lines) {
    let was = plan
        .old_membership
        .as_ref()
        .map_or("unknown".to_string(), membership_text);
    out.line(
        "new cluster",
        format!("voters {} alone (was {was})", plan.node_id),
    );
    match plan.snapshot {
        Some((index, term)) => out.line(
            "keep",
            format!("entries 1..={index} in the snapshot (term {term}): committed and applied"),
        ),
        None => out.line("keep", "no snapshot".to_string()),
    }
    match plan.log_kept {
        Some((first, last)) => {
            out.line("keep", format!("entries {first}..={last} from the log"));
            let committed = plan.known_committed;
            if committed >= first {
                out.line(
                    "  committed",
                    format!("{first}..={committed}: known committed here"),
                );
            }
            let unknown_from = committed.max(first - 1) + 1;
            if unknown_from <= last {
                out.line(
                    "  uncertain",
                    format!(
                        "{unknown_from}..={last}: not known committed; the new cluster commits \
                         them (a write whose client saw no answer may then take effect)"
                    ),
                );
            }
        }
        None => out.line("keep", "no log entries beyond the snapshot".to_string()),
    }
    let last_index = plan
        .log_kept
        .map(|(_, last)| last)
        .or(plan.snapshot.map(|(index, _)| index))
        .unwrap_or(0);
    if let Some((from, through)) = plan.lost {
        out.line(
            "may be lost",
            format!(
                "entries {from}..={through}: synced here once, damaged on this disk; lost unless \
                 another node holds them (forcing writes empty entries in their place)"
            ),
        );
    }
    out.line(
        "may be lost",
        format!(
            "any entry after {last_index} (last term {}) that the old cluster committed: \
             run `rcraft doctor` on every surviving data dir and seed from the one whose last \
             entry has the highest term, then the highest index",
            plan.last_term
        ),
    );
}

/// What `force_new_cluster` wrote, and what to do next.
fn forced_text(forced: &Forced, out: &mut Lines) {
    let id = forced.plan.node_id;
    out.line(
        "wrote",
        format!(
            "hard state: term {} (was {}), vote for node {id}",
            forced.term, forced.old_term
        ),
    );
    if let Some((from, through)) = forced.filled {
        out.line(
            "wrote",
            format!(
                "entries {from}..={through}: empty, term {}, in place of the lost ones",
                forced.term
            ),
        );
    }
    out.line(
        "wrote",
        format!(
            "entry {}: membership voters {id} alone, term {}",
            forced.membership_index, forced.term
        ),
    );
    out.line(
        "next",
        format!(
            "start node {id} on this data dir as before (rcraft serve): it elects itself and \
             commits everything kept; add nodes back with `rcraft members add ID` and \
             `rcraft serve --join` on fresh data dirs; never restart the old nodes' data dirs"
        ),
    );
}

fn ids(ids: impl IntoIterator<Item = NodeId>) -> String {
    let list: Vec<String> = ids.into_iter().map(|id| id.0.to_string()).collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(",")
    }
}

fn membership_text(m: &Membership) -> String {
    let mut text = format!("voters {}", ids(m.voters.iter().copied()));
    if m.is_joint() {
        text += &format!(
            " (joint with outgoing voters {})",
            ids(m.voters_outgoing.iter().copied())
        );
    }
    if !m.learners.is_empty() {
        text += &format!(", learners {}", ids(m.learners.iter().copied()));
    }
    text
}

fn state_text(s: &HardState) -> String {
    let vote = s.vote.map_or("none".to_string(), |v| v.to_string());
    let unknown = if s.votes_unknown {
        " (VOTES UNKNOWN: the term is a lower bound)"
    } else {
        ""
    };
    format!("term {}, vote {vote}, commit {}{unknown}", s.term, s.commit)
}

fn slot_text(slot: &HardStateSlot) -> String {
    match slot {
        HardStateSlot::Empty => "empty (never written)".to_string(),
        HardStateSlot::Valid {
            sequence,
            state,
            mirrored,
        } => format!(
            "valid: save {sequence}, {}{}",
            state_text(state),
            if *mirrored { "" } else { " (one-slot save)" }
        ),
        HardStateSlot::Damaged(why) => format!("DAMAGED: {why}"),
    }
}

fn to_text(r: &Report, verdict: &Verdict) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<15} {value}\n"));
    line("data dir", r.dir.display().to_string());
    line(
        "running",
        match &r.running_pid {
            Ok(Some(pid)) => {
                format!("YES: process {pid} holds the WAL lock; read as it is, it may be changing")
            }
            Ok(None) => "no (the WAL lock is free)".to_string(),
            Err(e) => format!("unknown ({e})"),
        },
    );
    line(
        "identity",
        match &r.identity {
            Ok(Some(id)) => format!(
                "node {} of cluster {}, at {}",
                id.node_id,
                cluster_name(id.cluster_id),
                id.address
            ),
            Ok(None) => "no identity file".to_string(),
            Err(e) => format!("UNREADABLE: {e}"),
        },
    );
    line(
        "initial voters",
        match &r.initial_voters {
            Ok(Some(v)) if v.is_empty() => "none (joined a running cluster)".to_string(),
            Ok(Some(v)) => ids(v.iter().copied()),
            Ok(None) => "no initial_voters file".to_string(),
            Err(e) => format!("UNREADABLE: {e}"),
        },
    );
    match &r.hard_state {
        Ok(Some(hs)) => {
            let current = hs
                .current
                .as_ref()
                .map_or("NO VALID SLOT".to_string(), state_text);
            let agree = if hs.agree {
                "slots agree"
            } else {
                "SLOTS DIFFER"
            };
            line("hard state", format!("{current}; {agree}"));
            line("  slot 0", slot_text(&hs.slots[0]));
            line("  slot 1", slot_text(&hs.slots[1]));
        }
        Ok(None) => line("hard state", "no hard_state file".to_string()),
        Err(e) => line("hard state", format!("UNREADABLE: {e}")),
    }
    match &r.wal {
        Ok(Some(wal)) => wal_text(wal, &mut line),
        Ok(None) => line("wal", "no wal directory".to_string()),
        Err(e) => line("wal", format!("REFUSED BY RECOVERY: {e}")),
    }
    match &r.snapshots {
        Ok(Some(s)) => snapshots_text(s, &mut line),
        Ok(None) => line("snapshot", "no snapshots directory".to_string()),
        Err(e) => line("snapshot", format!("DAMAGED: {e}")),
    }
    line(
        "membership",
        match r.membership() {
            Some((m, source)) => format!("{} ({})", membership_text(&m), source_text(&source)),
            None => "unknown (no membership entry, snapshot or initial voters)".to_string(),
        },
    );
    for change in &r.changes {
        line("on open", change.clone());
    }
    match verdict {
        Verdict::Healthy => line("verdict", "healthy".to_string()),
        Verdict::Repair(what) => {
            for item in what {
                line("verdict", format!("will repair: {item}"));
            }
        }
        Verdict::Refuse(why) => {
            for item in why {
                line("verdict", format!("will refuse to start: {item}"));
            }
        }
    }
    out
}

fn source_text(source: &MembershipSource) -> String {
    match source {
        MembershipSource::LogEntry(index) => format!("log entry {index}"),
        MembershipSource::Snapshot => "the snapshot".to_string(),
        MembershipSource::InitialVoters => "the initial voters".to_string(),
    }
}

fn wal_text(wal: &WalReport, line: &mut impl FnMut(&str, String)) {
    let entries = if wal.last_index >= wal.first_index {
        format!("entries {}..={}", wal.first_index, wal.last_index)
    } else {
        format!("empty (next index {})", wal.first_index)
    };
    let frontier = match wal.synced_frontier {
        0 => "no synced frontier recorded".to_string(),
        end => format!("synced frontier {}", end - 1),
    };
    line(
        "wal",
        format!("{entries}, {} segment(s), {frontier}", wal.segments.len()),
    );
    for seg in &wal.segments {
        let range = if seg.records == 0 {
            "no records".to_string()
        } else {
            format!(
                "{}..={}",
                seg.first_index,
                seg.first_index + seg.records - 1
            )
        };
        line("  segment", format!("{} {range}", seg.path.display()));
    }
    if !wal.terms.is_empty() {
        let runs: Vec<String> = wal
            .terms
            .iter()
            .map(|run| format!("{} at {}..={}", run.term, run.first, run.last))
            .collect();
        line("  terms", runs.join(", "));
    }
    if let Some(lost) = &wal.lost {
        line("  LOST", lost.to_string());
    }
    for cut in &wal.torn_tail {
        line("  torn tail", format!("never acknowledged; {cut}"));
    }
    for (index, why) in &wal.undecodable {
        line("  UNDECODABLE", format!("entry {index}: {why}"));
    }
}

fn snapshots_text(s: &SnapshotsReport, line: &mut impl FnMut(&str, String)) {
    match &s.latest {
        Some(latest) => {
            let checked = match &latest.data_verified {
                Ok(()) => "data checksum verified".to_string(),
                Err(e) => format!("DATA DAMAGED: {e}"),
            };
            let membership = match &latest.membership {
                Ok(m) => membership_text(m),
                Err(e) => format!("MEMBERSHIP UNDECODABLE: {e}"),
            };
            line(
                "snapshot",
                format!(
                    "index {}, term {}, {} data bytes, {checked}, {membership}",
                    latest.index, latest.term, latest.data_bytes
                ),
            );
            line("  file", latest.path.display().to_string());
        }
        None => line("snapshot", "none".to_string()),
    }
    if s.files.len() > 1 {
        line("  all files", s.files.join(", "));
    }
    if s.partial {
        line(
            "  partial",
            "a snapshot being received is kept to resume".to_string(),
        );
    }
}

fn membership_json(m: &Membership) -> Value {
    let list = |set: &std::collections::BTreeSet<NodeId>| -> Vec<u64> {
        set.iter().map(|id| id.0).collect()
    };
    json!({
        "voters": list(&m.voters),
        "voters_outgoing": list(&m.voters_outgoing),
        "learners": list(&m.learners),
    })
}

fn state_json(s: &HardState) -> Value {
    json!({"term": s.term, "vote": s.vote, "commit": s.commit, "votes_unknown": s.votes_unknown})
}

fn slot_json(slot: &HardStateSlot) -> Value {
    match slot {
        HardStateSlot::Empty => json!({"status": "empty"}),
        HardStateSlot::Valid {
            sequence,
            state,
            mirrored,
        } => json!({
            "status": "valid",
            "sequence": sequence,
            "state": state_json(state),
            "mirrored": mirrored,
        }),
        HardStateSlot::Damaged(why) => json!({"status": "damaged", "reason": why}),
    }
}

fn part<T>(part: &Result<Option<T>, PartError>, f: impl Fn(&T) -> Value) -> Value {
    match part {
        Ok(Some(value)) => f(value),
        Ok(None) => Value::Null,
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn hard_state_json(hs: &HardStateReport) -> Value {
    json!({
        "current": hs.current.as_ref().map(state_json),
        "agree": hs.agree,
        "slots": [slot_json(&hs.slots[0]), slot_json(&hs.slots[1])],
    })
}

fn wal_json(wal: &WalReport) -> Value {
    json!({
        "first_index": wal.first_index,
        "last_index": wal.last_index,
        "synced_frontier": wal.synced_frontier.checked_sub(1),
        "segments": wal.segments.iter().map(|s| json!({
            "path": s.path.display().to_string(),
            "first_index": s.first_index,
            "records": s.records,
        })).collect::<Vec<_>>(),
        "terms": wal.terms.iter().map(|t| json!({
            "term": t.term, "first": t.first, "last": t.last,
        })).collect::<Vec<_>>(),
        "lost": wal.lost.as_ref().map(|l| json!({
            "from": l.from,
            "through": l.through,
            "file": l.file.display().to_string(),
            "offset": l.offset,
            "reason": l.reason,
        })),
        "torn_tail": wal.torn_tail,
        "membership_entries": wal.memberships.iter().map(|(index, m)| json!({
            "index": index, "membership": membership_json(m),
        })).collect::<Vec<_>>(),
        "undecodable": wal.undecodable.iter().map(|(index, why)| json!({
            "index": index, "reason": why.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn snapshots_json(s: &SnapshotsReport) -> Value {
    json!({
        "latest": s.latest.as_ref().map(|l| json!({
            "path": l.path.display().to_string(),
            "index": l.index,
            "term": l.term,
            "data_bytes": l.data_bytes,
            "data_verified": l.data_verified.is_ok(),
            "data_error": l.data_verified.as_ref().err(),
            "membership": l.membership.as_ref().ok().map(membership_json),
            "membership_error": l.membership.as_ref().err().map(ToString::to_string),
        })),
        "files": s.files,
        "partial": s.partial,
    })
}

fn to_json(r: &Report, verdict: &Verdict) -> Value {
    let (status, reasons) = match verdict {
        Verdict::Healthy => ("healthy", Vec::new()),
        Verdict::Repair(what) => ("repair", what.clone()),
        Verdict::Refuse(why) => ("refuse", why.clone()),
    };
    let membership = r.membership().map(
        |(m, source)| json!({"membership": membership_json(&m), "source": source_text(&source)}),
    );
    json!({
        "data_dir": r.dir.display().to_string(),
        "running_pid": match &r.running_pid {
            Ok(pid) => json!(pid),
            Err(e) => json!({"error": e.to_string()}),
        },
        "identity": part(&r.identity, |id| json!({
            "node_id": id.node_id,
            "cluster_id": cluster_name(id.cluster_id),
            "address": id.address,
        })),
        "initial_voters": part(&r.initial_voters, |v| json!(v.iter().map(|id| id.0).collect::<Vec<_>>())),
        "hard_state": part(&r.hard_state, hard_state_json),
        "wal": part(&r.wal, wal_json),
        "snapshots": part(&r.snapshots, snapshots_json),
        "membership": membership,
        "on_open": r.changes,
        "verdict": status,
        "reasons": reasons,
    })
}

/// A recorded cluster id as shown: hex, or `unknown` for a `--join` node that has not met its
/// cluster yet.
fn cluster_name(cluster_id: u64) -> String {
    match cluster_id {
        rcraft::wire::CLUSTER_ID_UNKNOWN => "unknown".to_string(),
        id => format!("{id:#x}"),
    }
}
