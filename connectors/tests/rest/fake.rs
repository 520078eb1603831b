//! A vendor that misbehaves on purpose, in a few lines of HTTP/1.1 over a
//! tokio listener: each request's path and query go to a handler, and every
//! request's head is recorded so tests assert how often the vendor was called.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the fake answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub struct Fake {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Fake {
    /// Serves `handler` on 127.0.0.1, port 0. The handler gets the request
    /// target (path and query) and the fake's own base URL.
    pub async fn start(handler: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let task = tokio::spawn({
            let requests = requests.clone();
            let url = url.clone();
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let requests = requests.clone();
                    let handler = handler.clone();
                    let url = url.clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0_u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        requests.lock().unwrap().push(head.clone());
                        let reply = handler(&target, &url);
                        let mut response = format!(
                            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                            reply.status,
                            reply.body.len()
                        );
                        for (name, value) in &reply.headers {
                            response += &format!("{name}: {value}\r\n");
                        }
                        response += "\r\n";
                        response += &reply.body;
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            }
        });
        Self {
            url,
            requests,
            task,
        }
    }

    /// The request targets (path and query) served so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|head| head.split_whitespace().nth(1).unwrap_or("/").to_owned())
            .collect()
    }

    /// The requests' heads (request line and headers), in order.
    pub fn heads(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of query parameter `name` in a request target.
pub fn param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| value.to_owned())
    })
}
