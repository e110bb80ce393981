//! Statistics of a JSON array of numbers: `[1, 2, 3.5]` gives
//! `{"count":3,"mean":2.1666666666666665,"min":1,"max":3.5}`.
//!
//! Anything else is an `invalid-input` error that says what was wrong.

use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input};

fn apply(input: Input) -> Result<Value, Error> {
    let value: Value = input.json()?;
    let Value::Array(items) = value else {
        return Err(Error::invalid_input(format!(
            "expected a JSON array of numbers, got {}",
            describe(&value)
        )));
    };
    if items.is_empty() {
        return Err(Error::invalid_input(
            "expected a JSON array of numbers: need at least one number",
        ));
    }

    // min and max are input elements, so integers stay integers in the output.
    let (mut min, mut max) = (&items[0], &items[0]);
    let mut sum = 0.0;
    for (i, item) in items.iter().enumerate() {
        let Some(x) = item.as_f64() else {
            return Err(Error::invalid_input(format!(
                "expected a JSON array of numbers, but element {i} is {}",
                describe(item)
            )));
        };
        sum += x;
        if x < min.as_f64().unwrap_or(f64::INFINITY) {
            min = item;
        }
        if x > max.as_f64().unwrap_or(f64::NEG_INFINITY) {
            max = item;
        }
    }
    let count = items.len();
    Ok(json!({
        "count": count,
        "mean": sum / count as f64,
        "min": min,
        "max": max,
    }))
}

/// "an object", "a string", ... for error messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

wasmgrid_sdk::algorithm!(apply);
