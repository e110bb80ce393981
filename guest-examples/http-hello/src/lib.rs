//! The `wasi:http/proxy` hello world, written the way `wasmtime serve` users
//! write it: the `wasi` crate's bindings and nothing else. Every request gets
//! `200 text/plain` with the 13-byte body `Hello, world!` (the same body as the
//! bare hyper server in benches/http, so the harness compares like with like).

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(HelloWorld);

struct HelloWorld;

const BODY: &[u8] = b"Hello, world!";

impl wasi::exports::http::incoming_handler::Guest for HelloWorld {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            (
                "content-length".to_string(),
                BODY.len().to_string().into_bytes(),
            ),
        ])
        .expect("valid static headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let mut out = body.write().expect("the stream is taken once");
        out.write_all(BODY).expect("write the body");
        out.flush().expect("flush the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish the body");
    }
}
