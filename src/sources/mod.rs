//! Turns table locations into DataFusion tables: one `SessionContext`, two schemas, `batch` and
//! `stream`, each holding every logical table under the same name. The check's SQL then runs
//! unchanged on either side by switching the default schema (see `engine`).
//!
//! Sources are plain `ListingTable`s over `object_store`, so the same plans later serialize for a
//! distributed engine and every format DataFusion reads is available.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::FileMeta;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::avro::AvroFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore};

use crate::config::{Format, RawTable, Side, SourceSpec, StoreOptions, TableSpec};
use crate::error::clean_df_error;
use crate::redact::redact_url;

pub mod changelog;
#[cfg(feature = "databases")]
pub mod database;
#[cfg(feature = "delta")]
pub mod delta;
mod file_checks;
pub mod guard;
mod json_types;
mod latest;
mod locate;
pub(crate) use locate::line_of_text;
pub mod pinned;
pub mod store;

pub use store::{register_object_store, table_url};

/// The catalog name every table is registered under.
pub const CATALOG: &str = "datafusion";

/// What registration learned: which tables failed (a check using them fails, the others run) and
/// how many bytes each side's files hold (for the join choice and progress).
#[derive(Debug, Default)]
pub struct Catalog {
    failures: HashMap<(Side, String), String>,
    listed: HashMap<(Side, String), Listed>,
    /// Tables of one side only, for that side's views.
    raw: BTreeSet<(Side, String)>,
}

/// What listing a table's location found.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub files: u64,
    pub bytes: u64,
    /// The object store path prefix of the table's files (to tell which side a scanned file is).
    pub prefix: String,
}

impl Catalog {
    /// Records that a table could not be registered on a side (a view that does not plan).
    pub fn record_failure(&mut self, side: Side, table: &str, message: String) {
        self.failures.insert((side, table.to_string()), message);
    }

    /// The side a raw table (one side only) belongs to, if `table` is one.
    pub fn raw_side(&self, table: &str) -> Option<Side> {
        self.raw
            .iter()
            .find(|(_, name)| name == table)
            .map(|(side, _)| *side)
    }

    /// The registration error of a table, if it has one.
    pub fn failure(&self, side: Side, table: &str) -> Option<&str> {
        self.failures
            .get(&(side, table.to_string()))
            .map(String::as_str)
    }

    /// Total size of the listed files of these tables on one side.
    pub fn bytes_of<'a>(&self, side: Side, tables: impl IntoIterator<Item = &'a str>) -> u64 {
        self.sum_of(side, tables, |l| l.bytes)
    }

    /// Files listed for these tables on one side.
    pub fn files_of<'a>(&self, side: Side, tables: impl IntoIterator<Item = &'a str>) -> u64 {
        self.sum_of(side, tables, |l| l.files)
    }

    fn sum_of<'a>(
        &self,
        side: Side,
        tables: impl IntoIterator<Item = &'a str>,
        field: fn(&Listed) -> u64,
    ) -> u64 {
        tables
            .into_iter()
            .filter_map(|t| self.listed.get(&(side, t.to_string())))
            .map(field)
            .sum()
    }

    /// The side a file belongs to, by the longest table prefix that contains it.
    pub fn side_of(&self, location: &str) -> Option<Side> {
        self.listed
            .iter()
            .filter(|(_, l)| location.starts_with(&l.prefix))
            .max_by_key(|(_, l)| l.prefix.len())
            .map(|((side, _), _)| *side)
    }
}

/// Creates the `batch` and `stream` schemas and registers every table in both. A table that
/// cannot be registered is recorded, not fatal: only the checks that read it fail. `portable`
/// tables are only of kinds a plan sent to Ballista can carry.
pub async fn register_tables(
    ctx: &SessionContext,
    tables: &[TableSpec],
    raw_tables: &[RawTable],
    store: &StoreOptions,
    portable: bool,
) -> Result<Catalog> {
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| anyhow!("internal: default catalog missing"))?;
    for side in Side::BOTH {
        catalog.register_schema(side.name(), Arc::new(MemorySchemaProvider::new()))?;
    }
    let mut result = Catalog::default();
    let raw = raw_tables
        .iter()
        .map(|r| (r.side, r.name.as_str(), &r.source));
    let logical = tables.iter().flat_map(|table| {
        Side::BOTH
            .into_iter()
            .map(move |side| (side, table.name.as_str(), table.side(side)))
    });
    for (side, name, source) in raw.chain(logical) {
        // A view is planned by the engine once every table of its side is here.
        if source.view.is_some() {
            continue;
        }
        let registered = match &source.changelog {
            None => register_one(ctx, side, name, source, store, portable).await,
            Some(changelog) => {
                let changes = changelog::raw_name(name);
                match register_one(ctx, side, &changes, source, store, portable).await {
                    Ok(listed) => {
                        changelog::view(ctx, side, name, changelog)
                            .await
                            .and_then(|view| {
                                catalog
                                    .schema(side.name())
                                    .ok_or_else(|| {
                                        anyhow!("internal: schema {} missing", side.name())
                                    })?
                                    .register_table(name.to_string(), view)?;
                                Ok(listed)
                            })
                    }
                    Err(error) => Err(error),
                }
            }
        };
        match registered {
            Ok(listed) => {
                result.listed.insert((side, name.to_string()), listed);
            }
            Err(error) => {
                let message = format!(
                    "table '{name}' ({} side, {}): {error:#}",
                    side.name(),
                    redact_url(&source.url),
                );
                tracing::debug!("{message}");
                result.failures.insert((side, name.to_string()), message);
            }
        }
    }
    result.raw = raw_tables
        .iter()
        .map(|r| (r.side, r.name.clone()))
        .collect();
    Ok(result)
}

async fn register_one(
    ctx: &SessionContext,
    side: Side,
    name: &str,
    source: &SourceSpec,
    store: &StoreOptions,
    portable: bool,
) -> Result<Listed> {
    #[cfg(feature = "databases")]
    if database::is_database(&source.url) {
        let label = format!(
            "table '{name}' ({} side, {})",
            side.name(),
            redact_url(&source.url)
        );
        let provider = database::provider(&source.url, store, &label).await?;
        ctx.catalog(CATALOG)
            .and_then(|c| c.schema(side.name()))
            .ok_or_else(|| anyhow!("internal: schema {} missing", side.name()))?
            .register_table(name.to_string(), provider)?;
        // No files: a prefix no file location has, so scans are never attributed to it.
        return Ok(Listed {
            prefix: format!("\u{0}database:{name}"),
            ..Listed::default()
        });
    }
    let url = table_url(&source.url)?;
    register_object_store(ctx, &url, store)?;
    let schema_provider = ctx
        .catalog(CATALOG)
        .and_then(|c| c.schema(side.name()))
        .ok_or_else(|| anyhow!("internal: schema {} missing", side.name()))?;
    let is_delta = match source.format {
        Some(Format::Delta) => true,
        Some(_) => false,
        None => is_delta_location(ctx, &url).await,
    };
    if is_delta {
        return register_delta(ctx, &url, source, |provider| {
            schema_provider.register_table(name.to_string(), provider)?;
            Ok(())
        })
        .await;
    }
    if source.delta_version.is_some() || source.delta_as_of.is_some() {
        tracing::debug!(
            table = name,
            side = side.name(),
            "version/as_of apply to Delta tables only"
        );
    }
    let state = ctx.state();
    let store = ctx.runtime_env().object_store(&url)?;
    let files: Vec<_> = url
        .list_all_files(&state, store.as_ref(), "")
        .await
        .map_err(|e| anyhow!("cannot list files: {e}"))?
        .try_collect()
        .await
        .map_err(|e| anyhow!("cannot list files: {e}"))?;
    let (files, skipped): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|meta| is_data_file(&url, meta.location.as_ref()));
    if files.is_empty() {
        if let Some(deeper) = nested_data_file(&url, store.as_ref()).await {
            bail!(
                "no data files directly in it or in key=value partition directories; files sit in other subdirectories (e.g. {}), which are not read: point the table at the directory that holds them",
                file_location(url.object_store().as_str(), &deeper)
            );
        }
        bail!("no data files found (hidden files, _SUCCESS and the like are skipped)");
    }

    let mut by_format: BTreeMap<&str, (Format, BTreeSet<&str>)> = BTreeMap::new();
    let mut unknown = Vec::new();
    for meta in &files {
        match Format::from_file_name(meta.location.as_ref()) {
            Some((format, ext)) => {
                by_format
                    .entry(format.name())
                    .or_insert((format, BTreeSet::new()))
                    .1
                    .insert(ext);
            }
            None => unknown.push(file_location(url.object_store().as_str(), &meta.location)),
        }
    }
    let (format, extension) = match source.format {
        Some(format) => {
            // Read only the files whose extension matches the format when they have one, else all.
            let ext = by_format
                .get(format.name())
                .filter(|(_, exts)| exts.len() == 1)
                .and_then(|(_, exts)| exts.first().copied())
                .unwrap_or("");
            (format, ext.to_string())
        }
        None => {
            if by_format.len() > 1 {
                let names: Vec<&str> = by_format.keys().copied().collect();
                bail!(
                    "files of several formats ({}); set the format of this table explicitly",
                    names.join(", ")
                );
            }
            let Some((_, (format, exts))) = by_format.into_iter().next() else {
                if let Some((file, format, compression)) = unknown.iter().find_map(|file| {
                    compressed_name(file).map(|(format, compression)| (file, format, compression))
                }) {
                    bail!(
                        "{file}: {}",
                        locate::compressed_text(&format!(
                            "a {compression}-compressed {} file, by its name",
                            format.name()
                        ))
                    );
                }
                bail!(
                    "cannot tell the format from the file names (e.g. {}); set it explicitly",
                    unknown.first().map(String::as_str).unwrap_or("?")
                );
            };
            // .json next to .ndjson: read every file rather than half of them.
            let ext = if exts.len() == 1 {
                exts.first().copied().unwrap_or("")
            } else {
                ""
            };
            (format, ext.to_string())
        }
    };

    let partition_cols = match &source.partition_cols {
        Some(cols) => cols.clone(),
        None => infer_partition_cols(&url, files.iter().map(|m| m.location.as_ref()))?,
    };
    let bytes: u64 = files.iter().map(|m| m.size).sum();
    let prefix = url.prefix().as_ref().to_string();

    let mut sampled = if source.infer_all_records {
        usize::MAX
    } else {
        SAMPLED_RECORDS
    };
    let mut options = ListingOptions::new(file_format(format, source, sampled))
        .with_file_extension(extension.clone())
        .with_table_partition_cols(
            partition_cols
                .iter()
                .map(|c| (c.clone(), DataType::Utf8))
                .collect(),
        );
    let from_text = matches!(format, Format::Csv | Format::NdJson);
    // Skipped files the reader would read beside the data, listing the directory itself: a
    // macOS `._part-0.parquet`, a writer's hidden `.part-0.inprogress` when the files have no
    // extension. Then the table is the data files one by one. (Of a partitioned table, the
    // reader takes only files inside partition directories: a `_SUCCESS` at its root is not
    // read.)
    let in_partition =
        |f: &ObjectMeta| url.strip_prefix(&f.location).is_some_and(|s| s.count() > 1);
    let stray: Vec<&ObjectMeta> = skipped
        .iter()
        .filter(|f| f.location.as_ref().ends_with(&extension))
        .filter(|f| partition_cols.is_empty() || in_partition(f))
        .collect();
    let listing = Listing {
        url: &url,
        whole: stray.is_empty(),
    };
    let json = |sampled| (format == Format::NdJson).then_some(sampled);
    let mut schema = infer_schema(
        &state,
        &options,
        listing,
        &files,
        &extension,
        from_text,
        json(sampled),
    )
    .await?;
    if contains_null_type(&schema) {
        // A field NULL in every sampled record (a sparse field of a sink's JSON) is of type
        // Null, and its first value further on would fail the scan: read every record instead.
        sampled = usize::MAX;
        options.format = file_format(format, source, sampled);
        schema = infer_schema(
            &state,
            &options,
            listing,
            &files,
            &extension,
            from_text,
            json(sampled),
        )
        .await?;
    }
    if format == Format::NdJson {
        let sampled_files: Vec<&ObjectMeta> = files
            .iter()
            .filter(|f| f.location.as_ref().ends_with(&extension))
            .collect();
        let store_url = url.object_store();
        let shown = |f: &ObjectMeta| file_location(store_url.as_str(), &f.location);
        let sample = json_types::Sample::read(
            store.as_ref(),
            &sampled_files,
            &schema,
            sampled,
            false,
            shown,
        )
        .await?;
        schema = sample.resolve(schema)?;
    }
    // A sink that partitions by a field of its records (Kafka Connect's field partitioner) may
    // keep the field in the files too: the files' own column is the row's value, the directory
    // only where the row was put. As both, the table had the column twice and every query failed.
    if let Some(both) = partition_cols
        .iter()
        .find(|c| schema.field_with_name(c).is_ok())
    {
        if source.partition_cols.is_some() {
            bail!(
                "partition column '{both}' is also a column of the files: leave it out of partition_cols, and the files' own column is read"
            );
        }
        tracing::debug!(
            table = name,
            column = both.as_str(),
            "a partition directory's column is in the files too: the files' column is read"
        );
        options
            .table_partition_cols
            .retain(|(c, _)| schema.field_with_name(c).is_err());
    }
    if format == Format::Parquet && has_float(schema.fields()) {
        let format = nan_safe_parquet();
        // A plan for Ballista is serialised, which knows DataFusion's formats only; the
        // statistics are kept from the columns there by `engine::ballista` instead.
        options.format = match portable {
            true => Arc::new(format.0),
            false => Arc::new(format),
        };
    }
    // The files the table reads, for the checks DataFusion's readers do not make.
    let read: Vec<&ObjectMeta> = files
        .iter()
        .filter(|f| f.location.as_ref().ends_with(&extension))
        .collect();
    let store_url = url.object_store();
    let shown = |file: &ObjectMeta| file_location(store_url.as_str(), &file.location);
    if format == Format::Avro {
        file_checks::check_avro_complete(store.as_ref(), &read, shown).await?;
    }
    if format == Format::Csv && source.csv_header {
        if source.csv_delimiter.is_none() {
            file_checks::check_delimiter(&schema)?;
        }
        file_checks::check_same_header(
            store.as_ref(),
            &read,
            &schema,
            &partition_cols,
            source.csv_delimiter.unwrap_or(b','),
            shown,
        )
        .await?;
        warn_if_header_looks_like_data(name, side, &schema, files.first());
    }
    let config = match stray.first() {
        None => ListingTableConfig::new(url),
        Some(file) if !options.table_partition_cols.is_empty() => bail!(
            "{}: a hidden file (its name starts with '.' or '_') named like the data files, beside them in a partitioned table, where it cannot be left out: point the table at the partitions without it",
            shown(file)
        ),
        Some(_) => {
            tracing::debug!(
                table = name,
                skipped = stray.len(),
                "hidden files named like data files: the table lists its files one by one"
            );
            let paths = read
                .iter()
                .map(|file| file_url(&store_url, &file.location))
                .collect::<Result<Vec<_>>>()?;
            ListingTableConfig::new_with_multi_paths(paths)
        }
    }
    .with_listing_options(options)
    .with_schema(schema);
    let table = ListingTable::try_new(config)?;
    schema_provider.register_table(name.to_string(), Arc::new(table))?;
    tracing::debug!(
        table = name,
        side = side.name(),
        files = files.len(),
        bytes,
        "registered"
    );
    Ok(Listed {
        files: files.len() as u64,
        bytes,
        prefix,
    })
}

/// A file as a user would write it: a local path, else the store's URL and the path in it.
pub(crate) fn file_location(store_url: &str, path: &object_store::path::Path) -> String {
    match store_url.trim_end_matches('/') {
        "file:" | "file://" | "" => format!("/{path}"),
        base => format!("{base}/{path}"),
    }
}

/// What is wrong with an NDJSON file whose schema could not be read, and on which line. Arrow's
/// schema inference parses a line at a time, so serde's errors say "line 1" whatever the line;
/// a line that is not an object (a `null`) is named by what it holds; and a file that is one
/// JSON array was dumped whole into the message ("found Array [Object {…}, …]").
async fn json_error_located(store: &dyn ObjectStore, file: &ObjectMeta, message: String) -> String {
    if !message.starts_with("Json error") {
        return message;
    }
    let reader = match locate::open(store, &file.location, FileCompressionType::UNCOMPRESSED).await
    {
        Ok(reader) => reader,
        Err(e) => {
            tracing::debug!("locating the bad line of {}: {e}", file.location);
            return message;
        }
    };
    match tokio::task::spawn_blocking(move || locate::first_line_not_a_json_object(reader)).await {
        Ok(Ok(Some(locate::NotAnObject::Array))) => {
            "Json error: the file is one JSON array; JSON files are read as newline-delimited JSON, one object per line".to_string()
        }
        Ok(Ok(Some(locate::NotAnObject::Line(line, why)))) => {
            format!("Json error at line {line}: {why}")
        }
        _ => message,
    }
}

/// A text format and a compression a file's name says (`x.csv.gz`, `part-0.json.zst`).
fn compressed_name(name: &str) -> Option<(Format, &'static str)> {
    const COMPRESSIONS: [(&str, &str); 7] = [
        (".gz", "gzip"),
        (".gzip", "gzip"),
        (".zst", "zstd"),
        (".bz2", "bzip2"),
        (".xz", "xz"),
        (".lz4", "lz4"),
        (".snappy", "snappy"),
    ];
    let lower = name.to_ascii_lowercase();
    let (stem, compression) = COMPRESSIONS
        .iter()
        .find_map(|(ext, compression)| Some((lower.strip_suffix(ext)?, *compression)))?;
    let (format, _) = Format::from_file_name(stem)?;
    matches!(format, Format::Csv | Format::NdJson).then_some((format, compression))
}

/// How a table's files are found: by listing its location (`whole`), or one by one (when the
/// listing would take in files dualrun skips).
#[derive(Clone, Copy)]
struct Listing<'a> {
    url: &'a ListingTableUrl,
    whole: bool,
}

/// The table's schema from its files. DataFusion merges the files' schemas only when every
/// column has one type in all of them; a stream sink's files often do not: a job upgrade writes
/// `v` as Int64 where older files have Int32, timestamps in µs where older ones are in ms. Then
/// the files' schemas are read one by one and merged by lossless widening (see [`widen`]); a
/// file whose schema cannot be read, or two files whose types do not widen to one, is an error
/// naming the file(s). `from_text`: the types were inferred from text (CSV, NDJSON), where a
/// column of integers in one file and of fractions in another is Float64, as arrow infers it
/// within one file: a JSON writer prints an integral double as `12`, so an hour whose amounts
/// all happen to be integral reads as Int64.
async fn infer_schema(
    state: &SessionState,
    options: &ListingOptions,
    listing: Listing<'_>,
    files: &[ObjectMeta],
    extension: &str,
    from_text: bool,
    json_sampled: Option<usize>,
) -> Result<SchemaRef> {
    let url = listing.url;
    let error = match listing.whole {
        true => match options.infer_schema(state, url).await {
            Ok(schema) => return Ok(schema),
            Err(error) => Some(error),
        },
        false => None,
    };
    let store = state.runtime_env().object_store(url)?;
    let store_url = url.object_store();
    // Each column, the file its type came from, and whether every file so far held it as
    // numbers written as text (NDJSON; with whether any has a fraction).
    let mut merged: Vec<(Field, String, Option<bool>)> = Vec::new();
    let mut files: Vec<&ObjectMeta> = files
        .iter()
        .filter(|f| f.location.as_ref().ends_with(extension))
        .collect();
    files.sort_by(|a, b| a.location.cmp(&b.location));
    for file in files {
        let shown = file_location(store_url.as_str(), &file.location);
        let schema = options
            .format
            .infer_schema(state, &store, std::slice::from_ref(file))
            .await;
        let schema = match schema {
            Ok(schema) => schema,
            Err(e) => {
                // DataFusion calls a damaged Arrow IPC file an internal error and asks for a bug
                // report; it is the file's fault, and the file is named.
                let message = match e {
                    datafusion::error::DataFusionError::Internal(message) => message,
                    other => clean_df_error(&other.to_string()),
                };
                let message =
                    match locate::compression_of_file(store.as_ref(), &file.location, file.size)
                        .await
                    {
                        Some(compression) => locate::compressed_bytes(compression),
                        None => json_error_located(store.as_ref(), file, message).await,
                    };
                bail!("cannot read the schema of {shown}: {message}");
            }
        };
        let (schema, sample) = match json_sampled {
            Some(records) => {
                let sample = json_types::Sample::read(
                    store.as_ref(),
                    &[file],
                    &schema,
                    records,
                    true,
                    |_| shown.clone(),
                )
                .await?;
                (sample.resolve(schema)?, Some(sample))
            }
            None => (schema, None),
        };
        let numeric_text = |name: &str| sample.as_ref().and_then(|s| s.numeric_text(name));
        for field in schema.fields() {
            match merged.iter_mut().find(|(f, _, _)| f.name() == field.name()) {
                None => merged.push((
                    field.as_ref().clone(),
                    shown.clone(),
                    numeric_text(field.name()),
                )),
                Some((known, type_from, known_numeric_text)) => {
                    // Numbers written as text in some files and as numbers in others (a
                    // producer upgrade): numbers, as within one file.
                    let as_number = |fraction: bool, number: &DataType| match number {
                        DataType::Int64 if !fraction => Some(DataType::Int64),
                        DataType::Int64 | DataType::Float64 => Some(DataType::Float64),
                        _ => None,
                    };
                    let numeric = match (*known_numeric_text, numeric_text(field.name())) {
                        (Some(a), Some(b)) => Some((known.data_type().clone(), Some(a || b))),
                        (Some(a), None) => as_number(a, field.data_type()).map(|t| (t, None)),
                        (None, Some(b)) => as_number(b, known.data_type()).map(|t| (t, None)),
                        (None, None) => None,
                    };
                    if let Some((data_type, still_text)) = numeric {
                        if &data_type != known.data_type() {
                            *type_from = shown.clone();
                        }
                        let nullable = known.is_nullable() || field.is_nullable();
                        *known = known
                            .clone()
                            .with_data_type(data_type)
                            .with_nullable(nullable);
                        *known_numeric_text = still_text;
                        continue;
                    }
                    *known_numeric_text = None;
                    // Arrow's own merge where the types are not plain ones that widen (a struct
                    // that gained a field in later files, as DataFusion's merge allows).
                    let merged_by_arrow = || {
                        let mut merged = known.clone();
                        merged
                            .try_merge(field)
                            .ok()
                            .map(|()| merged.data_type().clone())
                    };
                    let Some(wider) = widen(known.data_type(), field.data_type())
                        .or_else(|| {
                            from_text
                                .then(|| inferred_number(known.data_type(), field.data_type()))
                                .flatten()
                        })
                        .or_else(merged_by_arrow)
                    else {
                        bail!(
                            "column '{}' is {} in {type_from} but {} in {shown}; the files of one table must agree on its type or widen it without loss (Int32 to Int64, ms to µs, …)",
                            field.name(),
                            known.data_type(),
                            field.data_type()
                        );
                    };
                    if &wider != known.data_type() {
                        // The file to name if a later file disagrees: where the type came from.
                        *type_from = shown.clone();
                    }
                    let nullable = known.is_nullable() || field.is_nullable();
                    *known = known.clone().with_data_type(wider).with_nullable(nullable);
                }
            }
        }
    }
    if merged.is_empty() {
        bail!(
            "cannot read the schema of the files: {}",
            error.map_or("no columns".to_string(), |e| clean_df_error(&e.to_string()))
        );
    }
    Ok(Arc::new(Schema::new(
        merged.into_iter().map(|(f, _, _)| f).collect::<Vec<_>>(),
    )))
}

/// Integers in one file and fractions in another, both inferred from text: Float64.
fn inferred_number(a: &DataType, b: &DataType) -> Option<DataType> {
    match (a, b) {
        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => {
            Some(DataType::Float64)
        }
        _ => None,
    }
}

/// Whether a timestamp's zone is UTC under one of its spellings: writers say "UTC", "+00:00"
/// (arrow-avro), "Etc/UTC" or "Z" for the same instants.
pub fn is_utc(zone: &Option<Arc<str>>) -> bool {
    zone.as_deref().is_some_and(|z| {
        ["UTC", "Etc/UTC", "Z", "+00:00", "+0000", "+00"]
            .iter()
            .any(|utc| z.eq_ignore_ascii_case(utc))
    })
}

/// The type both `a` and `b` convert to without losing a value, if any: wider integers of the
/// same signedness (or signed from narrower unsigned), wider floats, decimals with the larger
/// scale and integer part, timestamps of one time zone at the finer unit, and strings or binaries
/// of any layout. Integers and floats do not mix: a double holds no Int64 above 2^53 exactly.
fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    use datafusion::arrow::datatypes::TimeUnit;
    if a == b {
        return Some(a.clone());
    }
    let int_rank = |t: &DataType| match t {
        Int8 => Some((true, 1)),
        Int16 => Some((true, 2)),
        Int32 => Some((true, 4)),
        Int64 => Some((true, 8)),
        UInt8 => Some((false, 1)),
        UInt16 => Some((false, 2)),
        UInt32 => Some((false, 4)),
        UInt64 => Some((false, 8)),
        _ => None,
    };
    let unit_rank = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let bytes = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    match (a, b) {
        (Null, other) | (other, Null) => Some(other.clone()),
        _ if int_rank(a).is_some() && int_rank(b).is_some() => {
            let ((signed_a, width_a), (signed_b, width_b)) = (int_rank(a)?, int_rank(b)?);
            let (wide, signed, width, narrow_signed, narrow_width) = if width_a >= width_b {
                (a, signed_a, width_a, signed_b, width_b)
            } else {
                (b, signed_b, width_b, signed_a, width_a)
            };
            // A signed type holds every value of a strictly narrower unsigned one.
            (signed == narrow_signed || (signed && !narrow_signed && width > narrow_width))
                .then(|| wide.clone())
        }
        (Float16 | Float32 | Float64, Float16 | Float32 | Float64) => Some(
            [Float16, Float32, Float64]
                .into_iter()
                .rfind(|t| t == a || t == b)?,
        ),
        (Decimal128(pa, sa), Decimal128(pb, sb)) => {
            let scale = (*sa).max(*sb);
            let whole = (*pa as i16 - *sa as i16).max(*pb as i16 - *sb as i16);
            let precision = u8::try_from(whole + scale as i16).ok()?;
            if precision <= 38 {
                Some(Decimal128(precision, scale))
            } else if precision <= 76 {
                Some(Decimal256(precision, scale))
            } else {
                None
            }
        }
        (Timestamp(ua, za), Timestamp(ub, zb)) if za == zb || (is_utc(za) && is_utc(zb)) => {
            Some(Timestamp(
                if unit_rank(ua) >= unit_rank(ub) {
                    *ua
                } else {
                    *ub
                },
                za.clone(),
            ))
        }
        _ if text(a) && text(b) => Some(if a == &Utf8View || b == &Utf8View {
            Utf8View
        } else {
            LargeUtf8
        }),
        _ if bytes(a) && bytes(b) => Some(if a == &BinaryView || b == &BinaryView {
            BinaryView
        } else {
            LargeBinary
        }),
        _ => None,
    }
}

#[cfg(feature = "delta")]
async fn is_delta_location(ctx: &SessionContext, url: &ListingTableUrl) -> bool {
    crate::sources::delta::is_delta(ctx, url).await
}

#[cfg(not(feature = "delta"))]
async fn is_delta_location(_ctx: &SessionContext, _url: &ListingTableUrl) -> bool {
    false
}

#[cfg(feature = "delta")]
async fn register_delta(
    ctx: &SessionContext,
    url: &ListingTableUrl,
    source: &SourceSpec,
    register: impl FnOnce(Arc<dyn datafusion::catalog::TableProvider>) -> Result<()>,
) -> Result<Listed> {
    crate::sources::delta::register(ctx, url, source, register).await
}

#[cfg(not(feature = "delta"))]
async fn register_delta(
    _ctx: &SessionContext,
    _url: &ListingTableUrl,
    _source: &SourceSpec,
    _register: impl FnOnce(Arc<dyn datafusion::catalog::TableProvider>) -> Result<()>,
) -> Result<Listed> {
    bail!("Delta tables need dualrun built with the `delta` feature (on by default)")
}

/// A CSV read with a header whose column names are numbers, dates or booleans, over columns of
/// that type, most likely has no header: its first row of data became the column names and is
/// lost from the comparison. Warns naming the file and the option that fixes it.
fn warn_if_header_looks_like_data(
    table: &str,
    side: Side,
    schema: &datafusion::arrow::datatypes::Schema,
    file: Option<&object_store::ObjectMeta>,
) {
    let data_like: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| {
            let name = f.name().trim();
            let typed = f.data_type().is_numeric()
                || f.data_type().is_temporal()
                || *f.data_type() == DataType::Boolean;
            let looks_like_value = name.parse::<f64>().is_ok()
                || chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
                || name.eq_ignore_ascii_case("true")
                || name.eq_ignore_ascii_case("false");
            typed && looks_like_value
        })
        .map(|f| f.name().as_str())
        .collect();
    if data_like.is_empty() {
        return;
    }
    eprintln!(
        "dualrun: warning: table '{table}' ({} side): the header of {} looks like data (column names {}); if the CSV files have no header row, set csv_header = false (compare: --csv-header {}.{table}=false), or the first row is not compared",
        side.name(),
        file.map(|f| f.location.to_string())
            .unwrap_or_else(|| "its CSV files".to_string()),
        data_like.join(", "),
        side.name()
    );
}

/// Parquet for tables with float columns: no pruning by the files' statistics, and no min or
/// max of a float column in the statistics DataFusion plans with. Parquet leaves NaN out of a
/// float column's min and max, while DataFusion orders NaN above every number: a row group of
/// NaN and 1.0 says min = max = 1.0, and DataFusion read it as 1.0 twice (a column whose min
/// equals its max is taken for that constant), answered `max(x)` as 1.0, and skipped it for
/// `WHERE x > 5`. The row counts stay: the join is planned by them.
fn nan_safe_parquet() -> NanSafeParquet {
    let mut options = TableParquetOptions::default();
    options.global.pruning = false;
    options.global.enable_page_index = false;
    options.global.bloom_filter_on_read = false;
    NanSafeParquet(ParquetFormat::default().with_options(options))
}

#[derive(Debug)]
struct NanSafeParquet(ParquetFormat);

impl NanSafeParquet {
    fn without_float_bounds(mut statistics: Statistics, schema: &SchemaRef) -> Statistics {
        for (column, field) in statistics.column_statistics.iter_mut().zip(schema.fields()) {
            if data_type_has_float(field.data_type()) {
                column.min_value = Precision::Absent;
                column.max_value = Precision::Absent;
            }
        }
        statistics
    }
}

#[async_trait::async_trait]
impl FileFormat for NanSafeParquet {
    fn get_ext(&self) -> String {
        self.0.get_ext()
    }

    fn get_ext_with_compression(
        &self,
        compression: &FileCompressionType,
    ) -> datafusion::error::Result<String> {
        self.0.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.0.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> datafusion::error::Result<SchemaRef> {
        self.0.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> datafusion::error::Result<Statistics> {
        let statistics = self
            .0
            .infer_stats(state, store, table_schema.clone(), object)
            .await?;
        Ok(Self::without_float_bounds(statistics, &table_schema))
    }

    async fn infer_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> datafusion::error::Result<Option<LexOrdering>> {
        self.0
            .infer_ordering(state, store, table_schema, object)
            .await
    }

    async fn infer_stats_and_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> datafusion::error::Result<FileMeta> {
        let mut meta = self
            .0
            .infer_stats_and_ordering(state, store, table_schema.clone(), object)
            .await?;
        meta.statistics = Self::without_float_bounds(meta.statistics, &table_schema);
        Ok(meta)
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.0.create_physical_plan(state, conf).await
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.0.file_source(table_schema)
    }
}

/// Records of a CSV or NDJSON table its schema is first inferred from (DataFusion's default).
const SAMPLED_RECORDS: usize = 1000;

/// Whether a column, or a field nested in one, was never seen with a value (text formats).
fn contains_null_type(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| contains(f.data_type(), &|t| t == &DataType::Null))
}

/// Whether any column, or any field nested in one, is a float.
pub(crate) fn has_float(fields: &Fields) -> bool {
    fields
        .iter()
        .any(|field| data_type_has_float(field.data_type()))
}

pub(crate) fn data_type_has_float(data_type: &DataType) -> bool {
    contains(data_type, &|t| {
        matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
    })
}

/// Whether `data_type`, or a type nested in it, is `wanted`.
fn contains(data_type: &DataType, wanted: &dyn Fn(&DataType) -> bool) -> bool {
    wanted(data_type)
        || match data_type {
            DataType::List(field)
            | DataType::LargeList(field)
            | DataType::ListView(field)
            | DataType::LargeListView(field)
            | DataType::FixedSizeList(field, _)
            | DataType::Map(field, _) => contains(field.data_type(), wanted),
            DataType::Struct(fields) => fields.iter().any(|f| contains(f.data_type(), wanted)),
            DataType::Union(fields, _) => {
                fields.iter().any(|(_, f)| contains(f.data_type(), wanted))
            }
            DataType::Dictionary(_, value) => contains(value, wanted),
            DataType::RunEndEncoded(_, value) => contains(value.data_type(), wanted),
            _ => false,
        }
}

/// The format of `format` files; text formats infer their schema from `sampled` records (at
/// most), as DataFusion does from 1,000 by default.
fn file_format(format: Format, source: &SourceSpec, sampled: usize) -> Arc<dyn FileFormat> {
    match format {
        Format::Parquet => Arc::new(ParquetFormat::default()),
        Format::Csv => Arc::new(
            CsvFormat::default()
                .with_has_header(source.csv_header)
                .with_delimiter(source.csv_delimiter.unwrap_or(b','))
                .with_schema_infer_max_rec(sampled),
        ),
        Format::NdJson => Arc::new(JsonFormat::default().with_schema_infer_max_rec(sampled)),
        Format::Avro => Arc::new(AvroFormat),
        Format::Arrow => Arc::new(ArrowFormat),
        Format::Delta => unreachable!("Delta tables are registered by the delta module"),
    }
}

/// Skips what pipelines leave beside their data: `_SUCCESS`, `_temporary/`, `.crc`, `.inprogress`
/// and other hidden files. `key=value` directories are partitions, not hidden.
fn is_data_file(url: &ListingTableUrl, location: &str) -> bool {
    let path = object_store::path::Path::from(location);
    let Some(segments) = url.strip_prefix(&path) else {
        return true;
    };
    let segments: Vec<&str> = segments.collect();
    let file_name = path.filename().unwrap_or("");
    let hidden = |s: &str| s.starts_with('_') || s.starts_with('.');
    !segments.iter().any(|s| hidden(s) && !s.contains('='))
        && !hidden(file_name)
        && !file_name.ends_with(".crc")
        && !file_name.contains(".inprogress")
}

/// A data file below the table's location in a directory that is neither a partition nor
/// hidden (Firehose's `2026/12/01/10/`, Flink's `2026-12-01--10/`): the reader does not go
/// there, so a table of only such files is empty. Asked on the error path only.
async fn nested_data_file(
    url: &ListingTableUrl,
    store: &dyn ObjectStore,
) -> Option<object_store::path::Path> {
    let mut listed = store.list(Some(url.prefix()));
    while let Some(Ok(meta)) = futures::StreamExt::next(&mut listed).await {
        // Any name: Flink's part files have no extension unless configured.
        if is_data_file(url, meta.location.as_ref()) {
            return Some(meta.location);
        }
    }
    None
}

/// One file of a table as a location of its own.
fn file_url(
    store: &datafusion::execution::object_store::ObjectStoreUrl,
    location: &object_store::path::Path,
) -> Result<ListingTableUrl> {
    let mut url: url::Url = AsRef::<url::Url>::as_ref(store).clone();
    // The URL's path is percent-decoded back into the location: a name's own '%' (a file
    // called `a%20b.parquet`) must survive that.
    url.set_path(&location.as_ref().replace('%', "%25"));
    let file = ListingTableUrl::try_new(url, None)
        .map_err(|e| anyhow!("bad file location {location}: {e}"))?;
    // A location that came back different would be a file silently not read.
    if file.prefix() != location {
        bail!(
            "cannot name the file {location} on its own (it reads back as {})",
            file.prefix()
        );
    }
    Ok(file)
}

/// Hive-style `key=value/` directories between the table root and its files become columns.
/// Every file must sit at the same partition depth with the same keys.
fn infer_partition_cols<'a>(
    url: &ListingTableUrl,
    locations: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>> {
    let mut found: Option<Vec<String>> = None;
    for location in locations {
        let path = object_store::path::Path::from(location);
        let Some(segments) = url.strip_prefix(&path) else {
            continue;
        };
        let segments: Vec<&str> = segments.collect();
        let dirs = &segments[..segments.len().saturating_sub(1)];
        let keys: Vec<String> = dirs
            .iter()
            .filter_map(|s| s.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        match &found {
            None => found = Some(keys),
            Some(previous) if *previous != keys => bail!(
                "files sit in different partition layouts ({} vs {}); set partition_cols explicitly",
                describe_keys(previous),
                describe_keys(&keys)
            ),
            Some(_) => {}
        }
    }
    Ok(found.unwrap_or_default())
}

fn describe_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        "no partitions".to_string()
    } else {
        keys.join("/")
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType::*, TimeUnit};

    use super::widen;

    #[test]
    fn types_widen_only_without_loss() {
        let utc = || Some("UTC".into());
        let cases = [
            (Int32, Int64, Some(Int64)),
            (Int8, UInt8, None),
            (UInt32, Int64, Some(Int64)),
            (UInt64, Int64, None),
            (Int32, UInt32, None),
            (Int64, Float64, None),
            (Float32, Float64, Some(Float64)),
            (Null, Utf8, Some(Utf8)),
            (
                Decimal128(10, 2),
                Decimal128(18, 4),
                Some(Decimal128(18, 4)),
            ),
            (Decimal128(12, 2), Decimal128(6, 4), Some(Decimal128(14, 4))),
            (
                Decimal128(38, 0),
                Decimal128(38, 10),
                Some(Decimal256(48, 10)),
            ),
            (
                Timestamp(TimeUnit::Millisecond, utc()),
                Timestamp(TimeUnit::Microsecond, utc()),
                Some(Timestamp(TimeUnit::Microsecond, utc())),
            ),
            (
                Timestamp(TimeUnit::Millisecond, utc()),
                Timestamp(TimeUnit::Millisecond, None),
                None,
            ),
            (Utf8, LargeUtf8, Some(LargeUtf8)),
            (Utf8View, LargeUtf8, Some(Utf8View)),
            (Utf8, Binary, None),
        ];
        for (a, b, expected) in cases {
            assert_eq!(widen(&a, &b), expected, "{a} and {b}");
            assert_eq!(widen(&b, &a), expected, "{b} and {a}");
        }
    }
}
