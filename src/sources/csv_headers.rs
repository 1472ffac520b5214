//! Every CSV file of a table must have the table's header. DataFusion takes the column names
//! from the header of the first file it samples and then reads every file's columns by position:
//! a file whose header lists `id,w,v` had its `w` values read as `v` and its `v` as `w` (a false
//! divergence, or a false match where the other side had them swapped too), and a file written
//! before a column was added failed on "incorrect number of fields for line 1". So the headers
//! are read first, and a file whose header differs is an error naming it and both headers.

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
    let headers: Vec<(usize, Vec<String>)> =
        futures::stream::iter(reads)
            .map(|(index, file)| async move {
                Ok::<_, anyhow::Error>((index, header(store, &file).await?))
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
    bail!(
        "file {}: its header ({}) is not the table's columns in order ({}{like_table}); CSV columns are read by position, so every file of a table needs the same header ({} of {} files differ)",
        shown(files[*index]),
        header.join(","),
        expected.join(","),
        differing.len(),
        files.len()
    )
}

/// The names in the first line of `file` (without a byte-order mark), as DataFusion reads them.
async fn header(store: &dyn ObjectStore, file: &ObjectMeta) -> Result<Vec<String>> {
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
        let found = bytes.iter().position(|&b| b == b'\n');
        if found.is_some() || end >= file.size {
            let line = &bytes[..found.unwrap_or(bytes.len())];
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
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
