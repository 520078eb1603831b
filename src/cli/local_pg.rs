//! A private PostgreSQL for `cairn demo` and `cairn dev` when `DATABASE_URL` is unset:
//! the machine's own PostgreSQL programs (`initdb`, `pg_ctl`) run a server in a directory
//! of ours on a free loopback port; without them, a container; without either, a clear
//! word on how to get one.
//!
//! A server started here is stopped and its directory removed when the command ends,
//! also on Ctrl-C. PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user (Debian's packages make one) or `nobody`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Failure;

/// What to do where nothing runs PostgreSQL: one line per platform.
pub(crate) const HOW_TO_GET_ONE: &str = "\
  Debian, Ubuntu:  sudo apt-get install postgresql   (cairn finds /usr/lib/postgresql/*/bin)
  Fedora, RHEL:    sudo dnf install postgresql-server
  macOS:           brew install postgresql@17
  Windows:         run cairn in WSL2 and follow the Debian line
  Any platform:    start Docker or Podman (DOCKER_HOST): cairn runs postgres:17 in a container
  Or:              set DATABASE_URL=postgres://user@host:5432/postgres to use a server you have";

/// PostgreSQL's programs, found in one directory.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Programs {
    fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (initdb.is_file() && pg_ctl.is_file()).then_some(Self { initdb, pg_ctl })
    }

    /// `CAIRN_PG_BIN`, then the `PATH`, then where Debian, RHEL and Homebrew put them
    /// (the newest version first).
    pub(crate) fn find() -> Option<Self> {
        if let Some(dir) = std::env::var_os("CAIRN_PG_BIN") {
            return Self::in_dir(Path::new(&dir));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .find_map(|dir| Self::in_dir(&dir))
            .or_else(|| {
                [
                    "/usr/lib/postgresql",
                    "/usr",
                    "/opt/homebrew/opt",
                    "/usr/local/opt",
                ]
                .iter()
                .flat_map(|root| versions(Path::new(root)))
                .find_map(|dir| Self::in_dir(&dir))
            })
    }
}

/// `root/*/bin` for Debian's `/usr/lib/postgresql/17/bin`, RHEL's `/usr/pgsql-17/bin`
/// and Homebrew's `opt/postgresql@17/bin`, newest first.
fn versions(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .strip_prefix("pgsql-")
                .or_else(|| name.strip_prefix("postgresql@"))
                .or_else(|| (root.ends_with("postgresql")).then_some(name.as_str()))?;
            let major = version.split('.').next()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// Who the server runs as: this user, or (as root) an unprivileged one.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, Failure> {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in ["postgres", "nobody"] {
        let found = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| {
                    Some(RunAs {
                        uid: fields[2].parse().ok()?,
                        gid: fields[3].parse().ok()?,
                    })
                })
                .flatten()
        });
        if let Some(user) = found {
            return Ok(Some(user));
        }
    }
    Err(Failure::failed(
        "PostgreSQL will not run as root, and there is no `postgres` or `nobody` user to run it as",
    ))
}

/// A server run from the machine's programs in a directory of its own.
pub(crate) struct LocalServer {
    programs: Programs,
    /// Holds `data/`, the log and the socket.
    dir: PathBuf,
    run_as: Option<RunAs>,
    url: String,
    port: u16,
    /// Removed with its directory when dropped (the demo's), or left running (`cairn dev`).
    throwaway: bool,
}

impl LocalServer {
    /// The server of `dir` on `port`, not yet started (or started by an earlier command).
    pub(crate) fn new(
        programs: Programs,
        dir: &Path,
        port: u16,
        throwaway: bool,
    ) -> Result<Self, Failure> {
        Ok(Self {
            programs,
            dir: dir.to_owned(),
            run_as: run_as()?,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            throwaway,
        })
    }

    /// Creates the cluster in `dir` if it holds none, and starts it on `port`.
    pub(crate) fn start(
        programs: Programs,
        dir: &Path,
        port: u16,
        throwaway: bool,
    ) -> Result<Self, Failure> {
        let server = Self::new(programs, dir, port, throwaway)?;
        server.boot()?;
        Ok(server)
    }

    /// Creates the cluster if there is none, and starts it.
    pub(crate) fn boot(&self) -> Result<(), Failure> {
        let (server, dir, throwaway, port) = (self, self.dir.as_path(), self.throwaway, self.port);
        std::fs::create_dir_all(dir)
            .map_err(|err| Failure::failed(format!("cannot create {}: {err}", dir.display())))?;
        server.own(dir)?;
        let data = server.data();
        if !data.join("PG_VERSION").exists() {
            let mut initdb = server.command(&server.programs.initdb);
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
            server.check(initdb, "initdb")?;
        }
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            dir.display()
        );
        if throwaway {
            // Nothing of a demo's database needs to survive a power cut.
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut start = server.command(&server.programs.pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        server.check(start, "pg_ctl start")
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Hands `path` to the user the server runs as.
    fn own(&self, path: &Path) -> Result<(), Failure> {
        if let Some(user) = self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|err| {
                Failure::failed(format!(
                    "cannot give {} to the server's user: {err}",
                    path.display()
                ))
            })?;
        }
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|err| Failure::failed(format!("cannot restrict {}: {err}", path.display())))
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.dir)
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    fn check(&self, mut command: Command, what: &str) -> Result<(), Failure> {
        let output = command
            .output()
            .map_err(|err| Failure::failed(format!("cannot run {what}: {err}")))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(Failure::failed(format!(
            "{what} failed ({}): {}{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            if log.is_empty() {
                ""
            } else {
                "\nserver log:\n"
            },
            log.lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
        )))
    }

    /// Whether the server runs (asked as its own user: `pg_ctl` refuses root too).
    pub(crate) fn running(&self) -> bool {
        self.data().join("PG_VERSION").exists()
            && self
                .command(&self.programs.pg_ctl)
                .arg("-D")
                .arg(self.data())
                .arg("status")
                .output()
                .is_ok_and(|output| output.status.success())
    }

    /// Stops the server (and, for a throwaway one, removes its directory).
    pub(crate) fn stop(&mut self) -> Result<(), Failure> {
        let mut stop = self.command(&self.programs.pg_ctl);
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        let stopped = if self.running() {
            self.check(stop, "pg_ctl stop")
        } else {
            Ok(())
        };
        if self.throwaway {
            self.throwaway = false;
            std::fs::remove_dir_all(&self.dir).map_err(|err| {
                Failure::failed(format!("cannot remove {}: {err}", self.dir.display()))
            })?;
        }
        stopped
    }

    /// Forgets the server: it keeps running after this process (`cairn dev`).
    pub(crate) fn keep(mut self) {
        self.throwaway = false;
        drop(self);
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.throwaway {
            let _ = self.stop();
        }
    }
}

/// A free port on the loopback interface.
pub(crate) fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| Failure::failed(format!("no free local port: {err}")))
}

/// A private server for one command: the machine's programs, else a container.
pub(crate) enum Private {
    /// From `initdb` and `pg_ctl`.
    Local(LocalServer),
    /// In a container.
    Container(Box<cairn_testkit::containers::Container>),
}

impl Private {
    /// Starts one, saying on standard error what it started.
    pub(crate) async fn start(purpose: &str) -> Result<Self, Failure> {
        if let Some(programs) = Programs::find() {
            let dir =
                std::env::temp_dir().join(format!("cairn-{purpose}-pg-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "DATABASE_URL is not set: starting a private PostgreSQL ({}) in {}",
                programs
                    .pg_ctl
                    .parent()
                    .map_or_else(String::new, |d| d.display().to_string()),
                dir.display()
            );
            let server = tokio::task::spawn_blocking(move || {
                LocalServer::start(programs, &dir, free_port()?, true)
            })
            .await
            .map_err(|err| Failure::failed(format!("starting PostgreSQL failed: {err}")))??;
            return Ok(Self::Local(server));
        }
        if container_engine() {
            eprintln!(
                "DATABASE_URL is not set and PostgreSQL's programs are not here: starting a PostgreSQL container"
            );
            return cairn_testkit::containers::Container::start("CAIRN_POSTGRES_IMAGE")
                .await
                .map(|container| Self::Container(Box::new(container)))
                .map_err(|err| Failure::failed(format!("{err}\n{HOW_TO_GET_ONE}")));
        }
        Err(Failure::usage(format!(
            "DATABASE_URL is not set, and this machine has neither PostgreSQL's programs \
             (initdb, pg_ctl) nor a container engine to start one with. Get one:\n{HOW_TO_GET_ONE}"
        )))
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> &str {
        match self {
            Self::Local(server) => server.url(),
            Self::Container(container) => container.url(),
        }
    }

    /// Stops it and removes what it left.
    pub(crate) async fn stop(self) -> Result<(), Failure> {
        match self {
            Self::Local(mut server) => tokio::task::spawn_blocking(move || server.stop())
                .await
                .map_err(|err| Failure::failed(format!("stopping PostgreSQL failed: {err}")))?,
            Self::Container(container) => container.remove().await.map_err(Failure::failed),
        }
    }
}

/// Whether a Docker-compatible engine might answer: `DOCKER_HOST` (a TCP address, or a
/// socket that exists), else a socket where Docker or rootful podman keep theirs.
fn container_engine() -> bool {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => match host.strip_prefix("unix://") {
            Some(socket) => Path::new(socket).exists(),
            None => !host.trim().is_empty(),
        },
        Err(_) => ["/var/run/docker.sock", "/run/podman/podman.sock"]
            .iter()
            .any(|socket| Path::new(socket).exists()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_tried_newest_first() {
        let root = std::env::temp_dir().join(format!("cairn-pg-versions-{}", std::process::id()));
        let lib = root.join("postgresql");
        for version in ["9.6", "15", "17", "notes"] {
            std::fs::create_dir_all(lib.join(version).join("bin")).unwrap();
        }
        let found = versions(&lib);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            found,
            vec![lib.join("17/bin"), lib.join("15/bin"), lib.join("9.6/bin")]
        );
    }

    #[test]
    fn the_advice_has_a_line_per_platform() {
        for platform in [
            "Debian",
            "Fedora",
            "macOS",
            "Windows",
            "Docker",
            "DATABASE_URL",
        ] {
            assert!(HOW_TO_GET_ONE.contains(platform), "{platform}");
        }
    }
}
