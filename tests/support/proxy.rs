//! A TCP proxy in front of Postgres, for outages: it cuts every connection and refuses
//! new ones, as a restarting server does, then lets them through again.

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy in front of Postgres that can cut every connection and refuse new ones,
/// then let them through again.
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *watching.borrow() {
                    continue; // refused: dropped at once
                }
                let upstream = upstream.clone();
                let mut severed = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = severed.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    pub fn sever(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// `url` (a database URL) through `proxy`, and the proxy's upstream address.
pub fn upstream_of(url: &str) -> String {
    let (_, rest) = url.split_once('@').expect("a URL with user info");
    rest.split('/').next().expect("host:port").to_owned()
}

/// `url` with its host and port replaced by the proxy's.
pub fn through(url: &str, proxy: &Proxy) -> String {
    url.replace(&upstream_of(url), &format!("127.0.0.1:{}", proxy.port))
}
