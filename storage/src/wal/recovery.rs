//! Recovery of a WAL directory on open: which segments exist, whether their records are whole
//! and contiguous, and what to cut off at the tail.
//!
//! Runs once, on the storage thread, before the [`crate::Wal`] is handed out. Invariants on
//! success: segments are sorted, each non-last segment's records are all valid, each segment
//! starts right after the previous one ends, and the last segment's map is zero after its last
//! valid record (any torn tail was zeroed), and all of the last segment's records are synced.
//!
//! Telling a torn write from loss. Only the last segment can hold unsynced bytes (a
//! segment is synced before the next one is created), so a bad record in any other segment,
//! or a gap before the next one, is synced data lost. In the last segment, a bad record (or
//! a zero length) followed by nothing but zeroes and garbage is the torn tail of a batch that
//! was never acknowledged: it is cut off. If a *valid* record with a later index and a term
//! no lower than the last good term follows the damage, it was synced: the range through it
//! is reported lost.
//! In a version-2 or -3 segment the header says how many of its records were synced (the
//! synced frontier, counting only records a returned sync made durable; version 3 also
//! records the term of the last one, reported with a loss as `Lost::through_term`). Then
//! there is nothing
//! to guess: damage after
//! the frontier is a torn write, cut; records missing or damaged below it are synced data
//! that was lost. Those are cut too (nothing after a damaged record can be served) but
//! reported as a [`Lost`] range, which the node must repair from its peers before it may
//! act as if it held them. The claim stays in the header until records cover it again.
//! Damage in a sealed segment, or a missing segment, is handled the same way: the log is cut
//! at the damaged record or the gap (the claim made durable in that segment first, its header
//! rewritten as version 3 if it was older, then every later segment removed), and
//! everything from there through the frontier is reported lost. A damaged segment header is
//! rebuilt from the file name (`Segment::open`).
//! Except after an interrupted truncation: a `truncating.<index>` marker (see
//! `Wal::truncate_from` and storage/FORMAT.md §4.3) says that what lies from that index on in
//! the last segment is the remains of records being zeroed, so it is cut without the check.

use super::segment::{self, Segment, Slot, SyncedCount};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::limits::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use std::path::Path;

/// Prefix of the marker file of a truncation in progress; its name ends with the index cut.
const TRUNCATION_MARKER_PREFIX: &str = "truncating.";

/// The marker file name of a truncation from `index` (see `Wal::truncate_from`).
pub(crate) fn truncation_marker_name(index: u64) -> String {
    format!("{TRUNCATION_MARKER_PREFIX}{index:020}")
}

/// The index of an unfinished truncation, if a marker names one (the lowest, should a crash
/// have left two), and the marker files to remove once recovery has finished it.
fn unfinished_truncation(fs: &dyn Fs, dir: &Path) -> Result<(Option<u64>, Vec<String>)> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let markers: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with(TRUNCATION_MARKER_PREFIX))
        .collect();
    let cut = markers
        .iter()
        .filter_map(|name| name[TRUNCATION_MARKER_PREFIX.len()..].parse::<u64>().ok())
        .min();
    Ok((cut, markers))
}

/// Lists segment files `(first_index, name)` sorted by index, deleting leftover `.tmp` files.
pub(crate) fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(u64, String)>> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut segments = Vec::new();
    let mut removed_tmp = false;
    for name in names {
        if name.ends_with(&format!("{}.tmp", segment::SEGMENT_SUFFIX)) {
            let path = dir.join(&name);
            log::info!("removing unfinished segment {}", path.display());
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove unfinished segment", &path, e))?;
            removed_tmp = true;
        } else if let Some(first_index) = segment::parse_segment_file_name(&name) {
            segments.push((first_index, name));
        }
    }
    if removed_tmp {
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    segments.sort();
    Ok(segments)
}

/// Records that were synced (the synced frontier says so) but are gone or damaged: the log
/// now ends before `from`, and it may once have acknowledged entries through `through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// First index lost.
    pub from: u64,
    /// Last index the synced frontier covers.
    pub through: u64,
    /// The term of the entry at `through`, when the header that claims it says (version 3;
    /// `None` for an older header, or a claim found otherwise: storage/FORMAT.md §4.1).
    pub through_term: Option<u64>,
    /// The segment where the records should be.
    pub file: std::path::PathBuf,
    /// Byte offset in `file` where the valid records end.
    pub offset: u64,
    /// What was found there instead, in words.
    pub reason: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "synced entries {}..={} lost ({} at offset {} of {})",
            self.from,
            self.through,
            self.reason,
            self.offset,
            self.file.display()
        )
    }
}

/// What recovery found: the segments, ready for appends at the tail, and any synced range
/// lost.
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub lost: Option<Lost>,
    /// One past the highest index any header claims synced (0 when none does).
    pub claim_end: u64,
    /// The term of the entry before `claim_end`, when a header says (0: not known).
    pub claim_term: u64,
}

/// One past the highest index the segments' headers claim synced.
fn claimed_end(segments: &[Segment]) -> u64 {
    claimed_frontier(segments).0
}

/// One past the highest index the segments' headers claim synced, and the term a header
/// claiming that end records for its last entry (0 when none does).
fn claimed_frontier(segments: &[Segment]) -> (u64, u64) {
    let mut frontier = (0, 0);
    for seg in segments {
        if let SyncedCount::Records(count, term) = seg.opened_count {
            let end = seg.first_index + u64::from(count);
            let term = term.unwrap_or(0);
            if count > 0 && (end > frontier.0 || (end == frontier.0 && frontier.1 == 0)) {
                frontier = (end, term);
            }
        }
    }
    frontier
}

/// The term recorded for the entry before `end` by any of these segments' headers whose
/// count ends there (0 when none does).
fn term_claimed_at(segments: &[Segment], end: u64) -> u64 {
    let (claimed, term) = claimed_frontier(segments);
    if claimed == end { term } else { 0 }
}

/// Opens and verifies every segment; returns them ready for appends at the tail.
pub(crate) fn recover(fs: &dyn Fs, dir: &Path) -> Result<Recovered> {
    let (cut, markers) = unfinished_truncation(fs, dir)?;
    let listed = list_segments(fs, dir)?;
    let count = listed.len();
    let mut segments: Vec<Segment> = Vec::with_capacity(count);
    let mut last_term = 0;
    let mut lost = None;
    for (position, (first_index, name)) in listed.iter().enumerate() {
        let mut seg = Segment::open(fs, dir.join(name), *first_index)?;
        let mut scan = segment::scan(seg.bytes(), seg.first_index);
        let last = position + 1 == count;
        if let Some(index) = cut.filter(|_| last) {
            finish_truncation(&mut seg, &mut scan, index);
        }
        let later = &listed[position + 1..];
        // A sealed segment whose records stop short of the next segment (a damaged record,
        // or a missing segment in between): everything from there on was synced, so the log
        // is cut there (the claim made durable in this segment first, then every later
        // segment removed) and the range through the frontier reported lost.
        let short_of_next = match later.first() {
            Some((next_first, next_name)) => sealed_break(&seg, &scan, *next_first, next_name)?,
            None => None,
        };
        let cut_here = short_of_next.is_some();
        if !last && !cut_here {
            seg.set_records(scan.offsets, scan.end);
            if seg.header_needs_rewrite() {
                // Sealed and whole: every record was synced; the header says so again.
                seg.rewrite_synced_count();
                seg.sync()?;
            }
            // Scanned and sealed: its pages need not stay resident (see `Wal::roll`).
            super::release_or_warn(&mut seg);
        } else {
            let reason = short_of_next
                .or_else(|| scan.bad.clone())
                .unwrap_or_else(|| "no record".into());
            let claimed = claimed_end(&segments)
                .max(claimed_end(std::slice::from_ref(&seg)))
                .max(claimed_end_of_listed(fs, dir, later)?);
            let kept_end = seg.first_index + scan.offsets.len() as u64;
            // Damage below the frontier is a loss whatever follows it; whole records after
            // it may then be synced ones the count does not cover yet (SIM_FINDINGS 49).
            let below_frontier = claimed > kept_end;
            let (after_end, after_term) = {
                let here = records_after_damage(&seg, &scan, last_term, below_frontier);
                let in_later = match below_frontier {
                    true => records_in_listed(fs, dir, later)?,
                    false => (0, 0),
                };
                if in_later.0 > here.0 { in_later } else { here }
            };
            let mut claim_end = claimed.max(after_end);
            if let Some(index) = cut {
                // An interrupted truncation removed synced records on purpose; its sync
                // would have lowered the count.
                claim_end = claim_end.min(index);
            }
            if claim_end > kept_end {
                // The term of the frontier's entry, from the header whose count claims it
                // (a later segment's too: it is not removed before this point), or from
                // the last whole record found after the damage.
                let claim_term = [
                    term_claimed_at(&segments, claim_end),
                    term_claimed_at(std::slice::from_ref(&seg), claim_end),
                    term_claimed_at_listed(fs, dir, later, claim_end)?,
                    if after_end == claim_end {
                        after_term
                    } else {
                        0
                    },
                ]
                .into_iter()
                .max()
                .unwrap_or(0);
                let found = Lost {
                    from: kept_end,
                    through: claim_end - 1,
                    through_term: (claim_term > 0).then_some(claim_term),
                    file: seg.path.clone(),
                    offset: scan.end as u64,
                    reason,
                };
                log::error!("{found}; the node must fetch them again from its peers");
                lost = Some(found);
                seg.hold_claim(claim_records(claim_end, seg.first_index), claim_term);
            }
            // Synced with its claim before any later segment goes.
            repair_tail(&mut seg, scan, claim_end > kept_end)?;
        }
        if seg.len() > 0 {
            last_term = seg.term_at(seg.next_index() - 1);
        }
        segments.push(seg);
        if cut_here {
            remove_newest_first(fs, dir, later)?;
            break;
        }
    }
    for name in markers {
        let path = dir.join(name);
        fs.remove_file(&path)
            .map_err(|e| Error::io("remove truncation marker", &path, e))?;
    }
    // Segment names (a new segment, a removal) may be visible without being durable; the
    // node treats what it recovered as persisted, so make the directory durable too.
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    // The claim of a lost range may come from segments that are gone now; the segment
    // holding it is the one the log was cut in. The headers' counts as opened may still
    // count records an interrupted truncation removed on purpose: capped at its index, as
    // above (without the cap the active segment went on claiming them, and the next start
    // reported them lost: the storage simulation's seed 5 once it checked for false losses).
    let (claimed, claimed_term) = claimed_frontier(&segments);
    let (claimed, claimed_term) = match cut {
        Some(index) if index < claimed => (index, 0),
        _ => (claimed, claimed_term),
    };
    let lost_end = lost.as_ref().map_or(0, |l: &Lost| l.through + 1);
    let (claim_end, claim_term) = if lost_end > claimed {
        let term = lost.as_ref().and_then(|l| l.through_term).unwrap_or(0);
        (lost_end, term)
    } else {
        (claimed, claimed_term)
    };
    Ok(Recovered {
        segments,
        lost,
        claim_end,
        claim_term,
    })
}

/// Why a sealed segment's records stop short of the next segment, if they do: a damaged
/// record, or records missing before the next segment's first index (a segment lost in
/// between). Records running past the next segment's first index cannot be told apart from
/// that segment's: corruption.
fn sealed_break(
    seg: &Segment,
    scan: &segment::Scan,
    next_first: u64,
    next_name: &str,
) -> Result<Option<String>> {
    if let Some(reason) = &scan.bad {
        return Ok(Some(reason.clone()));
    }
    let end = seg.first_index + scan.offsets.len() as u64;
    if next_first < end {
        return Err(Error::corruption(
            &seg.path,
            scan.end as u64,
            format!(
                "records run through index {} but the next segment, {next_name}, starts at \
                 index {next_first}",
                end - 1
            ),
        ));
    }
    Ok((next_first > end).then(|| {
        format!(
            "end of the segment; the next one, {next_name}, starts at index {next_first}, so \
             a segment holding {end}..={} is missing",
            next_first - 1
        )
    }))
}

/// One past the highest index of valid records found after the damage, and the term of
/// that last record, in a segment whose header does not say how many records were synced
/// (version 1, or a damaged count), or when the damage lies below the synced frontier
/// (`below_frontier`); `(0, 0)` when there are none. A record with a later index and a
/// term no lower than the last good one can only be synced data behind the damage (a torn
/// write leaves no valid record after itself: storage/FORMAT.md §4.1), so it counts toward
/// the claim; the cut then loses it, and it is reported with the range before it. Below
/// the frontier the range is a loss anyway, and such a record may be one the node
/// acknowledged before its count reached the header (the newest batch: FORMAT.md §1.1); at
/// worst an unsynced record that happened to reach the disk, fetched again for nothing.
/// After an interrupted truncation what follows the cut is its remains, never evidence.
fn records_after_damage(
    seg: &Segment,
    scan: &segment::Scan,
    term_before: u64,
    below_frontier: bool,
) -> (u64, u64) {
    let counted = matches!(seg.opened_count, SyncedCount::Records(..));
    if (counted && !below_frontier) || scan.truncation_remains {
        return (0, 0);
    }
    let bytes = seg.bytes();
    let data_end = nonzero_end(bytes, scan.end);
    let mut expected = seg.first_index + scan.offsets.len() as u64;
    let mut min_term = match scan.offsets.last() {
        Some(&at) => segment::read_u64(bytes, at as usize + 16),
        None => term_before,
    };
    let mut from = scan.end;
    let mut found = (0, 0);
    while let Some((at, index)) = find_later_record(bytes, from, data_end, expected, min_term) {
        // The run of records from there on, and then any further one after it.
        let run = segment::scan_at(bytes, at, index);
        let run_end = index + run.offsets.len() as u64;
        let last_at = *run.offsets.last().expect("the found record is valid") as usize;
        min_term = segment::read_u64(bytes, last_at + 16);
        found = (run_end, min_term);
        expected = run_end;
        from = run.end.max(at + 1);
    }
    found
}

/// One past the highest index the listed segments show synced: each one's existence shows
/// everything before its first index was (a segment is sealed before the next is created),
/// and its header may claim more. A segment that does not open (not one this crate wrote
/// under that name: `Segment::open`) is an error: the caller removes these segments, and
/// must not remove what it does not understand.
fn claimed_end_of_listed(fs: &dyn Fs, dir: &Path, listed: &[(u64, String)]) -> Result<u64> {
    let mut end = 0;
    for (first_index, name) in listed {
        let seg = Segment::open(fs, dir.join(name), *first_index)?;
        end = end
            .max(claimed_end(std::slice::from_ref(&seg)))
            .max(*first_index);
    }
    Ok(end)
}

/// The term the listed segments' headers record for the entry before `end` (0: none does).
/// One past the last whole record of the listed segments (the ones after a cut, about to be
/// removed), each scanned from its start, and that record's term; `(0, 0)` when they hold
/// none. Their records were synced, or lie in the last segment beyond its count (the newest
/// batch, maybe acknowledged: SIM_FINDINGS 49), so they count toward the claim.
fn records_in_listed(fs: &dyn Fs, dir: &Path, listed: &[(u64, String)]) -> Result<(u64, u64)> {
    let mut found = (0, 0);
    for (first_index, name) in listed {
        let seg = Segment::open(fs, dir.join(name), *first_index)?;
        let scan = segment::scan(seg.bytes(), seg.first_index);
        if let Some(&at) = scan.offsets.last() {
            let end = seg.first_index + scan.offsets.len() as u64;
            if end > found.0 {
                found = (end, segment::read_u64(seg.bytes(), at as usize + 16));
            }
        }
    }
    Ok(found)
}

fn term_claimed_at_listed(
    fs: &dyn Fs,
    dir: &Path,
    listed: &[(u64, String)],
    end: u64,
) -> Result<u64> {
    let mut term = 0;
    for (first_index, name) in listed {
        let seg = Segment::open(fs, dir.join(name), *first_index)?;
        term = term.max(term_claimed_at(std::slice::from_ref(&seg), end));
    }
    Ok(term)
}

/// Removes the listed segments newest first, syncing the directory after each, so a crash
/// leaves a contiguous run of segments.
fn remove_newest_first(fs: &dyn Fs, dir: &Path, listed: &[(u64, String)]) -> Result<()> {
    for (_, name) in listed.iter().rev() {
        let path = dir.join(name);
        log::warn!("removing {} (after a damaged record)", path.display());
        fs.remove_file(&path)
            .map_err(|e| Error::io("remove segment after damage", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    Ok(())
}

/// The count a segment starting at `first_index` writes to claim everything before
/// `claim_end` as synced.
pub(crate) fn claim_records(claim_end: u64, first_index: u64) -> u32 {
    u32::try_from(claim_end.saturating_sub(first_index)).unwrap_or(u32::MAX)
}

/// A truncation from `index` was under way in the last segment when the node stopped: its
/// records from `index` on were being zeroed, so whatever lies there (old records, zeroes or
/// a mix) is the remains of records the log was dropping, not damage. The scan is cut at
/// `index` when it reached it; the tail repair then zeroes the rest durably.
fn finish_truncation(seg: &mut Segment, scan: &mut segment::Scan, index: u64) {
    if index < seg.first_index {
        return;
    }
    let keep = (index - seg.first_index) as usize;
    if scan.offsets.len() < keep {
        return; // Damage before the cut is not the truncation's doing.
    }
    if let Some(&at) = scan.offsets.get(keep) {
        scan.end = at as usize;
        scan.offsets.truncate(keep);
    }
    log::warn!(
        "{}: finishing a truncation from index {index} that a crash interrupted",
        seg.path.display()
    );
    scan.bad = None;
    scan.truncation_remains = true;
}

/// Cuts the segment after its last valid record and zeroes what follows durably: a torn
/// write never acknowledged, or the damaged start of a range the caller reported lost.
fn repair_tail(seg: &mut Segment, scan: segment::Scan, lost: bool) -> Result<()> {
    let end = scan.end;
    let data_end = nonzero_end(seg.bytes(), end);
    if data_end > end {
        let what = match seg.opened_count {
            _ if lost => "the damaged records (reported lost)",
            SyncedCount::Records(..) => "an unsynced tail",
            SyncedCount::Unrecorded | SyncedCount::Damaged => "a torn tail",
        };
        log::warn!(
            "{}: cutting {what} at offset {end} ({} bytes; {})",
            seg.path.display(),
            data_end - end,
            scan.bad.as_deref().unwrap_or("zero record length")
        );
    }
    if matches!(seg.opened_count, SyncedCount::Damaged) {
        log::warn!(
            "{}: the synced count in the header is damaged; judging the tail without it",
            seg.path.display()
        );
        seg.rewrite_synced_count();
    }
    seg.set_records(scan.offsets, end);
    seg.zero(end..data_end)?;
    // What recovery found may still be only in the page cache (the process was killed before
    // it synced). The node treats everything recovered as persisted, so make it so.
    // After an interrupted truncation the zeroes seen past `end` may be unsynced too, over
    // old records still on the disk: sync the whole rest of the segment before the marker
    // that explains them is removed.
    let synced_end = if scan.truncation_remains {
        seg.bytes().len()
    } else {
        end.max(data_end)
    };
    seg.mark_dirty(SEGMENT_HEADER_BYTES..synced_end);
    // The header's count as read may be in the page cache only (a lowering by a truncation
    // whose sync failed): written again, so that the sync makes it durable with the rest
    // (without it a later power loss brought back the older count, which claimed the
    // records the truncation removed: the storage simulation's seed 146).
    seg.rewrite_synced_count();
    seg.sync()
}

/// Searches `bytes[from..]` for a valid record with index `>= expected` and term `>= min_term`;
/// returns its offset and index. `data_end` is one past the last non-zero byte of `bytes`
/// ([`nonzero_end`]): a record starts with its non-zero length, so one starting at `at` has a
/// non-zero byte in `at..at + 4` and `at < data_end`; only those starts are tried (the record
/// itself may run on into zeroes, and is decoded in full). Without
/// that bound a torn tail early in a preallocated segment cost a try at every byte up to the
/// segment's end (docs/BENCHMARKS.md, "WAL recovery").
fn find_later_record(
    bytes: &[u8],
    from: usize,
    data_end: usize,
    expected: u64,
    min_term: u64,
) -> Option<(usize, u64)> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from..data_end.min(last_start + 1)).find_map(|at| {
        let index = segment::read_u64(bytes, at + 8);
        let term = segment::read_u64(bytes, at + 16);
        if index < expected || index - expected > u64::from(u32::MAX) || term < min_term {
            return None;
        }
        match segment::decode_slot(bytes, at) {
            Slot::Valid { index, .. } => Some((at, index)),
            _ => None,
        }
    })
}

/// Offset one past the last non-zero byte at or after `from` (`from` if there is none).
/// Scans backwards a chunk at a time, comparing each with zeroes (a `memcmp`, fast even in
/// a debug build, where a byte loop over a 64 MiB segment took about half a second).
fn nonzero_end(bytes: &[u8], from: usize) -> usize {
    const CHUNK: usize = 4096;
    const ZEROES: [u8; CHUNK] = [0; CHUNK];
    let tail = &bytes[from.min(bytes.len())..];
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &tail[start..end];
        if chunk != &ZEROES[..chunk.len()] {
            let last = chunk.iter().rposition(|&b| b != 0).unwrap_or(0);
            return from + start + last + 1;
        }
        end = start;
    }
    from
}
