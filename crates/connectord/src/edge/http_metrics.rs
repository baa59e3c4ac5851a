//! The request latency histogram, labelled only from closed sets: a client
//! choosing its method or path must not create a time series per request
//! (invented method names once grew `/metrics` to 99.5 MB).

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// Middleware: `connectord_http_request_duration_seconds{method,route,status}`.
pub async fn record_latency(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_label(req.extensions().get::<MatchedPath>());
    let response = next.run(req).await;
    metrics::histogram!("connectord_http_request_duration_seconds",
        "method" => method, "route" => route, "status" => response.status().as_u16().to_string())
    .record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods a client of ours sends; anything else is `other`.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The route template that matched (`/v1/admin/targets/{id}`), never the
/// path as sent; `other` when no route matched.
pub fn route_label(matched: Option<&MatchedPath>) -> String {
    matched.map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        assert_eq!(method_label(&Method::CONNECT), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
        let invented = Method::from_bytes(&[b'X'; 1024]).unwrap();
        assert_eq!(method_label(&invented), "other");
        let lowercase = Method::from_bytes(b"get").unwrap();
        assert_eq!(method_label(&lowercase), "other");
    }
}
