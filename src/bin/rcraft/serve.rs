//! `rcraft serve`: one node of the built-in key-value store, configured from a craft.conf
//! and flags that come from the settings table (`rcraft::config::SETTINGS`).

use crate::{EXIT_FAILED, init_logging, usage_error};
use clap::Args;
use rcraft::Config;
use rcraft::config::{self, ConfigError, ConfigFile, ConfigOverrides, SETTINGS, Setting};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `rcraft serve`: `--config` and one flag per setting of
/// [`rcraft::config::SETTINGS`], whose table gives each its help text and default. Values are
/// taken as text so that a bad one is reported like every other configuration error: one
/// line naming the flag.
pub(crate) struct ServeArgs {
    /// A cRaft `craft.conf` (plus rcraft keys such as `data_dir`); flags override it.
    pub(crate) config: Option<PathBuf>,
    /// `(setting, text)` for every setting flag given, in table order.
    pub(crate) given: Vec<(&'static Setting, String)>,
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let given = SETTINGS
            .iter()
            .filter_map(|s| Some((s, matches.get_one::<String>(s.key)?.clone())))
            .collect();
        Ok(ServeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            given,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help("A cRaft craft.conf (plus rcraft keys such as data_dir); flags override it");
        let settings = SETTINGS.iter().map(|s| {
            let arg = clap::Arg::new(s.key)
                .long(&s.flag[2..])
                .value_name(s.value_name())
                .allow_hyphen_values(true)
                .help(s.help_text());
            // A switch given alone (`--join`) is on; it never takes the next flag as its value.
            match s.kind {
                config::settings::Kind::Switch => arg
                    .allow_hyphen_values(false)
                    .num_args(0..=1)
                    .default_missing_value("on"),
                _ => arg,
            }
        });
        command.arg(config).args(settings)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        ServeArgs::augment_args(command)
    }
}

pub(crate) fn serve(args: &ServeArgs) -> ExitCode {
    let config = match serve_config(args) {
        Ok(config) => config,
        Err(e) => return usage_error("serve", &e),
    };
    init_logging(&config.log_level);
    keep_files_private();
    let dir = config.data_dir.display();
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        return usage_error(
            "serve",
            &format!("data dir {dir}: exists and is not a directory"),
        );
    }
    let fresh = !config.data_dir.exists();
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        return usage_error("serve", &format!("data dir {dir}: cannot create: {e}"));
    }
    warn_if_open(&config);
    let data_dir = config.data_dir.clone();
    let code = run_node(config);
    // A start that failed before writing anything (the port is taken, the address is not
    // this host's) leaves no empty data dir behind. `remove_dir` removes only an empty one.
    if fresh && code != ExitCode::SUCCESS {
        let _ = std::fs::remove_dir(&data_dir);
    }
    code
}

/// Makes everything this process creates (a data dir 0700, its files 0600) private to its
/// owner: the log, snapshots and backups hold every client's data (SECURITY.md, files at rest).
pub(crate) fn keep_files_private() {
    // SAFETY: umask(2) only sets the process's file-creation mask; it cannot fail and touches
    // no memory.
    unsafe { libc::umask(0o077) };
}

/// Says at start what a node without a secret or tokens trusts (SECURITY.md).
fn warn_if_open(config: &Config) {
    let id = config.id;
    if config.secret_file.is_none() {
        log::warn!(
            "node {id}: no --secret-file: any process that reaches this port can act as a \
             peer (vote, append, send snapshots); for a trusted network only (SECURITY.md)"
        );
    }
    if config.client_token_file.is_none() && config.admin_token_file.is_none() {
        log::warn!(
            "node {id}: no --client-token-file or --admin-token-file: any client that reaches \
             this port can read, write and change membership; for a trusted network only \
             (SECURITY.md)"
        );
    }
}

/// Runs the node with the built-in KV store until SIGTERM or SIGINT (exit 0). A failure to
/// start or a fail-stop error (e.g. storage) is one line on stderr and a non-zero exit.
fn run_node(config: Config) -> ExitCode {
    match crate::serve_kv::serve_kv(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcraft serve: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The file (explicit, or `~/craft/craft.conf` when neither `--config` nor `--peers` is
/// given) merged with the flags.
pub(crate) fn serve_config(args: &ServeArgs) -> Result<Config, String> {
    let peers = args.given.iter().any(|(s, _)| s.key == "servers");
    let file = match (&args.config, peers) {
        (Some(path), _) => Some(ConfigFile::read(path).map_err(|e| e.to_string())?),
        (None, true) => None,
        (None, false) => match config::default_config_path().filter(|p| p.exists()) {
            Some(path) => Some(ConfigFile::read(&path).map_err(|e| e.to_string())?),
            None => {
                return Err("no configuration: give --config PATH, or --id N --peers \
                            HOST:PORT,... --data-dir DIR (~/craft/craft.conf does not exist)"
                    .to_string());
            }
        },
    };
    let overrides = serve_overrides(args).map_err(|e| e.to_string())?;
    config::build_config(file.as_ref(), &overrides).map_err(|e| e.to_string())
}

fn serve_overrides(args: &ServeArgs) -> Result<ConfigOverrides, ConfigError> {
    let mut overrides = ConfigOverrides::default();
    for (setting, text) in &args.given {
        overrides.set(setting, text)?;
    }
    Ok(overrides)
}
