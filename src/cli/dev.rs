//! `cairn dev [--stop]`: a PostgreSQL of your own for local work, kept running between
//! commands, from the machine's PostgreSQL programs. Its data lives in
//! `$CAIRN_DEV_DIR`, else `$XDG_STATE_HOME/cairn/dev` (`~/.local/state/cairn/dev`); as
//! root, whose home the server's own user cannot enter, `/var/tmp/cairn-dev`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::local_pg::{HOW_TO_GET_ONE, LocalServer, Programs, free_port};
use super::{Failure, Outcome};

fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_DEV_DIR") {
        return PathBuf::from(dir);
    }
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/tmp/cairn-dev");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("cairn").join("dev")
}

/// The port the dev server took the first time, kept beside its data so its URL stays.
fn port(dir: &std::path::Path) -> Result<u16, Failure> {
    let file = dir.join("port");
    if let Some(port) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Ok(port);
    }
    let port = free_port()?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&file, port.to_string()))
        .map_err(|err| Failure::failed(format!("cannot write {}: {err}", file.display())))?;
    Ok(port)
}

/// Runs `cairn dev` or `cairn dev --stop`.
pub(crate) fn run(stop: bool) -> Outcome {
    let dir = home();
    let programs = Programs::find().ok_or_else(|| {
        Failure::usage(format!(
            "cairn dev runs PostgreSQL from the machine's programs (initdb, pg_ctl), and \
             there are none here. Get them:\n{HOW_TO_GET_ONE}\nor run one in a container: \
             docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:17"
        ))
    })?;
    let port = port(&dir)?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let server = LocalServer::new(programs, &dir, port, false)?;
    let running = server.running();
    if stop {
        if !running {
            outln!("no dev PostgreSQL runs from {}", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        let mut server = server;
        server.stop()?;
        outln!(
            "stopped the dev PostgreSQL; its data stays in {}",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if running {
        outln!("the dev PostgreSQL already runs: {url}");
    } else {
        server.boot()?;
        server.keep();
        outln!(
            "started a dev PostgreSQL (data in {}): {url}",
            dir.display()
        );
    }
    outln!("use it with:  export DATABASE_URL={url}");
    outln!("stop it with: cairn dev --stop");
    Ok(ExitCode::SUCCESS)
}
