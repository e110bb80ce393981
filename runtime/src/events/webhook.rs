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

/// Whether an address is on the public internet (not loopback, private,
/// link-local, CGNAT, unique-local, multicast or unspecified).
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
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
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
}

impl WebhookClient {
    pub(crate) fn new(allow_private: bool) -> Result<Self, EventError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("wasmgrid/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .map_err(|e| EventError::Internal(format!("building the webhook client: {e}")))?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// Checks a webhook URL when a subscription is created: http(s), a host,
    /// and (unless allowed) a public address.
    pub(crate) async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("{url:?} is not a valid URL ({e}); use https://host/path"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{url:?} uses scheme {:?}; webhooks must be http or https",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url:?} has no host"))?;
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
                "{url} points at a loopback or private address; start the server with --allow-private-webhooks to allow that"
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
                "{url} is a private address and this server does not allow private webhooks"
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
            .map_err(|e| Failure::Retryable(format!("webhook request failed: {e}")))?;
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
    fn signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
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
