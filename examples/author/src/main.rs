//! The project's own binary: cairn's whole command line, with this crate's workflows
//! beside the built-in ones, under this binary's name and version.

use cairn::Registry;

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    if let Err(err) = author_example::register(&mut registry) {
        eprintln!("error: {err}");
        return std::process::ExitCode::from(2);
    }
    cairn::cli::main_as(registry, env!("CARGO_BIN_NAME"), env!("CARGO_PKG_VERSION"))
}
