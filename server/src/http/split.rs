//! Routes requests by content type: gRPC to tonic, everything else to the HTTP router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body as HttpBody;
use tonic::codegen::http::{Request, Response, header};
use tower::{Layer, Service, ServiceExt};

/// A layer that puts the HTTP router beside the gRPC routes (see the module docs).
#[derive(Clone)]
pub struct SplitLayer {
    http: axum::Router,
}

impl SplitLayer {
    /// Non-gRPC requests go to `http`.
    pub fn new(http: axum::Router) -> Self {
        Self { http }
    }
}

impl<G> Layer<G> for SplitLayer {
    type Service = SplitService<G>;

    fn layer(&self, grpc: G) -> Self::Service {
        SplitService {
            grpc,
            http: self.http.clone(),
        }
    }
}

/// The service built by [`SplitLayer`].
#[derive(Clone)]
pub struct SplitService<G> {
    grpc: G,
    http: axum::Router,
}

/// True when the request is a gRPC call (`content-type: application/grpc[+proto|...]`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<G, GB> Service<Request<tonic::body::Body>> for SplitService<G>
where
    G: Service<Request<tonic::body::Body>, Response = Response<GB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    G::Future: Send + 'static,
    GB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    GB::Error: Into<tower::BoxError>,
{
    type Response = Response<HttpBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The HTTP router is always ready; readiness is the gRPC side's.
        self.grpc.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        if is_grpc(&req) {
            // Take the service that was driven to readiness, leave a fresh clone behind.
            let clone = self.grpc.clone();
            let mut grpc = std::mem::replace(&mut self.grpc, clone);
            Box::pin(async move {
                let resp = grpc.call(req).await?;
                Ok(resp.map(HttpBody::new))
            })
        } else {
            let http = self.http.clone();
            Box::pin(async move {
                let resp = http.oneshot(req.map(HttpBody::new)).await?;
                Ok(resp)
            })
        }
    }
}
