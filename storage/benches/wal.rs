//! WAL benchmark: appends of 100-byte entries in batches of 1, 16 and 256 with one sync per
//! batch, next to a raw `pwrite + fdatasync` loop of the same sizes in the same run; then
//! recovery of a WAL holding 1 M 100-byte entries; then a lagging follower's catch-up reads of
//! that log through the maps and with positional reads; then reopening a 64 MiB segment with
//! a torn tail.
//!
//! Run: `cargo bench -p rcraft-storage --bench wal` (release). Prints Markdown tables. Names
//! after `--` run only those parts: `appends`, `segments`, `recovery`, `catch-up`,
//! `torn-tail` (e.g.
//! `cargo bench -p rcraft-storage --bench wal --profile dev -- torn-tail` for a debug build).
//! Set `RCRAFT_BENCH_DIR` to benchmark another disk (default: the system temp directory).

use hdrhistogram::Histogram;
use rcraft_storage::fs::{Preallocate, SyncMethod};
use rcraft_storage::{RealFs, Record, Wal, WalOptions};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: usize = PAYLOAD_BYTES + 24;
const RECOVERY_ENTRIES: u64 = 1_000_000;
/// Bytes appended by the no-sync rows (within one default segment).
const APPEND_ONLY_BYTES: usize = 48 << 20;
/// The raw loop every WAL row is compared with.
const BASELINE: &str = "raw pwrite+fdatasync, preallocated";

/// Batch sizes and how many batches to time for each.
const BATCHES: [(usize, usize); 3] = [(1, 2000), (16, 1000), (256, 400)];

struct Measured {
    name: String,
    batch: usize,
    histogram: Histogram<u64>,
    total: Duration,
    entries: usize,
}

impl Measured {
    fn new(name: &str, batch: usize) -> Self {
        Measured {
            name: name.to_string(),
            batch,
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
            total: Duration::ZERO,
            entries: 0,
        }
    }

    fn record(&mut self, elapsed: Duration, entries: usize) {
        self.histogram
            .record(elapsed.as_nanos() as u64)
            .expect("in range");
        self.total += elapsed;
        self.entries += entries;
    }

    fn per_second(&self) -> f64 {
        self.entries as f64 / self.total.as_secs_f64()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("RCRAFT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn wal_options(fs: RealFs) -> WalOptions {
    WalOptions {
        fs: Arc::new(fs),
        ..WalOptions::default()
    }
}

/// One way of persisting batches: runs one batch (write + sync) per call, returning its latency.
type Runner = Box<dyn FnMut() -> Duration>;

/// A WAL in its own temporary directory, appending `batch` records per call, syncing each time
/// unless `sync` is false (to show the CPU cost alone).
fn wal_runner(fs: RealFs, batch: usize, sync: bool) -> Runner {
    let dir = tempdir();
    let mut wal = Wal::open(dir.path(), wal_options(fs)).expect("open");
    let payload = vec![0x5Au8; PAYLOAD_BYTES];
    let mut next = 1u64;
    Box::new(move || {
        let _keep = &dir;
        let records: Vec<Record<'_>> = (0..batch as u64)
            .map(|k| Record {
                index: next + k,
                term: 1,
                payload: &payload,
            })
            .collect();
        let start = Instant::now();
        wal.append(&records).expect("append");
        if sync {
            wal.sync().expect("sync");
        }
        next += batch as u64;
        start.elapsed()
    })
}

/// The raw baseline: no encoding, just `pwrite` the batch's bytes and `fdatasync`, either into
/// a zero-filled file (like a WAL segment) or appending to an empty one.
fn raw_runner(preallocated: bool, batch: usize, batches: usize) -> Runner {
    let dir = tempdir();
    let path = dir.path().join("raw");
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let bytes = vec![0x5Au8; batch * RECORD_BYTES];
    if preallocated {
        let zeroes = vec![0u8; 1 << 20];
        let mut left = (batches + WARM_UP_BATCHES) * bytes.len();
        while left > 0 {
            let n = left.min(zeroes.len());
            file.write_all(&zeroes[..n]).expect("zero fill");
            left -= n;
        }
        file.sync_all().expect("sync");
    }
    let mut offset = 0u64;
    Box::new(move || {
        let _keep = &dir;
        let start = Instant::now();
        file.write_all_at(&bytes, offset).expect("write");
        file.sync_data().expect("fdatasync");
        offset += bytes.len() as u64;
        start.elapsed()
    })
}

/// Batches run before measuring (the WAL creates its first segment then).
const WARM_UP_BATCHES: usize = 10;

/// Runs every variant one batch at a time, round robin, so that the disk's latency swings
/// (large on shared virtual machines) hit all of them alike.
fn measure_interleaved(
    batch: usize,
    batches: usize,
    variants: Vec<(String, Runner)>,
) -> Vec<Measured> {
    let mut runners = Vec::new();
    let mut measured = Vec::new();
    for (name, runner) in variants {
        measured.push(Measured::new(&name, batch));
        runners.push(runner);
    }
    for _ in 0..WARM_UP_BATCHES {
        runners.iter_mut().for_each(|run| {
            run();
        });
    }
    let count = runners.len();
    for round in 0..batches {
        // Rotate who goes first, so no variant always follows the same neighbour.
        for turn in 0..count {
            let which = (round + turn) % count;
            let elapsed = runners[which]();
            measured[which].record(elapsed, batch);
        }
    }
    measured
}

fn print_appends(rows: &[Measured]) {
    println!(
        "| batch | what | entries/s | p50 per batch (us) | p99 per batch (us) | p50 vs raw prealloc |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for row in rows {
        let baseline = rows
            .iter()
            .find(|r| r.batch == row.batch && r.name == BASELINE)
            .expect("baseline measured");
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2}x |",
            row.batch,
            row.name,
            row.per_second(),
            row.quantile_us(0.5),
            row.quantile_us(0.99),
            row.quantile_us(0.5) / baseline.quantile_us(0.5),
        );
    }
}

fn configurations() -> Vec<(&'static str, RealFs)> {
    let fs = |preallocate, sync_method| RealFs {
        preallocate,
        sync_method,
    };
    vec![
        (
            "wal zero-fill + fdatasync",
            fs(Preallocate::ZeroFill, SyncMethod::Fdatasync),
        ),
        (
            "wal zero-fill + msync",
            fs(Preallocate::ZeroFill, SyncMethod::Msync),
        ),
        (
            "wal fallocate + fdatasync",
            fs(Preallocate::Fallocate, SyncMethod::Fdatasync),
        ),
        (
            "wal fallocate + msync",
            fs(Preallocate::Fallocate, SyncMethod::Msync),
        ),
    ]
}

fn bench_appends() {
    let mut rows = Vec::new();
    for (batch, batches) in BATCHES {
        let mut variants: Vec<(String, Runner)> = vec![
            (BASELINE.into(), raw_runner(true, batch, batches)),
            (
                "raw write+fdatasync, appending".into(),
                raw_runner(false, batch, batches),
            ),
        ];
        for (name, fs) in configurations() {
            variants.push((name.into(), wal_runner(fs, batch, true)));
        }
        rows.extend(measure_interleaved(batch, batches, variants));
    }
    print_appends(&rows);
    println!();
    println!(
        "| batch | WAL append without sync (CPU cost only) | entries/s | p50 per batch (us) | p99 per batch (us) |"
    );
    println!("|---:|---|---:|---:|---:|");
    for (batch, _) in BATCHES {
        let variants = vec![(
            "wal append, no sync".to_string(),
            wal_runner(RealFs::default(), batch, false),
        )];
        // Stay inside the first segment: creating segments is not what this row measures.
        let batches = (APPEND_ONLY_BYTES / (batch * RECORD_BYTES)).min(20_000);
        let row = measure_interleaved(batch, batches, variants).remove(0);
        println!(
            "| {batch} | {} | {:.0} | {:.2} | {:.2} |",
            row.name,
            row.per_second(),
            row.quantile_us(0.5),
            row.quantile_us(0.99)
        );
    }
}

/// Evicts a file's pages from the page cache so the next read comes from the disk.
fn evict_from_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = File::open(path).expect("open for fadvise");
    // SAFETY: `posix_fadvise` only reads its integer arguments; `file` keeps the descriptor
    // open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}

fn bench_recovery() {
    let dir = tempdir();
    let options = wal_options(RealFs::default());
    write_entries(dir.path(), &options);
    let segments = Wal::open(dir.path(), options.clone())
        .expect("open")
        .segment_paths();
    println!(
        "| recovery of {RECOVERY_ENTRIES} x {PAYLOAD_BYTES}-byte entries ({} segments) | open (ms) | open + read every entry (ms) |",
        segments.len()
    );
    println!("|---|---:|---:|");
    for cold in [false, true] {
        if cold {
            segments.iter().for_each(|path| evict_from_cache(path));
        }
        let start = Instant::now();
        let wal = Wal::open(dir.path(), options.clone()).expect("recover");
        let opened = start.elapsed();
        assert_eq!(wal.last_index(), RECOVERY_ENTRIES);
        let bytes: usize = wal
            .entries_from(1)
            .expect("iterate")
            .map(|r| r.payload.len())
            .sum();
        let read = start.elapsed();
        assert_eq!(bytes, RECOVERY_ENTRIES as usize * PAYLOAD_BYTES);
        let label = if cold {
            "cold page cache (fadvise DONTNEED)"
        } else {
            "warm page cache"
        };
        println!("| {label} | {:.1} | {:.1} |", ms(opened), ms(read));
    }
}

/// Writes `RECOVERY_ENTRIES` 100-byte entries, synced, into a WAL in `dir`.
fn write_entries(dir: &Path, options: &WalOptions) {
    let mut wal = Wal::open(dir, options.clone()).expect("open");
    let payload = vec![0xA5u8; PAYLOAD_BYTES];
    let mut next = 1u64;
    while next <= RECOVERY_ENTRIES {
        let count = 4096.min(RECOVERY_ENTRIES + 1 - next);
        let records: Vec<Record<'_>> = (0..count)
            .map(|k| Record {
                index: next + k,
                term: 1 + (next + k) / 100_000,
                payload: &payload,
            })
            .collect();
        wal.append(&records).expect("append");
        next += count;
    }
    wal.sync().expect("sync");
}

/// One sweep of a lagging follower's catch-up over the whole log, in batches of `batch`
/// records, as the node did before positional reads: records borrowed from the maps, each
/// one's checksum checked and its bytes copied (what `entry_from_record` does), then the
/// sealed segments' pages let go of.
fn catch_up_through_map(wal: &mut Wal, batch: u64) -> usize {
    let mut copied = 0;
    let mut low = 1;
    while low <= RECOVERY_ENTRIES {
        let high = (low + batch).min(RECOVERY_ENTRIES + 1);
        for record in wal.read(low..high).expect("read") {
            assert!(record.checksum_matches());
            copied += record.encoded.to_vec().len();
        }
        wal.release_sealed_pages_of(low..high);
        low = high;
    }
    copied
}

/// The same sweep as the node does it now: `Wal::read_copies` (one `pread` per segment
/// touched, each record checked), then the same check and copy per record.
fn catch_up_with_positional_reads(wal: &Wal, batch: u64) -> usize {
    let mut copied = 0;
    let mut low = 1;
    while low <= RECOVERY_ENTRIES {
        let high = (low + batch).min(RECOVERY_ENTRIES + 1);
        let copies = wal.read_copies(low..high, u64::MAX).expect("read");
        for record in copies.iter() {
            assert!(record.checksum_matches());
            copied += record.encoded.to_vec().len();
        }
        low = high;
    }
    copied
}

/// Catch-up reads of the whole log (1 M entries of 100 bytes) in batches of 64 KiB and 1 MiB
/// of records: through the maps (before) and with positional reads (now), alternating, 5
/// rounds each, warm page cache; then one cold sweep each (pages evicted first).
fn bench_catch_up() {
    let dir = tempdir();
    let options = wal_options(RealFs::default());
    write_entries(dir.path(), &options);
    let mut wal = Wal::open(dir.path(), options).expect("open");
    wal.release_sealed_pages();
    let segments = wal.segment_paths();
    let total = RECOVERY_ENTRIES as usize * RECORD_BYTES;
    println!(
        "| catch-up sweep of {RECOVERY_ENTRIES} x {PAYLOAD_BYTES}-byte entries ({} segments) | batch | min (ms) | median (ms) | median / map median |",
        segments.len()
    );
    println!("|---|---:|---:|---:|---:|");
    for batch_bytes in [64usize << 10, 1 << 20] {
        let batch = (batch_bytes / RECORD_BYTES) as u64;
        let mut map = Vec::new();
        let mut pread = Vec::new();
        for round in 0..10 {
            let start = Instant::now();
            let copied = if round % 2 == 0 {
                catch_up_through_map(&mut wal, batch)
            } else {
                catch_up_with_positional_reads(&wal, batch)
            };
            let took = ms(start.elapsed());
            assert_eq!(copied, total);
            if round % 2 == 0 { &mut map } else { &mut pread }.push(took);
        }
        let stats = |times: &mut Vec<f64>| {
            times.sort_by(f64::total_cmp);
            (times[0], times[times.len() / 2])
        };
        let (map_min, map_median) = stats(&mut map);
        let (pread_min, pread_median) = stats(&mut pread);
        let kib = batch_bytes >> 10;
        println!(
            "| through the map (before; baseline) | {kib} KiB | {map_min:.1} | {map_median:.1} | 1.00x |"
        );
        println!(
            "| positional reads (now) | {kib} KiB | {pread_min:.1} | {pread_median:.1} | {:.2}x |",
            pread_median / map_median
        );
    }
    let batch = ((1 << 20) / RECORD_BYTES) as u64;
    let mut cold = Vec::new();
    for positional in [false, true] {
        segments.iter().for_each(|path| evict_from_cache(path));
        let start = Instant::now();
        if positional {
            catch_up_with_positional_reads(&wal, batch);
        } else {
            catch_up_through_map(&mut wal, batch);
        }
        cold.push(ms(start.elapsed()));
    }
    println!(
        "| through the map, cold page cache | 1024 KiB | {0:.1} | {0:.1} | 1.00x |",
        cold[0]
    );
    println!(
        "| positional reads, cold page cache | 1024 KiB | {0:.1} | {0:.1} | {1:.2}x |",
        cold[1],
        cold[1] / cold[0]
    );
}

/// Entries written before the torn tail of `bench_torn_tail`.
const TORN_TAIL_ENTRIES: u64 = 10_000;

/// Reopening a WAL whose one 64 MiB segment ends in a torn write (the second half of its
/// last record zeroed) after `TORN_TAIL_ENTRIES` entries, the rest of the segment zero as
/// preallocated: with the synced frontier in the header, and with a version-1 header (no
/// frontier), whose torn tail is told from damage by looking for a valid record after it.
fn bench_torn_tail() {
    println!(
        "| reopening a 64 MiB segment with a torn tail after {TORN_TAIL_ENTRIES} entries, 3 runs | min (ms) | max (ms) |"
    );
    println!("|---|---:|---:|");
    for version_1 in [false, true] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let dir = tempdir();
            let options = wal_options(RealFs::default());
            let mut wal = Wal::open(dir.path(), options.clone()).expect("open");
            let payload = vec![0xA5u8; PAYLOAD_BYTES];
            let records: Vec<Record<'_>> = (1..=TORN_TAIL_ENTRIES)
                .map(|index| Record {
                    index,
                    term: 1,
                    payload: &payload,
                })
                .collect();
            // Synced through the next-to-last entry; the last one is the write in flight.
            let (synced, in_flight) = records.split_at(records.len() - 1);
            wal.append(synced).expect("append");
            wal.sync().expect("sync");
            wal.append(in_flight).expect("append");
            let path = wal.segment_paths().pop().expect("a segment");
            drop(wal);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open");
            let last_end = 32 + TORN_TAIL_ENTRIES * RECORD_BYTES as u64;
            let half = RECORD_BYTES / 2;
            file.write_all_at(&vec![0; half], last_end - half as u64)
                .expect("tear");
            if version_1 {
                // The first header format: version 1, no synced count (storage/FORMAT.md §1).
                let mut header = [0u8; 32];
                file.read_exact_at(&mut header, 0).expect("header");
                header[8..12].copy_from_slice(&1u32.to_le_bytes());
                header[12..16].fill(0);
                let crc = crc32c::crc32c(&header[0..24]);
                header[24..28].copy_from_slice(&crc.to_le_bytes());
                header[28..32].fill(0);
                file.write_all_at(&header, 0).expect("header");
            }
            drop(file);
            let start = Instant::now();
            let wal = Wal::open(dir.path(), options).expect("recover");
            times.push(start.elapsed());
            assert_eq!(wal.last_index(), TORN_TAIL_ENTRIES - 1);
        }
        let label = if version_1 {
            "version-1 header (no synced frontier): look for a later record"
        } else {
            "synced frontier in the header"
        };
        let min = times.iter().min().expect("runs");
        let max = times.iter().max().expect("runs");
        println!("| {label} | {:.1} | {:.1} |", ms(*min), ms(*max));
    }
}

/// The cost of starting a segment: the first append + sync of a fresh WAL creates its first
/// 64 MiB segment exactly as a roll does (seal aside).
fn bench_segment_creation() {
    println!("| creating a 64 MiB segment (first append + sync), 5 runs | min (ms) | max (ms) |");
    println!("|---|---:|---:|");
    for (name, fs) in configurations() {
        if fs.sync_method != SyncMethod::Fdatasync {
            // Segment creation does not depend on the sync method.
            continue;
        }
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut runner = wal_runner(fs, 1, true);
            times.push(ms(runner()));
        }
        let min = times.iter().copied().fold(f64::MAX, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        println!("| {name} | {min:.1} | {max:.1} |");
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run both the same.
    // Names after `--` run only those parts (`appends`, `segments`, `recovery`, `catch-up`,
    // `torn-tail`).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let parts: [(&str, fn()); 5] = [
        ("appends", bench_appends),
        ("segments", bench_segment_creation),
        ("recovery", bench_recovery),
        ("catch-up", bench_catch_up),
        ("torn-tail", bench_torn_tail),
    ];
    for (name, run) in parts {
        if only.is_empty() || only.iter().any(|o| o == name) {
            run();
            println!();
        }
    }
}
