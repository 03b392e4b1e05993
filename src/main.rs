//! The `adaptive-workers` command: a thin shell over the library.

fn main() -> std::process::ExitCode {
    adaptive_workers::cli::main()
}
