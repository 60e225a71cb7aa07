//! One describer for the core's vocabulary: messages, entries, memberships and actions as
//! one line of text each. The interaction scripts (`tests/interaction.rs`) print their
//! golden output with it and the consensus thread logs the actions it carries out with it at
//! trace level, so a log line and a script line read the same (as etcd-io/raft's
//! `DescribeMessage`). Pure: text in, text out, on whichever thread calls it.

use super::{Action, StorageAction};
use rcraft_wire::{Entry, EntryPayload, Membership, Message, MessageBody, NodeId, SnapshotMeta};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// `INDEX@TERM PAYLOAD`: `noop`, the command as quoted text, or `members(...)`.
pub fn describe_entry(entry: &Entry) -> String {
    let payload = match &entry.payload {
        EntryPayload::Noop => "noop".to_string(),
        EntryPayload::Command { data, .. } => format!("{:?}", String::from_utf8_lossy(data)),
        EntryPayload::Membership(m) => format!("members{}", describe_membership(m)),
    };
    format!("{}@{} {}", entry.index, entry.term, payload)
}

/// Entries listed one by one up to this many; a longer run shows its ends and a count, so a
/// catch-up batch of thousands stays one readable line (simulator traces, trace logs).
const ENTRIES_LISTED_MAX: usize = 8;

/// `[ENTRY, ENTRY, ...]`; a run longer than [`ENTRIES_LISTED_MAX`] as
/// `[FIRST, SECOND, ... N more ..., LAST]`.
pub fn describe_entries(entries: &[Entry]) -> String {
    if entries.len() <= ENTRIES_LISTED_MAX {
        let parts: Vec<String> = entries.iter().map(describe_entry).collect();
        return format!("[{}]", parts.join(", "));
    }
    let (head, tail) = (&entries[..2], &entries[entries.len() - 1..]);
    let hidden = entries.len() - head.len() - tail.len();
    let mut parts: Vec<String> = head.iter().map(describe_entry).collect();
    parts.push(format!("... {hidden} more ..."));
    parts.extend(tail.iter().map(describe_entry));
    format!("[{}]", parts.join(", "))
}

/// `(voters 0 1 2; outgoing 0 1; learners 3)`, the outgoing and learner parts only when
/// present.
pub fn describe_membership(m: &Membership) -> String {
    let list = |set: &BTreeSet<NodeId>| {
        set.iter()
            .map(|id| id.0.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = format!("(voters {}", list(&m.voters));
    if m.is_joint() {
        write!(text, "; outgoing {}", list(&m.voters_outgoing)).unwrap();
    }
    if !m.learners.is_empty() {
        write!(text, "; learners {}", list(&m.learners)).unwrap();
    }
    text.push(')');
    text
}

/// `snap INDEX@TERM SIZEb`.
pub fn describe_snapshot_meta(meta: &SnapshotMeta) -> String {
    format!("snap {}@{} {}b", meta.index, meta.term, meta.size_bytes)
}

/// `FROM->TO tTERM BODY`, e.g. `1->2 t3 App prev=4@2 commit=4 [5@3 "x"]`.
pub fn describe_message(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => format!(
            "{} last={}@{}{}",
            if *pre_vote { "PreVote" } else { "Vote" },
            last_log_index,
            last_log_term,
            if *leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        MessageBody::VoteResponse { pre_vote, granted } => format!(
            "{}Resp {}",
            if *pre_vote { "PreVote" } else { "Vote" },
            if *granted { "granted" } else { "rejected" }
        ),
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "App prev={}@{} commit={} {}",
            prev_log_index,
            prev_log_term,
            leader_commit,
            describe_entries(entries)
        ),
        MessageBody::AppendResponse {
            success,
            match_index,
            conflict,
        } => match (success, conflict) {
            (true, _) => format!("AppResp ok match={match_index}"),
            (false, Some(hint)) => format!(
                "AppResp reject probe={} hint={}@{}",
                match_index,
                hint.first_index,
                hint.term
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            (false, None) => format!("AppResp reject probe={match_index}"),
        },
        MessageBody::Heartbeat {
            leader_commit,
            read_context,
        } => format!("Heartbeat commit={leader_commit} ctx={read_context}"),
        MessageBody::HeartbeatResponse { read_context } => {
            format!("HeartbeatResp ctx={read_context}")
        }
        MessageBody::InstallSnapshot { .. } | MessageBody::InstallSnapshotResponse { .. } => {
            describe_snapshot_body(&m.body)
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::ReadIndexRequest { request } => format!("ReadIndexRequest #{request}"),
        MessageBody::ReadIndexResponse { request, index } => match index {
            Some(index) => format!("ReadIndexResponse #{request} index={index}"),
            None => format!("ReadIndexResponse #{request} refused"),
        },
        MessageBody::RepairQuery { lost: None } => "RepairQuery".to_string(),
        MessageBody::RepairQuery { lost: Some(lost) } => format!(
            "RepairQuery lost={}..={}@{} recovered={}",
            lost.from, lost.through, lost.through_term, lost.recovered_term
        ),
        MessageBody::RepairAnswer {
            log_end,
            last_log_index,
            last_log_term,
            snapshot_index,
            last_joint_index,
            snapshot_pair,
            range_membership,
        } => format!(
            "RepairAnswer end={log_end} last={last_log_index}@{last_log_term} \
             snapshot={snapshot_index}{} joint={last_joint_index}{}",
            if *snapshot_pair { " (pair)" } else { "" },
            if *range_membership {
                " (membership in range)"
            } else {
                ""
            }
        ),
        MessageBody::LinkProbe {
            sent_tick,
            peers_milliticks,
        } => match peers_milliticks {
            Some(report) => format!("LinkProbe @{sent_tick} peers={}", milliticks(*report)),
            None => format!("LinkProbe @{sent_tick}"),
        },
        MessageBody::LinkProbeReply { sent_tick } => format!("LinkProbeReply @{sent_tick}"),
    };
    format!("{}->{} t{} {}", m.from, m.to, m.term, body)
}

/// The body of a snapshot transfer message (`describe_message` does the others).
fn describe_snapshot_body(body: &MessageBody) -> String {
    match body {
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
            ..
        } => format!(
            "Snapshot {} offset={} len={}{}",
            describe_snapshot_meta(meta),
            offset,
            data.len(),
            if *done { " done" } else { "" }
        ),
        MessageBody::InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            done,
            rejected,
        } => format!(
            "SnapshotResp index={}{} next={}{}",
            snapshot_index,
            if *done { " done" } else { "" },
            next_offset,
            if *rejected { " rejected" } else { "" }
        ),
        other => unreachable!("not a snapshot message: {other:?}"),
    }
}

/// One action as the interaction scripts print it, e.g. `persist seq=3 [5@3 "x"]`.
pub fn describe_action(action: &Action) -> String {
    match action {
        Action::Send(m) => format!("send {}", describe_message(m)),
        Action::Storage(StorageAction::Persist {
            seq,
            hard_state,
            entries,
        }) => {
            let hs = hard_state
                .map(|h| {
                    let vote = h.vote.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                    format!(" hs=(term {} vote {} commit {})", h.term, vote, h.commit)
                })
                .unwrap_or_default();
            format!("persist seq={seq}{hs} {}", describe_entries(entries))
        }
        Action::Apply { entries } => format!("apply {}", describe_entries(entries)),
        Action::RestoreSnapshot { meta } => {
            format!("restore-snapshot {}", describe_snapshot_meta(meta))
        }
        Action::Proposed { id, term, index } => format!("proposed #{id} at {index}@{term}"),
        Action::ProposeRejected { id, error } => format!("propose #{id} rejected: {error:?}"),
        Action::ReadReady { id, index, term } => {
            format!("read #{id} ready at {index} (term {term})")
        }
        Action::ReadRejected { id, error } => format!("read #{id} rejected: {error:?}"),
        Action::Storage(StorageAction::ReadSnapshotChunk {
            to,
            meta,
            offset,
            max_bytes,
        }) => format!(
            "read-snapshot for {to} {} offset={offset} max={max_bytes}",
            describe_snapshot_meta(meta)
        ),
        Action::Storage(StorageAction::ReadEntries {
            id,
            to,
            low,
            high,
            max_bytes,
        }) => format!("read-entries #{id} for {to} [{low}, {high}] max={max_bytes}"),
        Action::Storage(StorageAction::WriteSnapshotChunk {
            from,
            meta,
            offset,
            data,
            done,
            ..
        }) => format!(
            "write-snapshot from {from} {} offset={offset} len={}{}",
            describe_snapshot_meta(meta),
            data.len(),
            if *done { " done" } else { "" }
        ),
        Action::Storage(StorageAction::CompactLog { through }) => {
            format!("compact-log through {through}")
        }
        Action::SelfDemotion(d) => format!(
            "self-demotion ({}) to {}: own figure {} ticks, median follower {} ({} measured), target {}, slow for {} ticks",
            d.reason.name(),
            d.to,
            milliticks(d.leader_milliticks),
            milliticks(d.median_follower_milliticks),
            d.followers_measured,
            milliticks(d.target_milliticks),
            d.slow_for_ticks
        ),
        Action::Storage(StorageAction::KeepSnapshots { in_use }) => {
            let kept: Vec<String> = in_use.iter().map(describe_snapshot_meta).collect();
            format!("keep-snapshots [{}]", kept.join(", "))
        }
    }
}

/// Thousandths of a tick as ticks with up to three decimals (`12.5`).
fn milliticks(value: u64) -> String {
    let (whole, rest) = (value / 1000, value % 1000);
    if rest == 0 {
        return whole.to_string();
    }
    let decimals = format!("{rest:03}");
    format!("{whole}.{}", decimals.trim_end_matches('0'))
}
