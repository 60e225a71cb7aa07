//! `rcraft-loadtest`: parses the flags, runs one load test, prints the summary, writes the
//! JSON and chart, and exits 0 only when every acknowledged write was read back and the
//! history was found linearizable.
//!
//! Exit status: 0 verified, 1 acknowledged writes lost (or keys unreadable), a history that is
//! not linearizable, or one the checker could not decide, 2 usage or setup error, 130
//! interrupted.

use clap::Parser;
use rcraft_loadtest::backend::{ClusterAccess, RcraftCluster};
use rcraft_loadtest::cli::Args;
use rcraft_loadtest::{Error, chart, run};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn write_file(path: &std::path::Path, contents: &str) -> rcraft_loadtest::Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn main_inner() -> rcraft_loadtest::Result<i32> {
    let args = Args::parse();
    let settings = args.into_settings()?;
    let token = settings.token.clone();
    let tls = settings.tls.clone();
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupt.clone())
            .map_err(|e| Error::io("installing signal handlers", e))?;
    }
    let read_mode = settings.read_mode;
    let make_access: &run::AccessFactory = &move |addrs, timeout| {
        let cluster = RcraftCluster::new(addrs.to_vec(), timeout)
            .with_token(token.clone())
            .with_tls(tls.clone())
            .with_read_mode(read_mode);
        Arc::new(cluster) as Arc<dyn ClusterAccess>
    };
    let summary = run::run(&settings, make_access, interrupt)?;
    println!("{}", summary.to_text());
    if let Some(path) = &settings.json {
        write_file(path, &(summary.to_json() + "\n"))?;
    }
    if let Some(path) = &settings.chart {
        let depth = match summary.pipeline {
            depth if depth > 1 => format!(" x {depth} in flight"),
            _ => String::new(),
        };
        let title = format!(
            "rcraft-loadtest: {}, {} clients{depth}",
            summary.target, summary.clients
        );
        let buckets: Vec<chart::Bucket> = if summary.timeline.is_empty() {
            summary.per_second.iter().map(chart::Bucket::from).collect()
        } else {
            summary.timeline.clone()
        };
        write_file(path, &chart::render_svg(&title, &buckets, &summary.events))?;
    }
    Ok(if summary.interrupted {
        130
    } else if summary.passed() {
        0
    } else {
        1
    })
}

fn main() {
    env_logger::init();
    let code = match main_inner() {
        Ok(code) => code,
        Err(Error::Interrupted) => {
            eprintln!("rcraft-loadtest: interrupted");
            130
        }
        Err(e) => {
            eprintln!("rcraft-loadtest: {e}");
            2
        }
    };
    std::process::exit(code);
}
