//! Where the CLI's text goes: standard output for results (through [`outln!`]) and
//! standard error for logs, both masked by the process's redactor, and a reader that
//! went away (`cairn runs list | head -1`) ends the command quietly instead of with a
//! panic.

use std::io::{self, Write};

use cairn_runner::redact::redact;

/// Prints one line of a command's result to standard output, like `println!`, with
/// secrets masked; exits quietly if the reader has closed the pipe.
macro_rules! outln {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// Writes one line (see [`outln!`]).
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(redact(&text).as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        reader_gone(&err);
    }
}

/// Nobody reads what is left to print: stop here with success, as `yes | head -1` does.
/// Any other failure to write the result (a full disk) is an error the user must see.
#[allow(clippy::exit, reason = "the one way out once standard output is gone")]
fn reader_gone(err: &io::Error) -> ! {
    if err.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {err}");
    std::process::exit(1);
}

/// Standard error with secrets masked, for the log subscriber: each event arrives in
/// one `write`, so a secret is never split between two.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
