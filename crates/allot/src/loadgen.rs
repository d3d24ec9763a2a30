//! Load on a daemon: raw HTTP/1.1 keep-alive connections over its Unix
//! socket (no hyper: a client costs little beside the daemon it measures),
//! client threads driven for a time, and a process's CPU time from
//! `/proc/PID/stat`. Used by `allot bench api`, `allot bench budget` and the
//! load tests (`tests/budget_load.rs`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A whole request: `method path`, a JSON body when `body` is not empty.
pub fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    if body.is_empty() {
        return format!("{method} {path} HTTP/1.1\r\nHost: allot\r\n\r\n").into_bytes();
    }
    format!("{method} {path} HTTP/1.1\r\nHost: allot\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// One keep-alive connection: a request is sent and its answer read before the next.
#[derive(Debug)]
pub struct KeepAlive {
    w: UnixStream,
    r: BufReader<UnixStream>,
    line: String,
}

impl KeepAlive {
    /// Connect to the daemon's socket.
    pub fn connect(sock: &Path) -> io::Result<KeepAlive> {
        let s = UnixStream::connect(sock)?;
        let w = s.try_clone()?;
        Ok(KeepAlive { w, r: BufReader::new(s), line: String::new() })
    }

    /// How long a read may wait (`None`: for ever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.w.set_read_timeout(t)
    }

    /// Send `req` (a whole request, see [`request`]) and read its answer:
    /// the status, the body into `body` (replaced). An answer cut short
    /// (the daemon gone) is an `UnexpectedEof` error.
    pub fn send(&mut self, req: &[u8], body: &mut Vec<u8>) -> io::Result<u16> {
        self.w.write_all(req)?;
        self.read_line()?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a status line: {:?}", self.line)))?;
        let mut len = None;
        loop {
            self.read_line()?;
            if self.line == "\r\n" {
                break;
            }
            let Some((name, value)) = self.line.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a chunked answer: only answers with a Content-Length are read"));
            }
        }
        body.clear();
        body.resize(len.unwrap_or(0), 0);
        self.r.read_exact(body)?;
        Ok(status)
    }

    /// One request: status and body as text.
    pub fn call(&mut self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        let mut out = Vec::new();
        let status = self.send(&request(method, path, body), &mut out)?;
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.r.read_line(&mut self.line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed before the answer ended"));
        }
        Ok(())
    }
}

/// CPU time (user + system, every thread) of process `pid` so far, in
/// seconds; 0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = allot_sys::proc::stat(&allot_sys::Roots::host().proc, pid).map_or(0, |s| s.utime + s.stime);
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// What the client threads of a [`drive`] share: when to stop, and what
/// they count.
#[derive(Debug, Default)]
pub struct Tally {
    /// Set when the time is up: each client ends its loop.
    pub stop: AtomicBool,
    /// Operations done.
    pub done: AtomicU64,
    /// Operations answered otherwise than expected.
    pub failed: AtomicU64,
}

impl Tally {
    /// Whether the time is up.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Count one operation, done or failed.
    pub fn count(&self, ok: bool) {
        if ok { &self.done } else { &self.failed }.fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome of a [`drive`].
#[derive(Clone, Debug, PartialEq)]
pub struct Driven {
    /// Operations done a second.
    pub per_second: f64,
    /// CPU time of the measured process per operation done, in microseconds.
    pub cpu_us: f64,
    /// Operations done.
    pub done: u64,
    /// Operations answered otherwise than expected.
    pub failed: u64,
    /// Clients that ended with an error (connection, protocol), with the first error.
    pub errors: usize,
    /// The first client error.
    pub first_error: Option<String>,
}

/// Run `clients` threads of `client(index, tally)` for `time` (each loops
/// until [`Tally::stopped`], counting what it does), and measure the
/// operations per second and the CPU time of process `pid` per operation.
pub fn drive<F>(clients: usize, time: Duration, pid: u32, client: F) -> Driven
where
    F: Fn(usize, &Tally) -> Result<(), String> + Sync,
{
    let tally = Tally::default();
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let (client, tally) = (&client, &tally);
        let threads: Vec<_> = (0..clients).map(|i| s.spawn(move || client(i, tally))).collect();
        std::thread::sleep(time);
        tally.stop.store(true, Ordering::Relaxed);
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let done = tally.done.load(Ordering::Relaxed);
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    Driven {
        per_second: done as f64 / elapsed,
        cpu_us: if done > 0 { cpu * 1e6 / done as f64 } else { 0.0 },
        done,
        failed: tally.failed.load(Ordering::Relaxed),
        errors: errors.len(),
        first_error: errors.into_iter().next(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A server that answers each request on one connection with `answers` in turn, then closes.
    fn serve(answers: Vec<&'static str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            for a in answers {
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                w.write_all(a.as_bytes()).unwrap();
            }
        });
        (dir, sock)
    }

    #[test]
    fn answers_are_read_one_after_another_on_one_connection_and_a_cut_answer_is_an_error() {
        let (_d, sock) = serve(vec![
            "HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"id\":1}",
            "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nretry-after: 1\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"",
        ]);
        let mut c = KeepAlive::connect(&sock).unwrap();
        assert_eq!(c.call("POST", "/v1/x", r#"{"a":1}"#).unwrap(), (201, r#"{"id":1}"#.to_owned()));
        assert_eq!(c.call("GET", "/v1/y", "").unwrap(), (429, "{}".to_owned()));
        let e = c.call("GET", "/v1/z", "").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[test]
    fn a_request_carries_its_body_length() {
        let r = String::from_utf8(request("POST", "/v1/a", "{}")).unwrap();
        assert!(r.starts_with("POST /v1/a HTTP/1.1\r\n") && r.contains("Content-Length: 2\r\n") && r.ends_with("\r\n\r\n{}"), "{r}");
        assert_eq!(String::from_utf8(request("GET", "/v1/b", "")).unwrap(), "GET /v1/b HTTP/1.1\r\nHost: allot\r\n\r\n");
    }
}
