//! The consensus core must stay pure (DESIGN.md §4, issue 3): no clocks, threads, channels,
//! locks, files, sockets, ambient randomness, hash-ordered collections or storage. This test
//! scans every source file under `src/core/`, subfolders included, and fails on any forbidden
//! path or crate.
//!
//! Two scans run over each file. The first looks for forbidden substrings anywhere in the raw
//! text, comments included. The second lexes the code (comments and literals removed), expands
//! every `use` tree, grouped and nested lists included, into full paths, and checks those and
//! every path written in the code: `use std::{fs, io::Write}` names `std::fs` although the text
//! never contains that substring, and so does `std :: fs :: read` in an expression.

use std::path::{Path, PathBuf};

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

/// Crate roots that expose the standard library's modules: `core::` and `alloc::` mirror parts
/// of `std::` (`core::sync::atomic`, `alloc::sync::Arc`), so their paths are checked as `std::`.
const STD_ROOTS: &[&str] = &["std", "core", "alloc"];

#[test]
fn core_sources_use_nothing_impure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let files = rust_files_under(&dir);
    assert!(
        files.len() >= 10,
        "expected the core's files in {}",
        dir.display()
    );
    let violations = scan_files(&files);
    assert!(
        violations.is_empty(),
        "impure code in the core:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_would_catch_a_forbidden_import() {
    // Guard against a scan that silently matches nothing: every line here is impure.
    let samples = [
        "use std::collections::HashMap;",
        "use std::time::Instant;",
        "use std::fs;",
        "use crossbeam_channel::Sender;",
    ];
    for sample in samples {
        assert!(
            !scan_source("sample.rs", sample).is_empty(),
            "the scan missed `{sample}`"
        );
    }
}

#[test]
fn the_scan_catches_grouped_imports_and_paths_in_code() {
    let bad = [
        "use std::{fs, fmt};",
        "use std::{collections::HashMap, fmt};",
        "use std::{\n    cmp::Ordering,\n    sync::{atomic::AtomicU64, Arc},\n};",
        "use ::std::{io::{self, Write}};",
        "use std::{self as s};",
        "use core::{time::Duration};",
        "fn f() { let _ = std :: fs :: read(\"x\"); }",
        "fn f() -> std::\n    io::Result<()> { Ok(()) }",
    ];
    for sample in bad {
        let hits = path_violations("sample.rs", sample);
        assert!(!hits.is_empty(), "the path scan missed `{sample}`");
    }
    // Pure code passes, also when comments and strings mention forbidden paths.
    let good = "use std::{cmp::Ordering, collections::{BTreeMap, VecDeque}, fmt};\n\
                use crate::core::log::Log;\n\
                // use std::{fs};\n\
                /* std::thread::spawn */\n\
                fn f() -> &'static str { let _ = std::mem::take(&mut 1); \"std::{fs}\" }";
    let hits = path_violations("sample.rs", good);
    assert!(hits.is_empty(), "false alarms: {hits:?}");
}

#[test]
fn the_scan_reaches_files_in_subfolders() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let nested = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&nested).expect("create subfolders");
    std::fs::write(dir.path().join("clean.rs"), "use std::fmt;\n").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "use std::fs;\n").expect("write");
    std::fs::write(nested.join("bad.rs"), "use std::{fmt, fs};\n").expect("write");
    let files = rust_files_under(dir.path());
    assert_eq!(files.len(), 2, "found {files:?}");
    let violations = scan_files(&files);
    assert_eq!(violations.len(), 1, "violations: {violations:?}");
    assert!(
        violations[0].contains("bad.rs:1:") && violations[0].contains("std::fs"),
        "unexpected report {violations:?}"
    );
}

/// Every `.rs` file under `dir`, at any depth, in a stable order.
fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read directory {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Violations in all `files`, one line each: `path:line: what: detail`.
fn scan_files(files: &[PathBuf]) -> Vec<String> {
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        violations.extend(scan_source(&file.display().to_string(), &text));
    }
    violations
}

/// Both scans over one file's text.
fn scan_source(name: &str, text: &str) -> Vec<String> {
    let mut violations = substring_violations(name, text);
    violations.extend(path_violations(name, text));
    violations
}

/// Lines of the raw text, comments included, that contain a [`FORBIDDEN`] substring.
fn substring_violations(name: &str, text: &str) -> Vec<String> {
    let mut violations = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for word in FORBIDDEN.iter().filter(|word| line.contains(*word)) {
            let line = line.trim();
            violations.push(format!("{name}:{}: `{word}`: {line}", number + 1));
        }
    }
    violations
}

/// Forbidden paths named by `use` trees (expanded) or written in the code.
fn path_violations(name: &str, text: &str) -> Vec<String> {
    let tokens = lex(text);
    let mut paths = use_paths(&tokens);
    paths.extend(code_paths(&tokens));
    let mut violations = Vec::new();
    for (line, segments) in paths {
        if let Some(why) = forbidden_path(&segments) {
            let path = segments.join("::");
            violations.push(format!("{name}:{line}: `{why}`: path `{path}`"));
        }
    }
    violations.sort();
    violations.dedup();
    violations
}

/// Why a full path is forbidden, if it is: it names a [`FORBIDDEN`] module, crate or type, or
/// it is a standard library root on its own (`use std as s;` would let `s::fs` pass unseen).
fn forbidden_path(segments: &[String]) -> Option<&'static str> {
    let mut segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if segments.last() == Some(&"self") {
        segments.pop();
    }
    let root = *segments.first()?;
    if STD_ROOTS.contains(&root) {
        if segments.len() == 1 {
            return Some("a standard library root imported on its own");
        }
        segments[0] = "std";
    }
    // The trailing `::` lets entries like `mio::` match a path that ends at the crate.
    let joined = format!("{}::", segments.join("::"));
    FORBIDDEN.iter().copied().find(|word| joined.contains(word))
}

/// One token of code, with the 1-based line it starts on.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

/// Splits Rust source into identifiers, `::` and single punctuation characters. Comments,
/// string, byte-string, raw-string and character literals are dropped, so nothing they mention
/// counts as code; lifetimes such as `'a` are kept apart from character literals.
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        at: 0,
        line: 1,
    };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token() {
        tokens.push(token);
    }
    tokens
}

struct Lexer<'a> {
    chars: &'a [char],
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let c = self.peek(0)?;
            let line = self.line;
            match c {
                _ if c.is_whitespace() => {
                    self.bump();
                }
                '/' if self.peek(1) == Some('/') => self.skip_line_comment(),
                '/' if self.peek(1) == Some('*') => self.skip_block_comment(),
                '"' => self.skip_string(),
                'r' | 'b' if self.at_raw_or_byte_literal() => self.skip_raw_or_byte_literal(),
                '\'' if self.at_char_literal() => self.skip_char_literal(),
                _ if is_identifier_char(c) => return Some(self.identifier(line)),
                ':' if self.peek(1) == Some(':') => {
                    self.at += 2;
                    let text = "::".to_string();
                    return Some(Token { text, line });
                }
                _ => {
                    self.bump();
                    let text = c.to_string();
                    return Some(Token { text, line });
                }
            }
        }
    }

    fn identifier(&mut self, line: usize) -> Token {
        let start = self.at;
        while self.peek(0).is_some_and(is_identifier_char) {
            self.bump();
        }
        let text = self.chars[start..self.at].iter().collect();
        Token { text, line }
    }

    fn skip_line_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Block comments nest in Rust.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.bump() {
            if c == '/' && self.peek(0) == Some('*') {
                self.bump();
                depth += 1;
            } else if c == '*' && self.peek(0) == Some('/') {
                self.bump();
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// Skips a `"..."` literal with backslash escapes, starting at its opening quote.
    fn skip_string(&mut self) {
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    /// True at `b"`, `b'`, `r"`, `r#"`, `br"` or `br#"`. Called only where a token starts,
    /// so never inside an identifier such as `bar`.
    fn at_raw_or_byte_literal(&self) -> bool {
        let mut ahead = 0;
        if self.peek(0) == Some('b') {
            if self.peek(1) == Some('\'') {
                return true;
            }
            ahead = 1;
        }
        if self.peek(ahead) == Some('r') {
            ahead += 1;
            while self.peek(ahead) == Some('#') {
                ahead += 1;
            }
        }
        ahead > 0 && self.peek(ahead) == Some('"')
    }

    fn skip_raw_or_byte_literal(&mut self) {
        if self.peek(0) == Some('b') {
            self.bump();
            match self.peek(0) {
                Some('"') => return self.skip_string(),
                Some('\'') => return self.skip_char_literal(),
                _ => {}
            }
        }
        self.bump(); // the `r`
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump(); // the opening quote
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                self.at += hashes;
                return;
            }
        }
    }

    /// A quote starts a character literal when it closes after one character or an escape;
    /// otherwise it starts a lifetime or label.
    fn at_char_literal(&self) -> bool {
        match self.peek(1) {
            Some('\\') => true,
            Some(_) => self.peek(2) == Some('\''),
            None => false,
        }
    }

    fn skip_char_literal(&mut self) {
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '\'' => return,
                _ => {}
            }
        }
    }
}

/// Every full path named by a `use` item or `extern crate` item, with the item's line.
fn use_paths(tokens: &[Token]) -> Vec<(usize, Vec<String>)> {
    let mut paths = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.text == "use" {
            let mut parser = UseTreeParser {
                tokens,
                at: i + 1,
                line: token.line,
                paths: &mut paths,
            };
            parser.tree(Vec::new());
        } else if token.text == "extern" && tokens.get(i + 1).is_some_and(|t| t.text == "crate") {
            if let Some(name) = tokens.get(i + 2) {
                paths.push((token.line, vec![name.text.clone()]));
            }
        }
    }
    paths
}

/// Expands one use tree (`a::b::{c, d::{e as f, *}}`) into full paths.
struct UseTreeParser<'a> {
    tokens: &'a [Token],
    at: usize,
    line: usize,
    paths: &'a mut Vec<(usize, Vec<String>)>,
}

impl UseTreeParser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(|t| t.text.as_str())
    }

    /// Parses a tree below `prefix`, recording each leaf's full path.
    fn tree(&mut self, mut prefix: Vec<String>) {
        if self.peek() == Some("::") {
            self.at += 1;
        }
        loop {
            match self.peek() {
                Some("{") => {
                    self.at += 1;
                    return self.group(&prefix);
                }
                Some("*") => {
                    self.at += 1;
                    prefix.push("*".to_string());
                    break;
                }
                Some(word) if is_identifier(word) => {
                    prefix.push(word.to_string());
                    self.at += 1;
                    if self.peek() != Some("::") {
                        break;
                    }
                    self.at += 1;
                }
                _ => break,
            }
        }
        if self.peek() == Some("as") {
            self.at += 2; // `as` and the alias
        }
        if !prefix.is_empty() {
            self.paths.push((self.line, prefix));
        }
    }

    /// Parses `tree, tree, ... }` after an opening brace.
    fn group(&mut self, prefix: &[String]) {
        loop {
            match self.peek() {
                None | Some(";") => return,
                Some("}") => {
                    self.at += 1;
                    return;
                }
                Some(",") => self.at += 1,
                Some(_) => {
                    let before = self.at;
                    self.tree(prefix.to_vec());
                    if self.at == before {
                        self.at += 1; // never stall on a token the grammar does not expect
                    }
                }
            }
        }
    }
}

/// Every path of two or more segments written in the code (`a::b`, `::a::b`), with its line.
/// Segments are read token by token, so whitespace and line breaks around `::` do not hide one.
fn code_paths(tokens: &[Token]) -> Vec<(usize, Vec<String>)> {
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // A leading `::` (as in `::std::fs`) is skipped like any other token; a path is read
        // from its first identifier to its last.
        let starts_path =
            is_identifier(&tokens[i].text) && tokens.get(i + 1).is_some_and(|t| t.text == "::");
        if !starts_path {
            i += 1;
            continue;
        }
        let line = tokens[i].line;
        let mut segments = vec![tokens[i].text.clone()];
        i += 1;
        while tokens.get(i).is_some_and(|t| t.text == "::")
            && tokens.get(i + 1).is_some_and(|t| is_identifier(&t.text))
        {
            segments.push(tokens[i + 1].text.clone());
            i += 2;
        }
        // `std::{...}` in a use item leaves one segment here; the use scan expands it.
        if segments.len() >= 2 {
            paths.push((line, segments));
        }
    }
    paths
}

fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_identifier(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}
