//! `lamina serve --access-log FILE`: one JSON line per API request (time, request id, method,
//! path, query, status, error type, duration), appended before the response is sent, so a
//! client that has its answer finds the request's line in the file. Several servers may share
//! one file: each line is a single `write` on an `O_APPEND` descriptor.
//!
//! The API tests use it to find which Lambda operations each test exercised and how lamina
//! answered (tests/api/coverage_plugin.py).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::http::{Handler, Request, Response};

/// A handler that logs every request it answers to a file, then answers as `inner` does.
pub struct AccessLogged {
    inner: Arc<dyn Handler>,
    file: File,
}

impl AccessLogged {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(inner: Arc<dyn Handler>, path: &Path) -> io::Result<AccessLogged> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(AccessLogged { inner, file })
    }
}

/// The line for one answered request (with its trailing newline).
fn line(method: &str, path: &str, query: &str, resp: &Response, micros: u128) -> Vec<u8> {
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut out = json!({
        "time": crate::util::utc_timestamp("Z"),
        "request_id": header("x-amzn-RequestId"),
        "method": method,
        "path": path,
        "query": query,
        "status": resp.status,
        "error_type": header("x-amzn-ErrorType"),
        "duration_us": micros as u64,
    })
    .to_string()
    .into_bytes();
    out.push(b'\n');
    out
}

impl Handler for AccessLogged {
    fn handle(&self, req: Request) -> Response {
        let t0 = Instant::now();
        let (method, path, query) = (
            req.method.clone(),
            req.raw_path.clone(),
            req.raw_query.clone(),
        );
        let resp = self.inner.handle(req);
        let l = line(&method, &path, &query, &resp, t0.elapsed().as_micros());
        if let Err(err) = (&self.file).write_all(&l) {
            tracing::warn!(?err, "access log write failed");
        }
        resp
    }

    fn reject(&self, status: u16, message: &str) -> Response {
        self.inner.reject(status, message)
    }

    fn abort_in_flight(&self) {
        self.inner.abort_in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Handler for Fixed {
        fn handle(&self, req: Request) -> Response {
            let status = if req.raw_path == "/missing" { 404 } else { 200 };
            let r = Response::new(status).header("x-amzn-RequestId", "rid-1");
            if status == 404 {
                r.header("x-amzn-ErrorType", "ResourceNotFoundException")
            } else {
                r
            }
        }
        fn reject(&self, status: u16, _message: &str) -> Response {
            Response::new(status)
        }
    }

    fn request(path: &str, query: &str) -> Request {
        Request {
            method: "GET".into(),
            raw_path: path.into(),
            raw_query: query.into(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    #[test]
    fn one_json_line_per_request_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let h = AccessLogged::open(Arc::new(Fixed), &path).unwrap();
        assert_eq!(h.handle(request("/ok", "a=1")).status, 200);
        // A second server appending to the same file.
        let h2 = AccessLogged::open(Arc::new(Fixed), &path).unwrap();
        assert_eq!(h2.handle(request("/missing", "")).status, 404);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["path"], "/ok");
        assert_eq!(lines[0]["query"], "a=1");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["request_id"], "rid-1");
        assert!(lines[0]["error_type"].is_null());
        assert_eq!(lines[1]["status"], 404);
        assert_eq!(lines[1]["error_type"], "ResourceNotFoundException");
    }

    #[test]
    fn control_characters_in_paths_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let h = AccessLogged::open(Arc::new(Fixed), &path).unwrap();
        h.handle(request("/a\nb\t\"c", ""));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["path"], "/a\nb\t\"c");
    }
}
