//! `wasmgrid topic`, `sub`, `publish` and `deadletters`: thin clients of the
//! events API (docs/EVENTS.md). Human-readable output by default; `--json`
//! prints the API's JSON unchanged, for scripts.

mod deadletters;
mod publish;
mod subs;
mod topics;

pub use deadletters::{DeadLetterCommand, run_dead_letters};
pub use publish::{PublishArgs, run_publish};
pub use subs::{SubCommand, run_sub};
pub use topics::{TopicCommand, run_topic};

use super::data::encode_segment;
use anyhow::Context as _;
use serde_json::Value;
use std::io::Read;

pub(crate) fn topic_path(topic: &str) -> String {
    format!("/v1/topics/{}", encode_segment(topic))
}

pub(crate) fn sub_path(topic: &str, name: &str) -> String {
    format!(
        "{}/subscriptions/{}",
        topic_path(topic),
        encode_segment(name)
    )
}

pub(crate) fn json_body(v: &Value) -> anyhow::Result<Option<(Vec<u8>, &'static str)>> {
    Ok(Some((serde_json::to_vec(v)?, "application/json")))
}

/// Reads `-` (stdin), `@FILE` or the argument itself.
pub(crate) fn read_arg_bytes(arg: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {what} from stdin"))?;
        Ok(buf)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("cannot read {what} from {path}"))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}
