//! The `cairn` binary: the CLI with the built-in workflows registered.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut registry = cairn::Registry::new();
    cairn::workflows::register_builtin(&mut registry);
    cairn::cli::main(registry)
}
