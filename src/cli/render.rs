//! How client commands print: aligned text for people, one JSON object per line for scripts.
//!
//! Field values are bytes; they print as text when they are UTF-8 and as `base64:<...>` (JSON:
//! `{"base64": "..."}`) when they are not, so nothing is mangled on the way to a terminal.

use std::io::Write;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::grpc::pb;

/// The printer of one command run.
pub(super) struct Output {
    json: bool,
    /// Widths of the stream and id columns so far, so that consecutive lines align.
    widths: (usize, usize),
}

/// A field value for people.
fn text_of(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(value)
        ),
    }
}

/// A field value for scripts.
fn json_of(value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(value) }),
    }
}

impl Output {
    pub(super) fn new(json: bool) -> Self {
        Self {
            json,
            widths: (0, 0),
        }
    }

    fn line(&self, text: &str) {
        // A closed pipe (`| head`) is not an error worth a panic.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    fn json_line(&self, value: &Value) {
        self.line(&value.to_string());
    }

    pub(super) fn produced(&mut self, stream: &str, ids: &[String]) {
        if self.json {
            self.json_line(&json!({ "stream": stream, "ids": ids }));
        } else {
            for id in ids {
                self.line(id);
            }
        }
    }

    pub(super) fn started(&mut self, started: &pb::SubscriptionStarted) {
        if self.json {
            return;
        }
        let who = if started.consumer.is_empty() {
            String::new()
        } else {
            format!(" as consumer {}", started.consumer)
        };
        eprintln!("subscribed to {}{who}", started.streams.join(", "));
    }

    pub(super) fn message(&mut self, message: &pb::ReceivedMessage) {
        if self.json {
            let fields: Vec<Value> = message
                .fields
                .iter()
                .map(|f| json!([f.name, json_of(&f.value)]))
                .collect();
            self.json_line(&json!({
                "stream": message.stream,
                "id": message.id,
                "deliveryCount": message.delivery_count,
                "fields": fields,
            }));
            return;
        }
        self.widths.0 = self.widths.0.max(message.stream.len());
        self.widths.1 = self.widths.1.max(message.id.len());
        let fields: Vec<String> = message
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, text_of(&f.value)))
            .collect();
        let redelivered = if message.delivery_count > 1 {
            format!(" (delivery {})", message.delivery_count)
        } else {
            String::new()
        };
        self.line(&format!(
            "{:sw$}  {:iw$}  {}{redelivered}",
            message.stream,
            message.id,
            fields.join(" "),
            sw = self.widths.0,
            iw = self.widths.1,
        ));
    }

    pub(super) fn count(&mut self, what: &str, count: u64) {
        if self.json {
            self.json_line(&json!({ what: count }));
        } else {
            self.line(&format!("{what} {count}"));
        }
    }

    pub(super) fn health(&mut self, status: &str) {
        if self.json {
            self.json_line(&json!({ "status": status }));
        } else {
            self.line(status);
        }
    }

    /// An Admin response as proto3 JSON: printed as is with `--json`, else each list of
    /// records as an aligned table and every other field as `name: value`.
    pub(super) fn response(&mut self, mut value: Value) {
        readable_fields(&mut value);
        if self.json {
            self.json_line(&value);
            return;
        }
        let Value::Object(top) = value else {
            self.line(&value.to_string());
            return;
        };
        if top.is_empty() {
            self.line("ok");
        }
        for (name, value) in top {
            match value {
                Value::Array(rows) if rows.is_empty() => self.line(&format!("{name}: (none)")),
                Value::Array(rows) if rows.iter().all(Value::is_object) => {
                    self.line(&format!("{name}:"));
                    self.table(&rows);
                }
                other => self.line(&format!("{name}: {}", scalar(&other))),
            }
        }
    }

    fn table(&self, rows: &[Value]) {
        let mut columns: Vec<String> = Vec::new();
        for row in rows {
            if let Value::Object(map) = row {
                for key in map.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|c| row.get(c).map(scalar).unwrap_or_default())
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].len())
                    .chain([c.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        self.line(&format!("  {}", render(&columns)));
        for row in &cells {
            self.line(&format!("  {}", render(row)));
        }
    }
}

/// A value inside a table cell or after `name:`.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Proto3 JSON writes `bytes` as base64; message fields (`[{name, value}]`) become
/// `name=value` text here, which is what a person (or a jq script) wants to see.
fn readable_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(fields)) = map.get("fields")
                && fields.iter().all(|f| f.get("name").is_some())
            {
                let readable: Map<String, Value> = fields
                    .iter()
                    .map(|f| {
                        let name = f.get("name").map(scalar).unwrap_or_default();
                        let raw = f
                            .get("value")
                            .and_then(Value::as_str)
                            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                            .unwrap_or_default();
                        (name, json_of(&raw))
                    })
                    .collect();
                map.insert("fields".into(), Value::Object(readable));
            }
            for child in map.values_mut() {
                readable_fields(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(readable_fields),
        _ => {}
    }
}
