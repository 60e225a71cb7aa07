//! The consensus core must stay pure (DESIGN.md §4, issue 3): no clocks, threads, channels,
//! locks, files, sockets, ambient randomness, hash-ordered collections or storage. This test
//! scans every source file under `src/core/` and fails on any forbidden path or crate.

use std::path::Path;

/// Substrings that must not appear in core source code (outside this list's own file).
const FORBIDDEN: &[&str] = &[
    "std::time",
    "std::thread",
    "std::sync",
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::env",
    "HashMap",
    "HashSet",
    "crossbeam",
    "mio::",
    "parking_lot",
    "rand::",
    "rand_",
    "rcraft_storage",
    "storage::",
    "Instant",
    "SystemTime",
    "unsafe",
];

#[test]
fn core_sources_use_nothing_impure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("src/core exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the core's files in {}",
        dir.display()
    );
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    violations.push(format!(
                        "{}:{}: `{}`: {}",
                        file.display(),
                        number + 1,
                        word,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "impure code in the core:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_would_catch_a_forbidden_import() {
    // Guard against a scan that silently matches nothing.
    let sample = "use std::collections::HashMap;\nuse std::time::Instant;";
    let hits = FORBIDDEN.iter().filter(|w| sample.contains(*w)).count();
    assert!(hits >= 3);
}
