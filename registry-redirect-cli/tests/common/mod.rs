//! An HTTP/1.1 server on 127.0.0.1 for tests, with fixed replies by method
//! and path, that records the requests it receives.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the server keeps a request answered with [`Reply::Hang`]
/// open before closing it without a response.
pub const HANG: Duration = Duration::from_secs(5);

/// What the server sends for a request.
#[derive(Clone, Debug)]
#[allow(dead_code)] // Each test binary uses some of the replies.
pub enum Reply {
    /// 200 with this body.
    Body(&'static str),
    /// This status, with a short body.
    Status(u16),
    /// A 302 redirect to this path on the same server.
    Redirect(&'static str),
    /// A Content-Length of the whole body, then only its first half, then
    /// a closed connection.
    CutShort(&'static str),
    /// Nothing until [`HANG`] has passed.
    Hang,
    /// This status, with a short body, after this delay.
    Delayed(Duration, u16),
}

/// A running server, stopped and joined on drop.
pub struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

#[allow(dead_code)] // Each test binary uses some of the methods.
impl TestServer {
    /// Starts a server whose replies are looked up by `"METHOD PATH"`, such
    /// as `"GET /aws.json"`. Any other request gets a 404.
    pub fn start(routes: &[(&str, Reply)]) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<HashMap<String, Reply>> = Arc::new(
            routes
                .iter()
                .map(|(key, reply)| ((*key).to_owned(), reply.clone()))
                .collect(),
        );
        let thread = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let routes = Arc::clone(&routes);
                            let stop = Arc::clone(&stop);
                            let requests = Arc::clone(&requests);
                            thread::spawn(move || answer(stream, &routes, &requests, &stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TestServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    /// Returns `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Returns the requests received so far, as `"METHOD PATH"`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(
    stream: TcpStream,
    routes: &HashMap<String, Reply>,
    requests: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
        line.clear();
    }
    let mut fields = request_line.split(' ');
    let method = fields.next().unwrap_or_default().to_owned();
    let path = fields.next().unwrap_or("/").to_owned();
    let key = format!("{method} {path}");
    requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(key.clone());
    let mut stream = reader.into_inner();

    let reply = routes.get(&key).cloned().unwrap_or(Reply::Status(404));
    let head_only = method == "HEAD";
    let response = match reply {
        Reply::Body(body) => {
            let body = if head_only { "" } else { body };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Reply::Status(status) => {
            format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Delayed(delay, status) => {
            thread::sleep(delay);
            format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Redirect(to) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::CutShort(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..body.len() / 2]
        ),
        Reply::Hang => {
            let started = Instant::now();
            while started.elapsed() < HANG && !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    };
    let _ = stream.write_all(response.as_bytes());
}
