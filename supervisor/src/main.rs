use std::process::ExitCode;

fn main() -> ExitCode {
    // `lamina init` is PID 1 of an env: skip everything else the CLI does.
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        lamina_init::main();
    }
    lamina::cli::main()
}
