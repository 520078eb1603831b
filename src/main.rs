//! The `cairn` binary: the CLI with the built-in workflows registered.

use std::process::ExitCode;

/// A sync parses, copies and drops a few hundred thousand small JSON values a second;
/// mimalloc's thread-local free lists serve them with a fraction of glibc's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cairn::cli::main(cairn::Registry::new())
}
