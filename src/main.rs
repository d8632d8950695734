//! The `hookd` executable; all of it lives in the library.

fn main() -> std::process::ExitCode {
    hookd::cli::main()
}
