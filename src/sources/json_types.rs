//! NDJSON fields whose records disagree on the kind of value: a producer that began writing
//! `amount` as text (`"12.50"`, as Jackson writes a BigDecimal) where older records hold the
//! number `12.5`. arrow infers such a field as text, then refuses the first number in it
//! ("expected string got 12.5") and the table cannot be read at all. arrow's number readers
//! take numbers written as text, so a field of numbers and numeric text is read as a number
//! column (Int64 when every value is an integer, else Float64); a field of numbers (or booleans,
//! lists, objects) and other text is an error naming a line of each, at registration rather
//! than halfway through the diff. Across files (older files of numbers, newer ones of numeric
//! text: arrow's merge refuses Int64 and Utf8), [`Sample::numeric_text`] tells the table's
//! schema merge which text columns are numbers.
//!
//! Reads the records the schema was inferred from once more (1,000 by default), and only for
//! schemas with text fields.

use std::io::Read;

use anyhow::{Result, anyhow};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use object_store::{ObjectMeta, ObjectStore};
use serde_json::Value;

use super::locate;

/// What the sampled records of a table's (or one file's) NDJSON files hold in its text fields.
pub struct Sample {
    tree: Node,
}

impl Sample {
    /// Reads the first `sampled` records of `files`, in order (the records arrow inferred
    /// `schema` from). Unless `kinds` asks for the kinds of every text field, the records are
    /// first decoded by arrow's reader (fast: a quarter of a second for 100 MB), and only when
    /// that fails are they parsed again to tell the kinds apart (slow: serde values, seconds
    /// for 100 MB under `infer_all_records`).
    pub async fn read(
        store: &dyn ObjectStore,
        files: &[&ObjectMeta],
        schema: &SchemaRef,
        sampled: usize,
        kinds: bool,
        shown: impl Fn(&ObjectMeta) -> String,
    ) -> Result<Sample> {
        let mut tree = Node::of(&DataType::Struct(schema.fields().clone()));
        if !kinds && !matches!(tree, Node::Ignored) {
            let started = std::time::Instant::now();
            let decoded = decodes(store, files, schema, sampled).await?;
            tracing::debug!(
                decoded,
                seconds = started.elapsed().as_secs_f64(),
                "NDJSON sample decoded as inferred"
            );
            if decoded {
                tree = Node::Ignored;
            }
        }
        let mut left = sampled;
        for file in files {
            if left == 0 || matches!(tree, Node::Ignored) {
                break;
            }
            let reader =
                locate::open(store, &file.location, FileCompressionType::UNCOMPRESSED).await?;
            let (returned, read) = tokio::task::spawn_blocking(move || -> Result<(Node, usize)> {
                let read = tree.visit_records(reader, left)?;
                Ok((tree, read))
            })
            .await
            .map_err(|e| anyhow!("internal: {e}"))??;
            tree = returned;
            tree.name_file(&shown(file));
            left = left.saturating_sub(read);
        }
        Ok(Sample { tree })
    }

    /// `schema` with each text field of numbers and numeric text read as numbers, or the error
    /// of a field whose values no one type reads.
    pub fn resolve(&self, schema: SchemaRef) -> Result<SchemaRef> {
        let Some(DataType::Struct(fields)) = self
            .tree
            .resolve(&DataType::Struct(schema.fields().clone()), "")?
        else {
            return Ok(schema);
        };
        Ok(std::sync::Arc::new(Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        )))
    }

    /// Whether every sampled value of top-level text field `name` reads as a number (and then
    /// whether any has a fraction): a file of a producer that writes numbers as text, where
    /// other files hold them as numbers.
    pub fn numeric_text(&self, name: &str) -> Option<bool> {
        let Node::Struct(fields) = &self.tree else {
            return None;
        };
        match fields.iter().find(|(n, _)| n == name)? {
            (_, Node::Text(kinds))
                if !kinds.first.is_empty()
                    && kinds.first.iter().all(|(k, _)| *k == Kind::NumericText) =>
            {
                Some(kinds.fraction)
            }
            _ => None,
        }
    }
}

/// Whether arrow's reader decodes the first `sampled` records of `files` as `schema`.
async fn decodes(
    store: &dyn ObjectStore,
    files: &[&ObjectMeta],
    schema: &SchemaRef,
    sampled: usize,
) -> Result<bool> {
    // The text fields only: the others were inferred from what they hold.
    let text: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| has_text(f.data_type()))
        .cloned()
        .collect();
    let schema = std::sync::Arc::new(Schema::new(text));
    let mut left = sampled;
    for file in files {
        if left == 0 {
            break;
        }
        let mut reader =
            locate::open(store, &file.location, FileCompressionType::UNCOMPRESSED).await?;
        let schema = schema.clone();
        let decoded = tokio::task::spawn_blocking(move || -> Result<Option<usize>> {
            const BATCH: usize = 8192;
            let mut decoder = ReaderBuilder::new(schema)
                .with_batch_size(BATCH.min(left))
                .build_decoder()?;
            let (mut records, mut buffer) = (0usize, vec![0u8; 1 << 20]);
            let (mut start, mut end) = (0, 0);
            loop {
                if start == end {
                    (start, end) = (0, reader.read(&mut buffer)?);
                }
                let consumed = match decoder.decode(&buffer[start..end]) {
                    Ok(consumed) => consumed,
                    Err(_) => return Ok(None),
                };
                start += consumed;
                // A full batch, or the end of the file.
                if consumed == 0 || end == 0 {
                    match decoder.flush() {
                        Ok(Some(batch)) => records += batch.num_rows(),
                        Ok(None) => {}
                        Err(_) => return Ok(None),
                    }
                    if end == 0 || records >= left {
                        return Ok(Some(records));
                    }
                }
            }
        })
        .await
        .map_err(|e| anyhow!("internal: {e}"))??;
        match decoded {
            Some(records) => left = left.saturating_sub(records),
            None => return Ok(false),
        }
    }
    Ok(true)
}

fn has_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Struct(fields) => fields.iter().any(|f| has_text(f.data_type())),
        _ => false,
    }
}

/// Where a value was seen: its file (named once the file is read), line and JSON text.
#[derive(Debug, Clone)]
struct Seen {
    file: Option<String>,
    line: u64,
    value: String,
}

/// A kind of JSON value, as arrow's readers tell them apart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    /// Text that reads as a number (`"2.50"`).
    NumericText,
    Text,
    Boolean,
    List,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Option<Kind> {
        Some(match value {
            Value::Null => return None,
            Value::Number(_) => Kind::Number,
            Value::String(text) => match numeric_text(text) {
                Some(_) => Kind::NumericText,
                None => Kind::Text,
            },
            Value::Bool(_) => Kind::Boolean,
            Value::Array(_) => Kind::List,
            Value::Object(_) => Kind::Object,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::NumericText | Kind::Text => "text",
            Kind::Boolean => "a boolean",
            Kind::List => "a list",
            Kind::Object => "an object",
        }
    }
}

/// The kinds of value the sampled records hold in one field inferred as text, each with where
/// it was first seen.
#[derive(Debug, Default)]
struct Kinds {
    first: Vec<(Kind, Seen)>,
    /// A number with a fraction or an exponent: the column is Float64, not Int64.
    fraction: bool,
}

/// The schema as a tree of the fields that matter: text fields, and structs holding some.
#[derive(Debug)]
enum Node {
    Text(Kinds),
    Struct(Vec<(String, Node)>),
    Ignored,
}

impl Node {
    fn of(data_type: &DataType) -> Node {
        match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Node::Text(Kinds::default())
            }
            DataType::Struct(fields) if fields.iter().any(|f| has_text(f.data_type())) => {
                Node::Struct(
                    fields
                        .iter()
                        .map(|f| (f.name().clone(), Node::of(f.data_type())))
                        .collect(),
                )
            }
            _ => Node::Ignored,
        }
    }

    /// Visits up to `records` records of `reader`; returns how many there were.
    fn visit_records(&mut self, reader: Box<dyn Read + Send>, records: usize) -> Result<usize> {
        let mut read = 0;
        for (index, line) in locate::lines(reader).enumerate() {
            if read == records {
                break;
            }
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            read += 1;
            // A line that is no JSON object is the reader's error to report, with its line.
            if let Ok(value) = serde_json::from_slice::<Value>(&line) {
                self.visit(&value, index as u64 + 1);
            }
        }
        Ok(read)
    }

    fn visit(&mut self, value: &Value, line: u64) {
        // A list or an object is shown by its start.
        let seen = |value: &Value| {
            let text = value.to_string();
            Seen {
                file: None,
                line,
                value: match text.chars().nth(40) {
                    None => text,
                    Some(_) => format!("{}…", text.chars().take(40).collect::<String>()),
                },
            }
        };
        match (self, value) {
            (Node::Ignored, _) => {}
            (Node::Struct(fields), Value::Object(map)) => {
                for (name, node) in fields {
                    if let Some(value) = map.get(name) {
                        node.visit(value, line);
                    }
                }
            }
            (Node::Struct(_), _) => {}
            (Node::Text(kinds), value) => {
                let Some(kind) = Kind::of(value) else {
                    return;
                };
                kinds.fraction |= match value {
                    Value::Number(number) => number.as_i64().is_none(),
                    Value::String(text) => numeric_text(text) == Some(false),
                    _ => false,
                };
                if kinds.first.iter().all(|(k, _)| *k != kind) {
                    kinds.first.push((kind, seen(value)));
                }
            }
        }
    }

    /// Names the file of the values seen in it.
    fn name_file(&mut self, file: &str) {
        match self {
            Node::Text(kinds) => {
                for (_, seen) in &mut kinds.first {
                    seen.file.get_or_insert_with(|| file.to_string());
                }
            }
            Node::Struct(fields) => fields.iter_mut().for_each(|(_, n)| n.name_file(file)),
            Node::Ignored => {}
        }
    }

    /// The type to read this field as (`None`: as inferred), or the error of a field no one type
    /// reads. `path` names the field (`payload.amount`).
    fn resolve(&self, inferred: &DataType, path: &str) -> Result<Option<DataType>> {
        match (self, inferred) {
            (Node::Text(kinds), _) => kinds.resolve(path),
            (Node::Struct(nodes), DataType::Struct(fields)) => {
                let mut changed = false;
                let mut resolved = Vec::with_capacity(fields.len());
                for (field, (_, node)) in fields.iter().zip(nodes) {
                    let path = match path {
                        "" => field.name().clone(),
                        parent => format!("{parent}.{}", field.name()),
                    };
                    match node.resolve(field.data_type(), &path)? {
                        Some(data_type) => {
                            changed = true;
                            resolved.push(Field::new(field.name(), data_type, field.is_nullable()));
                        }
                        None => resolved.push(field.as_ref().clone()),
                    }
                }
                Ok(changed.then(|| DataType::Struct(Fields::from(resolved))))
            }
            _ => Ok(None),
        }
    }
}

impl Kinds {
    /// Numbers and numeric text read as numbers; text alone is text (numbers alone, or text
    /// alone that reads as numbers, are text for a reason outside the sample); any other two
    /// kinds are an error naming where each was seen.
    fn resolve(&self, path: &str) -> Result<Option<DataType>> {
        let has = |kind: Kind| self.first.iter().find(|(k, _)| *k == kind);
        let text_kinds = [Kind::NumericText, Kind::Text];
        if self.first.iter().all(|(k, _)| text_kinds.contains(k)) {
            return Ok(None);
        }
        if has(Kind::Number).is_some() && has(Kind::NumericText).is_some() && self.first.len() == 2
        {
            return Ok(Some(match self.fraction {
                true => DataType::Float64,
                false => DataType::Int64,
            }));
        }
        // Text that is no number against anything else; numeric text against what is not a
        // number; with no text in the sample, the first two kinds.
        let other_than = |kinds: &[Kind]| self.first.iter().find(|(k, _)| !kinds.contains(k));
        let conflict = match (has(Kind::Text), has(Kind::NumericText)) {
            (Some(text), _) => other_than(&text_kinds).map(|other| (text, other)),
            (None, Some(text)) => {
                other_than(&[Kind::Number, Kind::NumericText]).map(|other| (text, other))
            }
            (None, None) => match self.first.as_slice() {
                [a, b, ..] => Some((a, b)),
                _ => None,
            },
        };
        let Some(((one, seen_one), (other, seen_other))) = conflict else {
            return Ok(None);
        };
        let at = |seen: &Seen| match &seen.file {
            Some(file) => format!("{file}, line {}: {}", seen.line, seen.value),
            None => format!("line {}: {}", seen.line, seen.value),
        };
        Err(anyhow!(
            "field '{path}' is {} in some records ({}) and {} in others ({}); a column has one type, and no one type reads both",
            one.name(),
            at(seen_one),
            other.name(),
            at(seen_other)
        ))
    }
}

/// Whether `text` is a JSON number (as arrow's number readers take it) and, if so, whether an
/// integer that fits 64 bits: `Some(true)`, `Some(false)` for other numbers.
fn numeric_text(text: &str) -> Option<bool> {
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let number: serde_json::Number = serde_json::from_str(text).ok()?;
    let integral = !text.contains(['.', 'e', 'E']);
    match (integral, number.as_i64()) {
        (true, Some(_)) => Some(true),
        // An integer past 64 bits would lose digits as a float.
        (true, None) => None,
        (false, _) => number.as_f64().map(|_| false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(records: &str, data_type: DataType) -> Result<Option<DataType>> {
        let schema = DataType::Struct(Fields::from(vec![Field::new("v", data_type, true)]));
        let mut tree = Node::of(&schema);
        tree.visit_records(Box::new(std::io::Cursor::new(records.to_string())), 1000)?;
        tree.name_file("f.ndjson");
        Ok(match tree.resolve(&schema, "")? {
            Some(DataType::Struct(fields)) => Some(fields[0].data_type().clone()),
            _ => None,
        })
    }

    #[test]
    fn numbers_and_numeric_text_read_as_numbers() {
        let int = "{\"v\":1}\n{\"v\":\"2\"}\n";
        assert_eq!(
            resolved(int, DataType::Utf8).unwrap(),
            Some(DataType::Int64)
        );
        let float = "{\"v\":1}\n\n{\"v\":\"2.50\"}\n{\"v\":null}\n";
        assert_eq!(
            resolved(float, DataType::Utf8).unwrap(),
            Some(DataType::Float64)
        );
        let exponent = "{\"v\":\"1\"}\n{\"v\":2e3}\n";
        assert_eq!(
            resolved(exponent, DataType::Utf8).unwrap(),
            Some(DataType::Float64)
        );
        // Text alone stays text, whatever it looks like: its type came from outside the sample.
        let text = "{\"v\":\"1\"}\n{\"v\":\"x\"}\n";
        assert_eq!(resolved(text, DataType::Utf8).unwrap(), None);
        assert_eq!(resolved("{\"v\":\"1\"}\n", DataType::Utf8).unwrap(), None);
    }

    #[test]
    fn numbers_and_other_text_name_a_line_of_each() {
        let mixed = "{\"v\":1.5}\n{\"v\":\"2\"}\n\n{\"v\":\"n/a\"}\n";
        let error = resolved(mixed, DataType::Utf8).unwrap_err().to_string();
        assert!(error.contains("field 'v'"), "{error}");
        assert!(error.contains("f.ndjson, line 4: \"n/a\""), "{error}");
        assert!(
            error.contains("a number in others (f.ndjson, line 1: 1.5)"),
            "{error}"
        );
        let boolean = "{\"v\":\"yes\"}\n{\"v\":true}\n";
        let error = resolved(boolean, DataType::Utf8).unwrap_err().to_string();
        assert!(error.contains("a boolean in others"), "{error}");
        let no_text = "{\"v\":1}\n{\"v\":[1,2]}\n";
        let error = resolved(no_text, DataType::Utf8).unwrap_err().to_string();
        assert!(
            error.contains("is a number in some records (f.ndjson, line 1: 1) and a list in others (f.ndjson, line 2: [1,2])"),
            "{error}"
        );
        let long = format!(
            "{{\"v\":\"x\"}}\n{{\"v\":{{\"k\":\"{}\"}}}}\n",
            "y".repeat(100)
        );
        let error = resolved(&long, DataType::Utf8).unwrap_err().to_string();
        assert!(error.contains("yyy…)") && error.len() < 300, "{error}");
        // Leading zeros, spaces, signs and integers past 64 bits are not numbers as written.
        for text in ["007", " 1", "+1", "12345678901234567890", "NaN", ""] {
            let records = format!("{{\"v\":1}}\n{{\"v\":\"{text}\"}}\n");
            assert!(resolved(&records, DataType::Utf8).is_err(), "{text}");
        }
    }

    #[test]
    fn nested_fields_are_resolved_by_their_path() {
        let schema = DataType::Struct(Fields::from(vec![Field::new(
            "payload",
            DataType::Struct(Fields::from(vec![
                Field::new("amount", DataType::Utf8, true),
                Field::new("id", DataType::Int64, true),
            ])),
            true,
        )]));
        let mut tree = Node::of(&schema);
        let records = "{\"payload\":{\"id\":1,\"amount\":\"1.5\"}}\n{\"payload\":{\"id\":2,\"amount\":2}}\n{\"payload\":null}\n";
        tree.visit_records(Box::new(std::io::Cursor::new(records)), 1000)
            .unwrap();
        let Some(DataType::Struct(fields)) = tree.resolve(&schema, "").unwrap() else {
            panic!("payload.amount is numbers");
        };
        let DataType::Struct(payload) = fields[0].data_type() else {
            panic!("payload is a struct");
        };
        assert_eq!(payload[0].data_type(), &DataType::Float64);
        assert_eq!(payload[1].data_type(), &DataType::Int64);

        let records = "{\"payload\":{\"amount\":\"x\"}}\n{\"payload\":{\"amount\":2}}\n";
        let mut tree = Node::of(&schema);
        tree.visit_records(Box::new(std::io::Cursor::new(records)), 1000)
            .unwrap();
        let error = tree.resolve(&schema, "").unwrap_err().to_string();
        assert!(error.contains("field 'payload.amount'"), "{error}");
    }

    #[test]
    fn only_the_sampled_records_are_read() {
        let schema = DataType::Struct(Fields::from(vec![Field::new("v", DataType::Utf8, true)]));
        let mut tree = Node::of(&schema);
        let records = "{\"v\":\"a\"}\n{\"v\":1}\n";
        assert_eq!(
            tree.visit_records(Box::new(std::io::Cursor::new(records)), 1)
                .unwrap(),
            1
        );
        assert_eq!(tree.resolve(&schema, "").unwrap(), None);
    }
}
