//! The baseline of `benches/http/compare.sh`: a bare hyper HTTP/1.1 server
//! answering every request with `200 text/plain` `Hello, world!` (13 bytes, the
//! body of the `http-hello` component), on tokio's multi-thread runtime with
//! keep-alive and one task per connection, as `wasmtime serve` and wasmgrid
//! serve. What is left between it and them is the per-request Wasm cost.
//!
//! Usage: `hyper-hello [ADDR]` (default 127.0.0.1:8090).

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

const BODY: &[u8] = b"Hello, world!";

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hyper-hello listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello));
            if let Err(e) = conn.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}
