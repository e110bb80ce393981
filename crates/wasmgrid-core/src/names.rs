//! Owner, algorithm and collection names: one rule, checked by every layer that
//! takes a name (registry, data, events, API), so it lives below all of them.

/// A name that breaks the naming rule; the message names the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Checks an owner or algorithm name: 1–64 characters, letters, digits, `_` and
/// `-`, starting with a letter or digit. `what` names the field in the message.
pub fn validate_name(what: &str, value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName(format!(
            "invalid {what} {value:?}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("owner", "demo").is_ok());
        assert!(validate_name("owner", "my-org_2").is_ok());
        for bad in ["", "-x", "a/b", "a b", ".my", &"x".repeat(65)] {
            assert!(validate_name("owner", bad).is_err(), "{bad:?}");
        }
    }
}
