//! Command line: `lamina run`, `lamina serve`, `lamina logs`, `lamina status`, `lamina init`
//! (internal).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::run::RunArgs;

/// lamina: a self-hosted AWS Lambda for Linux edge appliances.
#[derive(Debug, Parser)]
#[command(name = "lamina", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Private run directory for env assembly and instance locks.
    #[arg(long, global = true, default_value = "/run/lamina", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// lamina's parent cgroup, relative to each hierarchy's root (lamina creates and removes
    /// groups only below it).
    #[arg(long, global = true, default_value = "lamina", value_name = "PATH")]
    pub cgroup_parent: PathBuf,
    /// Seccomp profile for function processes (seccompiler JSON) instead of the built-in one.
    #[arg(long, global = true, value_name = "FILE")]
    pub seccomp_profile: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a fresh execution environment and exit with its status.
    Run(RunArgs),
    /// Serve Lambda's API (functions, invocations) until SIGTERM.
    Serve(crate::serve::ServeArgs),
    /// Print a function's log events, like `aws logs tail` (from the state directory).
    Logs(crate::status::LogsArgs),
    /// One screen: functions, envs by state, memory budget, recent errors.
    Status(crate::status::StatusArgs),
    /// PID 1 of an execution environment (started by lamina itself).
    #[command(hide = true)]
    Init,
}

/// Parses the command line; usage errors print one line and exit with 2.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("lamina: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => ExitCode::from(crate::run::run(&cli.global, args)),
        Command::Serve(args) => ExitCode::from(crate::serve::serve(&cli.global, args)),
        Command::Logs(args) => ExitCode::from(crate::status::logs(args)),
        Command::Status(args) => ExitCode::from(crate::status::status(args)),
        Command::Init => lamina_init::main(),
    }
}
