//! A throwaway PostgreSQL server in a container (Docker, or podman's Docker-compatible
//! API named by `DOCKER_HOST`), started through testcontainers and removed when dropped.

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The image used unless the caller's variable names another.
pub const DEFAULT_IMAGE: &str = "docker.io/library/postgres:17";

/// A running server, stopped and removed when dropped.
pub struct Container {
    container: ContainerAsync<GenericImage>,
    url: String,
}

impl Container {
    /// Starts the image named by the environment variable `image_var` (`name:tag`, a
    /// local image where no registry is reachable), else [`DEFAULT_IMAGE`], and returns
    /// once its `postgres` database answers. The error says what failed.
    pub async fn start(image_var: &str) -> Result<Self, String> {
        let image = std::env::var(image_var).unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
        let (name, tag) = match image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
            Some((name, tag)) => (name.to_owned(), tag.to_owned()),
            None => (image.clone(), "latest".to_owned()),
        };
        // The host port is chosen here rather than read back from the engine: podman
        // reports its bindings with an empty host IP, which testcontainers cannot read.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| format!("no free local port: {e}"))?;
        let container = GenericImage::new(name.as_str(), tag.as_str())
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            // The official image needs a password or this; a throwaway server trusts all.
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
            .with_mapped_port(port, 5432.tcp())
            .start()
            .await
            .map_err(|e| {
                format!("no PostgreSQL container could be started from {name}:{tag} ({e})")
            })?;
        let host = container
            .get_host()
            .await
            .map_err(|e| format!("the container's host is unknown ({e})"))?;
        let url = format!("postgres://postgres@{host}:{port}/postgres");
        // An image may log readiness during its own setup, before it listens on TCP.
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| format!("the container's URL {url}: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while options.connect().await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the container from {name}:{tag} never answered on {url}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self { container, url })
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops and removes it, waiting until the engine has (dropping it only starts that).
    pub async fn remove(self) -> Result<(), String> {
        self.container
            .rm()
            .await
            .map_err(|e| format!("the PostgreSQL container could not be removed: {e}"))
    }
}
