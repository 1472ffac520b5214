//! The line of a text file (CSV, NDJSON) that a reader's error is about. Arrow's CSV reader
//! numbers records, not lines, and from wherever its byte range of the file started (DataFusion
//! splits a large file between partitions): a bad value on line 500,001 was reported "at line
//! 189481". Its JSON reader names no line at all, or line 1 of whatever line it parsed. On the
//! error path only, the file is read again from the start to find the line an editor shows.

use std::io::Read;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// The compression a file's first bytes announce, by name: a sink's compressed text files
/// (Kafka Connect's `s3.compression.type`, Firehose, Spark's `compression` option) otherwise
/// fail as undecodable text at line 1, or as a header of garbage.
///
/// Every signature but bzip2's starts with a byte no UTF-8 text starts with; bzip2's `BZh` is
/// text (a header `BZhang,…`), so its block size digit and first block's (or end's) magic must
/// follow: the check runs on every CSV file's first bytes.
pub fn compression_of(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 5] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
        (
            &[0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'],
            "snappy",
        ),
    ];
    const BZIP2_BLOCK: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    const BZIP2_END: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
    if let Some(rest) = head.strip_prefix(b"BZh")
        && let [b'1'..=b'9', magic @ ..] = rest
        && (magic.starts_with(&BZIP2_BLOCK) || magic.starts_with(&BZIP2_END))
    {
        return Some("bzip2");
    }
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
}

/// What a compressed text file is told: what it is (`the file is gzip-compressed`), how text is
/// read, and the ways out.
pub fn compressed_text(what: &str) -> String {
    format!(
        "{what}; CSV and NDJSON files are read uncompressed (decompress them, or have the sink write Parquet or Avro, which compress inside the file)"
    )
}

/// [`compressed_text`] of a file whose first bytes say `compression`.
pub fn compressed_bytes(compression: &str) -> String {
    compressed_text(&format!("the file is {compression}-compressed"))
}

/// [`compression_of`] the file at `location`, from its first bytes.
pub async fn compression_of_file(
    store: &dyn ObjectStore,
    location: &Path,
    size: u64,
) -> Option<&'static str> {
    let head = store.get_range(location, 0..size.min(10)).await.ok()?;
    compression_of(&head)
}

/// How a CSV file is laid out, as DataFusion was told to read it.
#[derive(Debug, Clone, Copy)]
pub struct CsvLayout {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub terminator: Option<u8>,
    pub comment: Option<u8>,
}

/// Opens `location` for reading from the start, decompressed, as a blocking reader: call it
/// from a blocking thread.
pub async fn open(
    store: &dyn ObjectStore,
    location: &Path,
    compression: FileCompressionType,
) -> Result<Box<dyn Read + Send>> {
    let result = store.get(location).await?;
    // A local file is read as one: its stream comes in 8 KiB chunks, each a blocking task.
    #[cfg(not(target_arch = "wasm32"))]
    if let object_store::GetResultPayload::File(mut file, _) = result.payload {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(result.range.start))?;
        let reader = std::io::BufReader::with_capacity(1 << 20, file)
            .take(result.range.end - result.range.start);
        return Ok(compression.convert_read(reader)?);
    }
    let chunks = result.into_stream();
    let reader = StoreReader {
        chunks: futures::executor::block_on_stream(chunks.boxed()),
        current: Bytes::new(),
    };
    Ok(compression.convert_read(reader)?)
}

struct StoreReader {
    chunks: futures::executor::BlockingStream<BoxStream<'static, object_store::Result<Bytes>>>,
    current: Bytes,
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.next() {
                Some(chunk) => self.current = chunk.map_err(std::io::Error::other)?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// The line (1-based) on which the CSV record numbered `record` starts, counting from 0 with the
/// header, if any, as record 0: arrow's number in a value's parse error ("at line N") when the
/// file was read from its start.
pub fn csv_record_line(reader: impl Read, layout: &CsvLayout, record: u64) -> Option<u64> {
    let mut csv = csv_reader(reader, layout);
    let mut row = csv::ByteRecord::new();
    for _ in 0..=record {
        if !csv.read_byte_record(&mut row).ok()? {
            return None;
        }
    }
    row.position().map(|p| p.line())
}

/// Every record of a CSV file (the header too), as DataFusion was told to read it.
fn csv_reader<R: Read>(reader: R, layout: &CsvLayout) -> csv::Reader<R> {
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .delimiter(layout.delimiter)
        .quote(layout.quote)
        .escape(layout.escape)
        .comment(layout.comment);
    if let Some(terminator) = layout.terminator {
        builder.terminator(csv::Terminator::Any(terminator));
    }
    builder.from_reader(reader)
}

/// The line (1-based) of a text file, read as `format` reads it, on which the record whose
/// column `column` (of `schema`, the file's columns) holds the text `text` starts: the first
/// such record. `None` for other formats, or when no record holds it.
pub async fn line_of_text(
    store: &dyn ObjectStore,
    location: &Path,
    format: &dyn datafusion::datasource::file_format::FileFormat,
    schema: &datafusion::arrow::datatypes::Schema,
    column: &str,
    text: &str,
) -> Option<u64> {
    use datafusion::datasource::file_format::{csv::CsvFormat, json::JsonFormat};
    let format = format as &dyn std::any::Any;
    let text = text.to_string();
    if let Some(csv) = format.downcast_ref::<CsvFormat>() {
        let options = csv.options();
        let layout = CsvLayout {
            delimiter: options.delimiter,
            quote: options.quote,
            escape: options.escape,
            terminator: options.terminator,
            comment: options.comment,
        };
        let header = options.has_header.unwrap_or(true);
        let index = schema.index_of(column).ok()?;
        let reader = open(store, location, options.compression.into())
            .await
            .ok()?;
        return tokio::task::spawn_blocking(move || {
            let mut csv = csv_reader(reader, &layout);
            let mut row = csv::ByteRecord::new();
            let mut first = true;
            while csv.read_byte_record(&mut row).ok()? {
                let is_header = std::mem::take(&mut first) && header;
                if !is_header && row.get(index) == Some(text.as_bytes()) {
                    return row.position().map(|p| p.line());
                }
            }
            None
        })
        .await
        .ok()?;
    }
    if let Some(json) = format.downcast_ref::<JsonFormat>() {
        let reader = open(store, location, json.options().compression.into())
            .await
            .ok()?;
        let column = column.to_string();
        return tokio::task::spawn_blocking(move || {
            for (index, line) in lines(reader).enumerate() {
                let Ok(record) = serde_json::from_slice::<serde_json::Value>(&line.ok()?) else {
                    continue;
                };
                if record.get(&column).and_then(|v| v.as_str()) == Some(text.as_str()) {
                    return Some(index as u64 + 1);
                }
            }
            None
        })
        .await
        .ok()?;
    }
    None
}

/// Why an NDJSON file's records cannot be read.
#[derive(Debug, PartialEq)]
pub enum NotAnObject {
    /// The file is one JSON array (it starts with `[`).
    Array,
    /// The first line (1-based) that is not a JSON object, and what it is.
    Line(u64, String),
}

/// The first line that is not a JSON object, or that the file is one array.
pub fn first_line_not_a_json_object(reader: impl Read) -> Result<Option<NotAnObject>> {
    let mut lines = lines(reader).peekable();
    let first = lines.peek().map(|line| match line {
        Ok(line) => line.iter().copied().find(|b| !b.is_ascii_whitespace()),
        Err(_) => None,
    });
    if first == Some(Some(b'[')) {
        return Ok(Some(NotAnObject::Array));
    }
    let failing = first_line_failing(lines, |line| {
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(serde_json::Value::Null) => Err("null, not an object".to_string()),
            Ok(serde_json::Value::Array(_)) => Err("an array, not an object".to_string()),
            Ok(_) => Err("a single value, not an object".to_string()),
            Err(e) => {
                // serde counts lines within the one line it was given.
                let message = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&position).unwrap_or(&message);
                Err(format!(
                    "not valid JSON at column {}: {message}",
                    e.column()
                ))
            }
        }
    })?;
    Ok(failing.map(|(line, why)| NotAnObject::Line(line, why)))
}

/// The first line (1-based) that arrow's JSON decoder refuses as a record of `schema`, and its
/// error. Lines are decoded in blocks; a block that fails is decoded line by line.
pub fn first_undecodable_json_line(
    reader: impl Read,
    schema: &SchemaRef,
) -> Result<Option<(u64, String)>> {
    let decode = |lines: &[u8]| -> std::result::Result<(), String> {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let mut rest = lines;
        while !rest.is_empty() {
            let read = decoder.decode(rest).map_err(|e| e.to_string())?;
            if read == 0 {
                break;
            }
            rest = &rest[read..];
            decoder.flush().map_err(|e| e.to_string())?;
        }
        decoder.flush().map(|_| ()).map_err(|e| e.to_string())
    };
    first_line_failing_in_blocks(reader, decode)
}

/// Lines gathered into a block before it is tried.
const BLOCK_BYTES: usize = 1 << 20;

fn first_line_failing_in_blocks(
    reader: impl Read,
    check: impl Fn(&[u8]) -> std::result::Result<(), String>,
) -> Result<Option<(u64, String)>> {
    let mut block = Vec::new();
    let mut first_line = 1;
    let mut lines_in_block = 0;
    // The first failing line of a block that fails, numbered in the file.
    let try_block = |block: &mut Vec<u8>, first_line: u64| -> Result<Option<(u64, String)>> {
        if check(block).is_ok() {
            block.clear();
            return Ok(None);
        }
        let (line, error) = first_line_failing(lines(&block[..]), &check)?
            .ok_or_else(|| anyhow!("a block of lines failed but none of its lines alone"))?;
        Ok(Some((first_line + line - 1, error)))
    };
    for line in lines(reader) {
        block.extend_from_slice(&line?);
        block.push(b'\n');
        lines_in_block += 1;
        if block.len() >= BLOCK_BYTES {
            if let Some(found) = try_block(&mut block, first_line)? {
                return Ok(Some(found));
            }
            first_line += lines_in_block;
            lines_in_block = 0;
        }
    }
    try_block(&mut block, first_line)
}

fn first_line_failing(
    lines: impl Iterator<Item = Result<Vec<u8>>>,
    check: impl Fn(&[u8]) -> std::result::Result<(), String>,
) -> Result<Option<(u64, String)>> {
    for (index, line) in lines.enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(error) = check(&line) {
            return Ok(Some((index as u64 + 1, error)));
        }
    }
    Ok(None)
}

/// The lines of `reader`, without their line ends.
pub(crate) fn lines(reader: impl Read) -> impl Iterator<Item = Result<Vec<u8>>> {
    use std::io::BufRead;
    std::io::BufReader::with_capacity(1 << 20, reader)
        .split(b'\n')
        .map(|line| {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(line)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn compressions_are_told_by_their_first_bytes_and_text_is_not() {
        assert_eq!(compression_of(b"\x28\xb5\x2f\xfd\x24\x05"), Some("zstd"));
        assert_eq!(compression_of(b"BZh91AY&SY"), Some("bzip2"));
        assert_eq!(compression_of(b"\xfd7zXZ\x00\x00"), Some("xz"));
        assert_eq!(compression_of(b"\x1f\x8b\x08\x00"), Some("gzip"));
        for text in [
            &b"id,v\n1,a"[..],
            b"{\"id\":1}",
            b"\xef\xbb\xbfid,v",
            b"",
            b"B",
            b"BZhang,v\n1,a",
            b"BZh9",
        ] {
            assert_eq!(
                compression_of(text),
                None,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn a_csv_record_is_found_on_its_line_past_quoted_line_breaks() {
        let layout = CsvLayout {
            delimiter: b',',
            quote: b'"',
            escape: None,
            terminator: None,
            comment: None,
        };
        let file = "id,note\n1,\"two\nlines\"\n2,plain\n3,x\n";
        assert_eq!(csv_record_line(file.as_bytes(), &layout, 0), Some(1));
        assert_eq!(csv_record_line(file.as_bytes(), &layout, 2), Some(4));
        assert_eq!(csv_record_line(file.as_bytes(), &layout, 3), Some(5));
        assert_eq!(csv_record_line(file.as_bytes(), &layout, 4), None);
    }

    #[test]
    fn the_first_bad_json_line_is_found_in_any_block() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let mut file = String::new();
        for i in 0..200_000 {
            file.push_str(&format!("{{\"v\":{i}}}\n"));
            if i == 100_000 {
                file.push('\n');
            }
        }
        file.push_str("{\"v\":\"x\"}\n");
        let (line, error) = first_undecodable_json_line(file.as_bytes(), &schema)
            .unwrap()
            .unwrap();
        assert_eq!(line, 200_002, "{error}");
        assert!(
            error.contains("expected primitive") || error.contains("v"),
            "{error}"
        );
        let not_json = first_line_not_a_json_object("{\"v\":1}\r\n\n{\"v\":NaN}\n".as_bytes());
        assert!(
            matches!(not_json.unwrap(), Some(NotAnObject::Line(3, ref why)) if why.contains("not valid JSON")),
        );
        let null = first_line_not_a_json_object("{\"v\":1}\nnull\n".as_bytes()).unwrap();
        assert_eq!(
            null,
            Some(NotAnObject::Line(2, "null, not an object".into()))
        );
        let array = first_line_not_a_json_object(" [{\"v\":1},\n{\"v\":2}]".as_bytes()).unwrap();
        assert_eq!(array, Some(NotAnObject::Array));
        assert!(
            first_undecodable_json_line("{\"v\":1}\n".as_bytes(), &schema)
                .unwrap()
                .is_none()
        );
    }
}
