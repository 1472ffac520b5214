//! Checks of a table's files that DataFusion's readers do not make, run when the table is
//! registered, each file read at its ends only.
//!
//! Every CSV file of a table must have the table's header. DataFusion takes the column names
//! from the header of the first file it samples and then reads every file's columns by position:
//! a file whose header lists `id,w,v` had its `w` values read as `v` and its `v` as `w` (a false
//! divergence, or a false match where the other side had them swapped too), and a file written
//! before a column was added failed on "incorrect number of fields for line 1". So the headers
//! are read first, and a file whose header differs is an error naming it and both headers.
//!
//! Every Avro file must end with its sync marker. arrow-avro stops at the end of a file in the
//! middle of a block without an error: half of a file cut short by a failed upload read as its
//! first 25,023 rows of 50,000, a divergence blamed on the pipeline.

use anyhow::{Result, bail};
use bytes::Bytes;
use datafusion::arrow::datatypes::Schema;
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

/// Bytes read from the start of a file to find its header line; a longer header is read whole.
const FIRST_READ: u64 = 64 << 10;
/// Files whose headers are read at once (object stores answer each read in tens of ms).
const CONCURRENT_READS: usize = 32;

/// Fails when the header of one of `files` is not `schema`'s columns (partition columns aside)
/// in order. `shown` says where a file is, as a user would write it.
pub async fn check_same_header(
    store: &dyn ObjectStore,
    files: &[&ObjectMeta],
    schema: &Schema,
    partition_cols: &[String],
    delimiter: u8,
    shown: impl Fn(&ObjectMeta) -> String,
) -> Result<()> {
    if files.len() < 2 {
        return Ok(());
    }
    let expected: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| without_bom(f.name()).to_string())
        .filter(|name| !partition_cols.iter().any(|c| c == name))
        .collect();
    // Empty files have no header and no rows: nothing is misread.
    let reads: Vec<(usize, ObjectMeta)> = files
        .iter()
        .enumerate()
        .filter(|(_, file)| file.size > 0)
        .map(|(index, file)| (index, (*file).clone()))
        .collect();
    let shown = &shown;
    let headers: Vec<(usize, Vec<String>)> = futures::stream::iter(reads)
        .map(|(index, file)| async move {
            let header = header(store, &file, delimiter)
                .await
                .map_err(|e| anyhow::anyhow!("file {}: {e}", shown(&file)))?;
            Ok::<_, anyhow::Error>((index, header))
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let mut differing: Vec<&(usize, Vec<String>)> =
        headers.iter().filter(|(_, h)| h != &expected).collect();
    differing.sort_by_key(|(index, _)| *index);
    let Some((index, header)) = differing.first() else {
        return Ok(());
    };
    let like_table = headers
        .iter()
        .filter(|(_, h)| h == &expected)
        .map(|(i, _)| *i)
        .min()
        .map_or(String::new(), |i| format!(", as in {}", shown(files[i])));
    // A tab shown as one, in a one-line error.
    let separator = match delimiter {
        b'\t' => "\\t".to_string(),
        other => char::from(other).to_string(),
    };
    bail!(
        "file {}: its header ({}) is not the table's columns in order ({}{like_table}); CSV columns are read by position, so every file of a table needs the same header ({} of {} files differ)",
        shown(files[*index]),
        header.join(&separator),
        expected.join(&separator),
        differing.len(),
        files.len()
    )
}

/// The names in the first line of `file` (without a byte-order mark), as DataFusion reads them.
async fn header(store: &dyn ObjectStore, file: &ObjectMeta, delimiter: u8) -> Result<Vec<String>> {
    let mut end = FIRST_READ.min(file.size);
    loop {
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..end)),
            ..Default::default()
        };
        let bytes: Bytes = store
            .get_opts(&file.location, options)
            .await?
            .bytes()
            .await?;
        if let Some(compression) = super::locate::compression_of(&bytes) {
            bail!("{}", super::locate::compressed_bytes(compression));
        }
        let found = bytes.iter().position(|&b| b == b'\n');
        if found.is_some() || end >= file.size {
            let line = &bytes[..found.unwrap_or(bytes.len())];
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(delimiter)
                .from_reader(line);
            let mut record = csv::StringRecord::new();
            if !reader.read_record(&mut record)? {
                return Ok(Vec::new());
            }
            return Ok(record
                .iter()
                .map(|name| without_bom(name.trim_end_matches('\r')).to_string())
                .collect());
        }
        end = (end * 4).min(file.size);
    }
}

fn without_bom(name: &str) -> &str {
    name.strip_prefix('\u{feff}').unwrap_or(name)
}

/// Fails when a CSV table read with commas (no delimiter set) has one column whose name is
/// several names joined by another common delimiter (`id;amount`): a file of another dialect
/// (European spreadsheets write `;`, Hive and many exports a tab or `|`) read as one column per
/// line, which no key or query finds. Setting the delimiter, even to `,`, skips the check.
pub fn check_delimiter(schema: &Schema) -> Result<()> {
    let [field] = schema.fields().as_ref() else {
        return Ok(());
    };
    let name = without_bom(field.name());
    // Each delimiter: as said, as configured, as on the command line.
    for (other, said, configured, flag) in [
        (';', "';'", ";", "';'"),
        ('\t', "tab", "tab", "tab"),
        ('|', "'|'", "|", "'|'"),
    ] {
        let parts = name.split(other).filter(|p| !p.is_empty()).count();
        if parts > 1 {
            bail!(
                "its CSV header is one column, {name:?}, which reads as {parts} columns separated by {said}: set csv_delimiter = \"{configured}\" on the table (compare: --csv-delimiter NAME={flag})"
            );
        }
    }
    Ok(())
}

/// Fails when one of the Avro `files` does not end with the sync marker its header declares
/// (the 16 bytes after the header's metadata, repeated after every block): the file was cut
/// short. A file cut exactly after a block looks whole, to this check and to any reader.
pub async fn check_avro_complete(
    store: &dyn ObjectStore,
    files: &[&ObjectMeta],
    shown: impl Fn(&ObjectMeta) -> String,
) -> Result<()> {
    let reads: Vec<ObjectMeta> = files.iter().map(|file| (*file).clone()).collect();
    let cut: Vec<ObjectMeta> = futures::stream::iter(reads)
        .map(|file| async move {
            let whole = ends_with_header_sync(store, &file).await?;
            Ok::<_, anyhow::Error>((!whole).then_some(file))
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_filter_map(|file| futures::future::ready(Ok(file)))
        .try_collect()
        .await?;
    let Some(first) = cut.iter().min_by(|a, b| a.location.cmp(&b.location)) else {
        return Ok(());
    };
    bail!(
        "file {}: the Avro file is cut short (it does not end with its sync marker: an upload or a write that did not finish){}",
        shown(first),
        match cut.len() {
            1 => String::new(),
            n => format!("; {} of {} files are", n, files.len()),
        }
    )
}

async fn ends_with_header_sync(store: &dyn ObjectStore, file: &ObjectMeta) -> Result<bool> {
    const SYNC: u64 = 16;
    if file.size < 4 + SYNC {
        return Ok(false);
    }
    let read = |range: std::ops::Range<u64>| async move {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        Ok::<Bytes, anyhow::Error>(
            store
                .get_opts(&file.location, options)
                .await?
                .bytes()
                .await?,
        )
    };
    let tail = read(file.size - SYNC..file.size).await?;
    let head = read(0..FIRST_READ.min(file.size)).await?;
    match header_sync(&head) {
        Some(sync) => Ok(sync == &tail[..]),
        // Not an Avro header, or a schema longer than the bytes read: the reader judges.
        None => Ok(true),
    }
}

/// The sync marker of an Avro object container file: the 16 bytes after its header's magic and
/// metadata (a map of byte strings, in blocks of zigzag-varint counts).
fn header_sync(head: &[u8]) -> Option<&[u8]> {
    fn long(bytes: &[u8], at: &mut usize) -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
    let mut at = 4;
    if head.get(..4)? != b"Obj\x01" {
        return None;
    }
    loop {
        let count = long(head, &mut at)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            long(head, &mut at)?; // the block's size in bytes
        }
        for _ in 0..count.unsigned_abs() * 2 {
            let length = usize::try_from(long(head, &mut at)?).ok()?;
            at = at.checked_add(length)?;
        }
    }
    head.get(at..at + 16)
}
