//! Wall-clock timestamps in the one format records and events carry.

use std::time::SystemTime;

/// Now, RFC 3339 with milliseconds, UTC (`2024-01-02T03:04:05.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
