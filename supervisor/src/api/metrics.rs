//! `GET /metrics`: Prometheus text format, unauthenticated (read-only counters; the API listens
//! on loopback by default).

use super::http::Response;
use super::lambda::Api;

impl Api {
    pub(super) fn metrics(&self) -> Response {
        let budget = self.scheduler.memory_budget();
        let text = self.scheduler.metrics.render(
            &self.scheduler.running_all(),
            self.scheduler.idle_count() as u64,
            budget,
            &self.async_queue.depth().unwrap_or_default(),
        );
        Response::json(200, text.into_bytes())
            .content_type(Some("text/plain; version=0.0.4; charset=utf-8".into()))
    }
}
