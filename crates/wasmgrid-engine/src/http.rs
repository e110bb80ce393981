//! `wasi:http/proxy` components: one HTTP request on a fresh instance.
//!
//! Components written for `wasmtime serve` (or Spin) export
//! `wasi:http/incoming-handler` and import WASI 0.2 plus `wasi:http`. They run
//! under the same sandbox as algorithms: a fresh instance per request, the
//! memory limiter, the epoch deadline (CPU loops yield every tick and stop at
//! the timeout) and a tokio timer around the whole request. Outgoing HTTP is
//! denied unless the version was deployed with an allow-list of hosts
//! ([`OutboundAllowList`]).
//!
//! The guest task runs on its own tokio task: the guest may keep writing the
//! body after it has sent the response head, so the head is returned to the
//! server as soon as the guest sets it, while the task streams the rest. The
//! task is aborted when the client goes away (the call's future or the
//! response body dropped before its end).

use super::{CallLimits, DeadlineExceeded, Engine, InvalidComponent, InvokeError, MemoryLimiter};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The response of an HTTP component: the head the guest set and a body it
/// may still be writing.
pub type HttpResponse = hyper::Response<HyperOutgoingBody>;

/// The error type of request bodies handed to an HTTP component.
pub type HttpBodyError = wasmtime_wasi_http::Error;

/// Store data of one HTTP request.
pub struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    hooks: OutboundPolicy,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A linked `wasi:http` component, ready to instantiate.
pub(super) type HttpPre = ProxyPre<HttpState>;

/// One entry of an allow-list: a host name or IP, optionally with a port, or
/// `*.domain` for every subdomain of `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase host; for a wildcard, the suffix including the leading dot.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid allow_outbound entry {entry:?}: {why}; use a host name or IP (api.example.com, 10.0.0.5), \
                 optionally with a port (api.example.com:8443, [::1]:8080), or *.example.com for every subdomain"
            )
        };
        let e = entry.trim().to_ascii_lowercase();
        if e.is_empty() {
            return Err(bad("it is empty"));
        }
        if e.contains("://") || e.contains('/') || e.contains('@') || e.contains('?') {
            return Err(bad("give the host only, without scheme, path or user"));
        }
        let (host, port) = if let Some(rest) = e.strip_prefix('[') {
            // [v6] or [v6]:port
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :PORT after ']'"))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match e.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (e.clone(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(domain) => (format!(".{domain}"), true),
            None => (host, false),
        };
        let name = host.trim_start_matches('.');
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if !valid {
            return Err(bad("the host has characters a host name cannot have"));
        }
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    fn permits(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.len() > self.host.len()
                && host
                    .get(host.len() - self.host.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(&self.host))
        } else {
            host.eq_ignore_ascii_case(&self.host)
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// The hosts an HTTP component may send requests to. Empty (the default)
/// denies every outgoing request.
#[derive(Debug, Clone, Default)]
pub struct OutboundAllowList(Arc<[HostPattern]>);

impl OutboundAllowList {
    /// Parses allow-list entries (`host`, `host:port`, `[v6]:port`,
    /// `*.domain`); the error names the bad entry and the accepted forms.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let patterns = entries
            .iter()
            .map(|e| HostPattern::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(patterns.into()))
    }

    /// Whether a request to `uri` is allowed (default ports: 80 for http,
    /// 443 for https).
    pub fn permits(&self, uri: &hyper::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port =
            uri.port_u16()
                .unwrap_or(if uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) {
                    443
                } else {
                    80
                });
        self.0.iter().any(|p| p.permits(host, port))
    }
}

/// `wasi:http` hooks of one request: outgoing requests go out only to hosts on
/// the version's allow-list.
struct OutboundPolicy {
    allow: OutboundAllowList,
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        if !self.allow.permits(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outgoing request denied: host not on the allow-list");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// What one HTTP request runs with, besides the request itself.
pub struct HttpCall {
    /// Timeout and memory cap.
    pub limits: CallLimits,
    /// Hosts outgoing requests may reach.
    pub outbound: OutboundAllowList,
    /// Held until the guest finishes (a concurrency permit, say): the guest
    /// may outlive the response head.
    pub guard: Box<dyn Send + 'static>,
}

impl Engine {
    /// Links a component that exports `wasi:http/incoming-handler`.
    pub(super) fn prepare_http(
        &self,
        component: &wasmtime::component::Component,
    ) -> Result<HttpPre, InvalidComponent> {
        let instance_pre = self.http_linker.instantiate_pre(component).map_err(|e| {
            InvalidComponent(format!(
                "the wasi:http component imports something wasmgrid does not provide: {e:#}. wasi:http \
                 components may import WASI 0.2 and wasi:http 0.2 interfaces only (as under `wasmtime serve -S cli`)"
            ))
        })?;
        ProxyPre::new(instance_pre).map_err(|e| {
            InvalidComponent(format!(
                "the component's wasi:http/incoming-handler export has the wrong shape: {e:#}"
            ))
        })
    }

    /// Serves one request with a fresh instance of an HTTP component. Returns
    /// once the guest has set the response head; the guest keeps running on
    /// its own task while it writes the body, under the same deadline.
    pub async fn handle_http<B>(
        &self,
        prepared: &super::Prepared,
        request: hyper::Request<B>,
        call: HttpCall,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpBodyError>,
    {
        let Some(pre) = prepared.http() else {
            return Err(InvokeError::Host(
                "this version is an algorithm, not a wasi:http component".into(),
            ));
        };
        let HttpCall {
            limits,
            outbound,
            guard,
        } = call;
        let started = Instant::now();
        let deadline = started + limits.timeout;
        let (wasi, stdout, stderr) = self.guest_wasi();
        let state = HttpState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                used: 0,
            },
            hooks: OutboundPolicy { allow: outbound },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let (tx, rx) = tokio::sync::oneshot::channel();
        let http = store.data_mut();
        let mut view = http.http();
        let req = view
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| {
                InvokeError::Host(format!("cannot pass the request to the guest: {e:#}"))
            })?;
        let out = view
            .new_response_outparam(tx)
            .map_err(|e| InvokeError::Host(format!("cannot create the response slot: {e:#}")))?;

        let pre = pre.clone();
        let timeout = limits.timeout;
        let task = tokio::spawn(async move {
            let _guard = guard;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            let result = match tokio::time::timeout(timeout, run).await {
                Err(_elapsed) => Err(InvokeError::Timeout { timeout }),
                Ok(Ok(())) => Ok(()),
                Ok(Err(trap)) => Err(super::classify_trap(&trap, limits, &stderr)),
            };
            if !stdout.is_empty() || !stderr.is_empty() {
                tracing::debug!(target: "wasmgrid::guest", stdout = %stdout.text(), stderr = %stderr.text(), "guest output");
            }
            result
        });

        // Dropping this future (the client went away before the head) or the
        // response body before its end stops the guest, rather than letting
        // it run to its timeout holding a permit and a core.
        let abort = AbortOnDrop::new(task.abort_handle());
        match rx.await {
            Ok(Ok(response)) => Ok(response.map(|inner| {
                use http_body_util::BodyExt;
                GuardedBody { inner, abort }.boxed_unsync()
            })),
            Ok(Err(code)) => {
                // Answered (with an error): the guest may finish under its deadline.
                abort.disarm();
                Err(InvokeError::Crash {
                    message: format!(
                        "the handler answered with wasi:http error-code {} instead of a response",
                        describe(&code)
                    ),
                })
            }
            // The guest finished (or failed) without setting a response.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(InvokeError::Crash {
                    message: "the handler returned without sending a response (call response-outparam.set)"
                        .into(),
                }),
                Err(join) => Err(InvokeError::Host(format!("the request task failed: {join}"))),
            },
        }
    }
}

/// Aborts a guest's task when dropped, unless disarmed.
struct AbortOnDrop {
    handle: tokio::task::AbortHandle,
    armed: std::sync::atomic::AtomicBool,
}

impl AbortOnDrop {
    fn new(handle: tokio::task::AbortHandle) -> Self {
        Self {
            handle,
            armed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn disarm(&self) {
        self.armed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed.load(std::sync::atomic::Ordering::Relaxed) {
            self.handle.abort();
        }
    }
}

pin_project_lite::pin_project! {
    /// A guest's response body that stops the guest when dropped before its
    /// end (the client went away mid-body). Once the body has ended, the
    /// guest may go on with work after the response, under its deadline.
    struct GuardedBody<B> {
        #[pin]
        inner: B,
        abort: AbortOnDrop,
    }
}

impl<B: hyper::body::Body> hyper::body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            this.abort.disarm();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.abort.disarm();
        }
        end
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn describe(code: &ErrorCode) -> String {
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> OutboundAllowList {
        OutboundAllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    }

    fn uri(s: &str) -> hyper::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        let a = OutboundAllowList::default();
        assert!(!a.permits(&uri("http://example.com/")));
        assert!(!a.permits(&uri("https://127.0.0.1:8080/")));
    }

    #[test]
    fn hosts_ports_and_wildcards() {
        let a = allow(&[
            "api.example.com",
            "127.0.0.1:8080",
            "*.svc.internal",
            "[::1]:9000",
        ]);
        assert!(a.permits(&uri("https://api.example.com/v1")));
        assert!(a.permits(&uri("http://API.example.com:81/")));
        assert!(!a.permits(&uri("https://example.com/")));
        assert!(!a.permits(&uri("https://api.example.com.evil.net/")));
        assert!(a.permits(&uri("http://127.0.0.1:8080/healthz")));
        assert!(!a.permits(&uri("http://127.0.0.1:8081/")));
        assert!(!a.permits(&uri("http://127.0.0.1/")));
        assert!(a.permits(&uri("http://a.svc.internal/")));
        assert!(a.permits(&uri("http://b.a.svc.internal/")));
        assert!(!a.permits(&uri("http://svc.internal/")));
        assert!(!a.permits(&uri("http://xsvc.internal/")));
        assert!(a.permits(&uri("http://[::1]:9000/")));
        assert!(!a.permits(&uri("http://[::1]:9001/")));
        let https_default = allow(&["secure.example:443"]);
        assert!(https_default.permits(&uri("https://secure.example/")));
        assert!(!https_default.permits(&uri("http://secure.example/")));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "",
            "http://x.com",
            "x.com/path",
            "x.com:port",
            "user@x.com",
            "[::1",
            "a b",
        ] {
            let err = OutboundAllowList::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("allow_outbound"), "{bad}: {err}");
        }
    }
}
