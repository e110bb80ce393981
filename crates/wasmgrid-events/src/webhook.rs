//! Webhook deliveries: structured-mode CloudEvents POSTs signed with
//! HMAC-SHA256, to public addresses only unless the server allows private ones.
//!
//! The address check lives in the HTTP client's DNS resolver, so the address
//! that was checked is the address connected to (no window for DNS
//! rebinding), and redirects are not followed (a public URL cannot bounce a
//! delivery to a private one). IP-literal URLs skip DNS and are checked
//! directly.

use super::EventError;
use super::delivery::Failure;
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::value::RawValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` keyed by the
/// subscription's webhook secret.
pub const SIGNATURE_HEADER: &str = "x-wasmgrid-signature";

/// Whether an address is on the public internet: not loopback, private,
/// link-local, CGNAT, benchmarking, IETF protocol assignments, documentation,
/// reserved, broadcast, multicast or unspecified, and for IPv6 not one of those
/// either, nor unique-local, Teredo, discard-only or documentation, and not an
/// IPv4 address embedded (IPv4-mapped and -compatible, NAT64 and 6to4) that is
/// not public itself.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10: carrier-grade NAT.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // 192.0.0.0/24: IETF protocol assignments.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                // 198.18.0.0/15: benchmarking.
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                // 240.0.0.0/4: reserved (and 255.255.255.255, broadcast).
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                )))
            };
            // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but
            // still routed as IPv4 by some stacks); :: and ::1 are caught below.
            if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && (s[6] != 0 || s[7] > 1))) {
                return embedded(s[6], s[7]);
            }
            // 64:ff9b::/96 (NAT64 well-known) and 64:ff9b:1::/48 (local-use
            // NAT64) reach the IPv4 address in the last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
                return embedded(s[6], s[7]);
            }
            // 2002::/16: 6to4, the IPv4 address in bits 16-47.
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7: unique local.
                || (s[0] & 0xfe00) == 0xfc00
                // fe80::/10: link-local (and fec0::/10, the deprecated site-local).
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // 2001::/32: Teredo, which tunnels to an IPv4 address.
                || (s[0] == 0x2001 && s[1] == 0)
                // 2001:db8::/32 and 3fff::/20: documentation.
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x3fff && (s[1] & 0xf000) == 0)
                // 100::/64: discard-only.
                || (s[0] == 0x0100 && s[1..4] == [0; 3]))
        }
    }
}

/// A webhook URL as wasmgrid shows it (subscription listings, messages): any
/// password in it replaced by `***`. Deliveries use the URL as given, so basic
/// auth in webhook URLs keeps working.
pub(crate) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        // Not a URL: it cannot be told where a password would be, so show
        // nothing past the scheme.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "(not a URL)".into(),
        },
    }
}

/// The webhook URL a subscription replace stores: a URL read back from
/// wasmgrid (its password shown as `***`) and sent again means "unchanged", so
/// the stored password is kept; any other URL is taken as given.
pub(crate) fn keep_redacted_password(new: &str, stored: &str) -> Option<String> {
    (new != stored && redact(stored) == new).then(|| stored.to_string())
}

/// How long one webhook delivery may take, connection included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// An error with its causes (reqwest's own message is only "error sending
/// request"; the cause says what went wrong).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Resolves with the system resolver and drops non-public addresses.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address; private and loopback webhooks need a server started with --allow-private-webhooks"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of webhook deliveries.
pub(crate) struct WebhookClient {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl WebhookClient {
    pub(crate) fn new(allow_private: bool) -> Result<Self, EventError> {
        Self::with_timeout(allow_private, DELIVERY_TIMEOUT)
    }

    fn with_timeout(allow_private: bool, timeout: Duration) -> Result<Self, EventError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("wasmgrid/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .map_err(|e| EventError::Internal(format!("building the webhook client: {e}")))?;
        Ok(Self {
            client,
            allow_private,
            timeout,
        })
    }

    /// Checks a webhook URL when a subscription is created: http(s), a host,
    /// and (unless allowed) a public address.
    pub(crate) async fn check_url(&self, url: &str) -> Result<(), String> {
        let shown = redact(url);
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("{shown:?} is not a valid URL ({e}); use https://host/path"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{shown:?} uses scheme {:?}; webhooks must be http or https",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{shown:?} has no host"))?;
        if self.allow_private {
            return Ok(());
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.iter().any(|ip| is_public(*ip)) {
            Ok(())
        } else {
            Err(format!(
                "{shown} points at a loopback, private or reserved address; start the server with --allow-private-webhooks to allow that"
            ))
        }
    }

    /// POSTs one event (structured mode) or a batch (`batched`: a JSON
    /// array, `application/cloudevents-batch+json`). 2xx is success; 400, 403
    /// and 413 are not retried; anything else is.
    pub(crate) async fn deliver(
        &self,
        url: &str,
        secret: &str,
        events: &[&RawValue],
        batched: bool,
    ) -> Result<(), Failure> {
        // The stored events are structured CloudEvents JSON already.
        let (body, content_type) = if batched {
            (
                super::delivery::json_array(events),
                "application/cloudevents-batch+json; charset=utf-8",
            )
        } else {
            (
                events
                    .first()
                    .map_or(b"null".to_vec(), |e| e.get().as_bytes().to_vec()),
                "application/cloudevents+json; charset=utf-8",
            )
        };
        if !self.allow_private
            && let Ok(parsed) = reqwest::Url::parse(url)
            && let Some(host) = parsed.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && !is_public(ip)
        {
            return Err(Failure::NonRetryable(format!(
                "{} is a private address and this server does not allow private webhooks",
                redact(url)
            )));
        }
        let signature = sign(secret, &body);
        let resp = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // `without_url`: the error would otherwise print the URL, with
                // any password in it.
                let shown = redact(url);
                if e.is_timeout() {
                    Failure::Retryable(format!(
                        "webhook {shown} timed out: no answer within {} s",
                        self.timeout.as_secs_f64()
                    ))
                } else {
                    Failure::Retryable(format!(
                        "webhook request to {shown} failed: {}",
                        error_chain(&e.without_url())
                    ))
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let outcome = format!("webhook answered HTTP {}", status.as_u16());
        match status.as_u16() {
            400 | 403 | 413 => Err(Failure::NonRetryable(outcome)),
            429 | 503 => Err(Failure::Retryable(outcome)),
            _ => Err(Failure::Retryable(outcome)),
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this branch is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn special_purpose_and_embedded_addresses_are_not_public() {
        for ip in [
            // NAT64 to link-local (169.254.169.254) and loopback.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            // 6to4 of 169.254.169.254 and of 10.0.0.1.
            "2002:a9fe:a9fe::1",
            "2002:a00:1::",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            // IPv4-compatible and IPv4-mapped.
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            // Teredo, documentation, multicast, site-local, discard.
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "ff02::1",
            "ff0e::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(
                !is_public(ip.parse().unwrap()),
                "{ip} must not count as public"
            );
        }
        for ip in [
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "198.20.0.1",
            "192.0.1.1",
            "223.0.0.1",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn a_redacted_url_sent_back_keeps_the_stored_password() {
        let stored = "https://user:s3cret@hooks.example.com/x?y=1";
        assert_eq!(
            keep_redacted_password("https://user:***@hooks.example.com/x?y=1", stored).as_deref(),
            Some(stored)
        );
        // A new password, user, host or path is a new URL.
        for new in [
            "https://user:other@hooks.example.com/x?y=1",
            "https://eve:***@hooks.example.com/x?y=1",
            "https://user:***@evil.example.com/x?y=1",
            "https://user:***@hooks.example.com/y?y=1",
            stored,
        ] {
            assert_eq!(keep_redacted_password(new, stored), None, "{new}");
        }
    }

    #[test]
    fn passwords_in_webhook_urls_are_redacted() {
        assert_eq!(
            redact("https://user:s3cret@hooks.example.com/x?y=1"),
            "https://user:***@hooks.example.com/x?y=1"
        );
        assert_eq!(
            redact("https://hooks.example.com/x"),
            "https://hooks.example.com/x"
        );
        assert!(!redact("https://u:s3cret@exa mple.com/").contains("s3cret"));
    }

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_webhook_that_never_answers_is_reported_as_a_timeout() {
        // A real listener that accepts and then says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let client = WebhookClient::with_timeout(true, Duration::from_millis(300)).unwrap();
        let event = RawValue::from_string("{}".into()).unwrap();
        let url = format!("http://hook:pa55word@{addr}/hook");
        let err = client.deliver(&url, "k", &[&event], false).await;
        held.abort();
        let Err(Failure::Retryable(msg)) = err else {
            panic!("expected a retryable failure, got {err:?}");
        };
        assert!(msg.contains("timed out: no answer within 0.3 s"), "{msg}");
        assert!(
            !msg.contains("pa55word") && msg.contains("hook:***@"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn refused_urls_do_not_echo_passwords() {
        let strict = WebhookClient::new(false).unwrap();
        let err = strict
            .check_url("http://user:pa55word@127.0.0.1:9/hook")
            .await
            .unwrap_err();
        assert!(
            !err.contains("pa55word") && err.contains("user:***@"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_allowed() {
        let strict = WebhookClient::new(false).unwrap();
        let err = strict
            .check_url("http://127.0.0.1:9/hook")
            .await
            .unwrap_err();
        assert!(err.contains("--allow-private-webhooks"), "{err}");
        assert!(strict.check_url("ftp://example.com/").await.is_err());
        let lax = WebhookClient::new(true).unwrap();
        assert!(lax.check_url("http://127.0.0.1:9/hook").await.is_ok());
    }
}
