//! Scores the rows of a CSV file: the same CSV comes back with a `score` column
//! added, the batch-job example (`wasmgrid job submit demo/score-csv ...`).
//!
//! The "model" is a stand-in: a row's score is the mean of its numeric fields
//! (fields that are not numbers, such as ids and names, are ignored), rounded to
//! four decimals. The first row is the header.
//!
//! Malformed input is an `invalid-input` error naming the line: not UTF-8, no
//! header, a header that already has a `score` column, a row with a different
//! number of fields than the header, or a row without any numeric field.

use wasmgrid_sdk::{Error, Input, Output};

fn apply(input: Input) -> Result<Output, Error> {
    let text = input.text()?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut records = reader.records();

    let header = match records.next() {
        Some(row) => row.map_err(|e| malformed(&e))?,
        None => return Err(Error::invalid_input("the CSV is empty: expected a header row")),
    };
    if header.iter().any(|h| h.trim().eq_ignore_ascii_case("score")) {
        return Err(Error::invalid_input(
            "the header already has a `score` column: was this file scored before?",
        ));
    }
    let mut out = header.clone();
    out.push_field("score");
    writer.write_record(&out).map_err(write_failed)?;

    for row in records {
        let row = row.map_err(|e| malformed(&e))?;
        let line = row.position().map_or(0, |p| p.line());
        let numbers: Vec<f64> = row
            .iter()
            .filter_map(|f| f.trim().parse::<f64>().ok())
            .filter(|x| x.is_finite())
            .collect();
        if numbers.is_empty() {
            return Err(Error::invalid_input(format!(
                "line {line} has no numeric field to score"
            )));
        }
        let mean = numbers.iter().sum::<f64>() / numbers.len() as f64;
        let mut out = row.clone();
        out.push_field(&format_score(mean));
        writer.write_record(&out).map_err(write_failed)?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| Error::permanent(format!("cannot finish the CSV output: {e}")))?;
    Ok(Output::with_content_type("text/csv", body))
}

/// `2`, `2.5`, `0.3333`: four decimals at most, no trailing zeros.
fn format_score(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn malformed(e: &csv::Error) -> Error {
    let line = e.position().map_or(String::new(), |p| format!("line {}: ", p.line()));
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => Error::invalid_input(format!(
            "{line}expected {expected_len} fields like the header, found {len}"
        )),
        _ => Error::invalid_input(format!("{line}malformed CSV: {e}")),
    }
}

fn write_failed(e: csv::Error) -> Error {
    Error::permanent(format!("cannot write the CSV output: {e}"))
}

wasmgrid_sdk::algorithm!(apply);
