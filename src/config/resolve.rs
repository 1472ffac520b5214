//! The one resolver: a config file (as TOML, or as `compare` builds it from its flags) plus the
//! flags that override it → a [`Plan`]. Everything a user can get wrong is refused here, with
//! the key or flag named, before any data is read.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::file::*;
use super::plan::*;
use super::values::*;

impl ChangelogConfig {
    fn resolve(&self, what: &str, params: &BTreeMap<String, String>) -> Result<ChangelogSpec> {
        if self.key.is_empty() {
            bail!("{what}: key is empty: name the columns that identify a row");
        }
        let order_by = if self.order_by.is_empty() && self.shape == ChangelogShape::Debezium {
            vec!["__source_ts_ms".to_string()]
        } else {
            self.order_by.clone()
        };
        if order_by.is_empty() {
            bail!("{what}: order_by is empty: name the columns that order the versions of a key");
        }
        if self.deleted.is_some() && self.shape != ChangelogShape::Upsert {
            bail!("{what}: deleted applies to shape = \"upsert\" only");
        }
        if self.op.is_some() && self.shape != ChangelogShape::Flink {
            bail!("{what}: op applies to shape = \"flink\" only");
        }
        let as_of = match self.as_of.as_deref() {
            Some("none") => None,
            Some(text) => Some(substitute_params(text, params)),
            None => params
                .get("run_date")
                .map(|date| format!("CAST('{date}' AS TIMESTAMP) + INTERVAL '1 day'")),
        };
        Ok(ChangelogSpec {
            shape: self.shape,
            key: self.key.clone(),
            as_of_column: self
                .as_of_column
                .clone()
                .unwrap_or_else(|| order_by[0].clone()),
            order_by,
            as_of,
            deleted: self.deleted.clone(),
            op: self.op.clone().unwrap_or_else(|| "op".to_string()),
        })
    }
}

fn check_control(control: u32, what: &str) -> Result<u32> {
    if control > MAX_CONTROL_RUNS {
        bail!("{what} = {control}: at most {MAX_CONTROL_RUNS} control runs");
    }
    Ok(control)
}

impl MetricsSpec {
    /// The config's [metrics], with the command-line flags on top.
    pub fn resolve(
        config: &MetricsConfig,
        textfile_flag: Option<&Path>,
        pushgateway_flag: Option<&str>,
    ) -> Result<MetricsSpec> {
        let timeout = config
            .timeout
            .map_or(Duration::from_secs(10), |HumanDuration(d)| d);
        let pushgateway = match pushgateway_flag.or(config.pushgateway.as_deref()) {
            Some(url) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    anyhow!("pushgateway URL '{}': {e}", crate::redact::redact_url(url))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!(
                        "pushgateway URL '{}' must be http:// or https://",
                        crate::redact::redact_url(url)
                    );
                }
                for name in config.grouping.keys() {
                    if name == "job" || name == "check" || !is_label_name(name) {
                        bail!(
                            "[metrics] grouping label '{name}' is not allowed (a Prometheus label name other than job and check)"
                        );
                    }
                }
                Some(PushgatewaySpec {
                    url: url.to_string(),
                    job: config.job.clone().unwrap_or_else(|| "dualrun".to_string()),
                    grouping: config.grouping.clone(),
                    timeout,
                })
            }
            None => None,
        };
        Ok(MetricsSpec {
            textfile: textfile_flag
                .map(Path::to_path_buf)
                .or_else(|| config.textfile.clone()),
            pushgateway,
        })
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Parses `[SIDE.]NAME=VALUE` flags of compare (`--input-format`, `--csv-header`): per table
/// and optionally per side, naming the flag and the table in every error.
fn per_table_flags<T, U>(
    flags: &[String],
    flag: &str,
    value_shape: &str,
    tables: &BTreeMap<String, U>,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<BTreeMap<(String, Option<Side>), T>> {
    let mut out = BTreeMap::new();
    for text in flags {
        let (target, value) = split_assignment(text, flag, &format!("[SIDE.]NAME={value_shape}"))?;
        let value = parse(value).with_context(|| format!("{flag} '{text}'"))?;
        let (side, name) = match target.split_once('.') {
            Some(("batch", name)) => (Some(Side::Batch), name),
            Some(("stream", name)) => (Some(Side::Stream), name),
            _ => (None, target),
        };
        if !tables.contains_key(name) {
            bail!("{flag} '{text}' names table '{name}', which no --batch/--stream gives");
        }
        out.insert((name.to_string(), side), value);
    }
    Ok(out)
}

/// A CSV delimiter as written in a config or on the command line: one ASCII character other
/// than a quote or a line end, or `\t` / `tab` for a tab.
fn csv_delimiter(text: &str) -> Result<u8> {
    match text.as_bytes() {
        b"\\t" | b"tab" => Ok(b'\t'),
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        _ => bail!(
            "the CSV delimiter must be one ASCII character other than a quote or a line end (\"tab\" for a tab), not {text:?}"
        ),
    }
}

/// Names bound as `$name` or `${name}` in a text (SQL, a window end, an as_of).
fn referenced_params(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if end > 0 {
            names.insert(body[..end].to_string());
        }
    }
    names
}

/// Fails on a param no text uses (a typo such as `rundate` would otherwise be ignored and the
/// SQL run without it), naming the ones that are used; and on a date param that is no date.
fn check_params(params: &BTreeMap<String, String>, origin: &str, texts: &[&str]) -> Result<()> {
    let used: std::collections::BTreeSet<String> =
        texts.iter().flat_map(|t| referenced_params(t)).collect();
    for name in params.keys() {
        if name != RUN_DATE && !used.contains(name) {
            let used: Vec<String> = used.iter().map(|n| format!("${n}")).collect();
            bail!(
                "{origin} '{name}': no query uses ${name} ({}); check the spelling",
                if used.is_empty() {
                    "the queries use no params".to_string()
                } else {
                    format!("the queries use {}", used.join(", "))
                }
            );
        }
    }
    for (name, value) in params {
        if (name == RUN_DATE || name.ends_with("_date"))
            && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err()
        {
            bail!(
                "{origin} '{name}' = '{value}' is not a date (expected YYYY-MM-DD, e.g. 2026-11-25)"
            );
        }
    }
    Ok(())
}

impl EngineSpec {
    fn from_config(
        config: &EngineConfig,
        memory_flag: Option<ByteSize>,
        engine_flag: Option<&str>,
    ) -> Result<EngineSpec> {
        let url = engine_flag
            .or(config.url.as_deref())
            .map(parse_engine_url)
            .transpose()?;
        let memory_limit = match memory_flag.or(config.memory_limit) {
            Some(size) => {
                // Below this DataFusion cannot hold one batch per operator and fails with pages
                // of operator names instead of a verdict.
                const SMALLEST: usize = 16 << 20;
                if size.0 < SMALLEST {
                    bail!("memory limit '{size}' is too small: give at least 16MiB");
                }
                Some(size.0)
            }
            None => None,
        };
        if let (Some(url), Some(_)) = (&url, memory_limit) {
            bail!(
                "a memory limit applies to embedded runs only; on {url} each executor sizes its own memory: drop --memory-limit / [engine] memory_limit, or run without --engine"
            );
        }
        if config.target_partitions == Some(0) {
            bail!("[engine] target_partitions must be at least 1");
        }
        let defaults = StoreOptions::default();
        let store = StoreOptions {
            retries: config.retries.unwrap_or(defaults.retries),
            request_timeout: config
                .request_timeout
                .map_or(defaults.request_timeout, |HumanDuration(d)| d),
            query_timeout: None,
        };
        Ok(EngineSpec {
            store,
            builtin_float_aggregates: config.float_aggregates == Some(FloatAggregates::Builtin),
            memory_limit,
            spill_dir: config.spill_dir.clone(),
            target_partitions: config.target_partitions,
            batch_size: None,
            buckets: config.buckets,
            unpacked_values: url.is_some(),
            pair_all_by_occurrence: url.is_some(),
            url,
            join: config.join.unwrap_or_default(),
        })
    }
}

/// Arguments of `dualrun compare`, already split out of clap.
pub struct CompareInput<'a> {
    pub batch: &'a [String],
    pub stream: &'a [String],
    /// `NAME=SQL`: the side's logical table as a view over that side's tables.
    pub batch_views: &'a [String],
    pub stream_views: &'a [String],
    pub input_formats: &'a [String],
    pub csv_headers: &'a [String],
    pub csv_delimiters: &'a [String],
    pub infer_all_records: bool,
    pub sql: Option<&'a str>,
    pub query: Option<&'a Path>,
    pub key: &'a [String],
    pub tolerances: &'a [ColumnTolerance],
    pub ignore: &'a [String],
    pub sample: Option<usize>,
    pub name: &'a str,
    pub params: &'a [String],
    pub memory_limit: Option<ByteSize>,
    pub engine: Option<&'a str>,
    pub metrics_textfile: Option<&'a Path>,
    pub pushgateway: Option<&'a str>,
    pub time_column: Option<&'a str>,
    pub window_column: Option<&'a str>,
    pub timeout: Option<HumanDuration>,
    pub redact: &'a [String],
    pub min_rows: Option<u64>,
    pub allow_empty: bool,
    pub allow_nondeterministic: &'a [Nondeterminism],
    pub control: u32,
}

/// Flags of the config-driven commands that override or narrow the config file.
#[derive(Debug, Default)]
pub struct RunFlags<'a> {
    pub checks: &'a [String],
    pub params: &'a [String],
    pub memory_limit: Option<ByteSize>,
    pub engine: Option<&'a str>,
    pub metrics_textfile: Option<&'a Path>,
    pub pushgateway: Option<&'a str>,
}

/// Where a config came from, so that mistakes are named the way the user wrote them: a key of
/// the file (`check 'c': key: …`) or a flag of `compare` (`--key: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File,
    CommandLine,
}

impl Origin {
    /// How the user wrote a check's key: `key` in a file, `--key` on the command line.
    fn key(self, key: &str) -> String {
        match self {
            Origin::File => key.to_string(),
            Origin::CommandLine => format!("--{}", key.replace('_', "-")),
        }
    }

    /// Adds which check a mistake is in, for a file (the command line has only one).
    fn in_check<T>(self, result: Result<T>, context: &str) -> Result<T> {
        match self {
            Origin::File => result.with_context(|| context.to_string()),
            Origin::CommandLine => result,
        }
    }
}

impl Plan {
    /// The plan of a one-off `dualrun compare`.
    pub fn from_compare(input: CompareInput<'_>) -> Result<Plan> {
        // Per table: batch location, stream location, batch view, stream view.
        type Sides = [Option<String>; 4];
        let mut tables: BTreeMap<String, Sides> = BTreeMap::new();
        for (slot, flag, flags, shape) in [
            (0, "--batch", input.batch, "NAME=URL"),
            (1, "--stream", input.stream, "NAME=URL"),
            (2, "--batch-view", input.batch_views, "NAME=SQL"),
            (3, "--stream-view", input.stream_views, "NAME=SQL"),
        ] {
            for text in flags {
                let (name, value) = split_assignment(text, flag, shape)?;
                let entry = tables.entry(name.to_string()).or_default();
                if entry[slot].replace(value.to_string()).is_some() {
                    bail!("{flag} names table '{name}' twice");
                }
            }
        }
        let formats = per_table_flags(
            input.input_formats,
            "--input-format",
            "FORMAT",
            &tables,
            Format::parse,
        )?;
        let headers = per_table_flags(
            input.csv_headers,
            "--csv-header",
            "true|false",
            &tables,
            |v| {
                v.parse::<bool>()
                    .map_err(|_| anyhow!("expected true or false after the ="))
            },
        )?;
        let delimiters = per_table_flags(
            input.csv_delimiters,
            "--csv-delimiter",
            "CHAR",
            &tables,
            |v| csv_delimiter(v).map(|_| v.to_string()),
        )?;
        let mut config = ConfigFile::default();
        for (name, [batch, stream, batch_view, stream_view]) in tables {
            for (side, location, view) in [
                (Side::Batch, &batch, &batch_view),
                (Side::Stream, &stream, &stream_view),
            ] {
                let side = side.name();
                if location.is_some() && view.is_some() {
                    bail!(
                        "table '{name}': give --{side} {name}=URL or --{side}-view '{name}=SELECT …', not both"
                    );
                }
            }
            let (batch_defined, stream_defined) = (
                batch.is_some() || batch_view.is_some(),
                stream.is_some() || stream_view.is_some(),
            );
            if batch_defined != stream_defined && (batch_view.is_some() || stream_view.is_some()) {
                let missing = if batch_defined { "stream" } else { "batch" };
                bail!(
                    "table '{name}' is a view on one side only: give --{missing} {name}=URL or --{missing}-view '{name}=SELECT …' too"
                );
            }
            let of = |side: Option<Side>| (name.clone(), side);
            config.tables.insert(
                name.clone(),
                TableConfig {
                    batch,
                    stream,
                    batch_view,
                    stream_view,
                    format: formats.get(&of(None)).copied(),
                    batch_format: formats.get(&of(Some(Side::Batch))).copied(),
                    stream_format: formats.get(&of(Some(Side::Stream))).copied(),
                    partition_cols: None,
                    watermark: None,
                    lateness: None,
                    version: None,
                    as_of: None,
                    csv_header: headers.get(&of(None)).copied(),
                    batch_csv_header: headers.get(&of(Some(Side::Batch))).copied(),
                    stream_csv_header: headers.get(&of(Some(Side::Stream))).copied(),
                    csv_delimiter: delimiters.get(&of(None)).cloned(),
                    batch_csv_delimiter: delimiters.get(&of(Some(Side::Batch))).cloned(),
                    stream_csv_delimiter: delimiters.get(&of(Some(Side::Stream))).cloned(),
                    infer_all_records: input.infer_all_records.then_some(true),
                    batch_changelog: None,
                    stream_changelog: None,
                },
            );
        }
        let mut tolerance = BTreeMap::new();
        for ColumnTolerance(column, spec) in input.tolerances {
            if tolerance.insert(column.clone(), spec.clone()).is_some() {
                bail!("tolerance for column '{column}' is given twice");
            }
        }
        config.checks.push(CheckConfig {
            name: input.name.to_string(),
            query: input.query.map(Path::to_path_buf),
            sql: input.sql.map(str::to_string),
            key: input.key.to_vec(),
            tolerance,
            ignore: input.ignore.to_vec(),
            sample: input.sample,
            gate: None,
            window_end: None,
            lateness: None,
            time_column: input.time_column.map(str::to_string),
            window_column: input.window_column.map(str::to_string),
            timeout: input.timeout,
            redact: input.redact.to_vec(),
            engine: None,
            // --min-rows has a default; --allow-empty overrides it.
            min_rows: input.min_rows.filter(|_| !input.allow_empty),
            allow_empty: input.allow_empty,
            allow_nondeterministic: input.allow_nondeterministic.to_vec(),
            control: Some(input.control),
        });
        let flags = RunFlags {
            checks: &[],
            params: input.params,
            memory_limit: input.memory_limit,
            engine: input.engine,
            metrics_textfile: input.metrics_textfile,
            pushgateway: input.pushgateway,
        };
        let mut plan = Plan::resolve(config, Path::new(""), Origin::CommandLine, &flags)?;
        // A one-off comparison is no night of the migration: it leaves no history.
        plan.history = None;
        Ok(plan)
    }

    /// The plan of `dualrun run` / `validate`: the config file, then flags on top.
    pub fn from_config_file(path: &Path, flags: &RunFlags<'_>) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: ConfigFile = toml::from_str(&text)
            .map_err(|e| anyhow!("config file {}, {}", path.display(), toml_error(&text, &e)))?;
        let base = path.parent().unwrap_or(Path::new(""));
        Plan::resolve(config, base, Origin::File, flags)
            .with_context(|| format!("config file {}", path.display()))
    }

    /// The plan of a config given as text, with no flags (queries relative to `base`).
    pub fn from_config_text(text: &str, base: &Path) -> Result<Plan> {
        let config: ConfigFile =
            toml::from_str(text).map_err(|e| anyhow!("{}", toml_error(text, &e)))?;
        Plan::resolve(config, base, Origin::File, &RunFlags::default())
    }

    /// The one resolver: a config file (read, or built by `compare`) with the flags on top.
    fn resolve(
        config: ConfigFile,
        base: &Path,
        origin: Origin,
        flags: &RunFlags<'_>,
    ) -> Result<Plan> {
        let only_checks = flags.checks;
        let mut params = BTreeMap::new();
        for (name, value) in &config.params {
            check_param_name(name).with_context(|| format!("[params] {name}"))?;
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                toml::Value::Datetime(d) => d.to_string(),
                _ => bail!("[params] {name}: expected a string, number, boolean or date"),
            };
            params.insert(name.clone(), text);
        }
        let config_params = params.clone();
        let flag_params = parse_params(flags.params)?;
        params.extend(flag_params.clone());

        let mut tables = Vec::new();
        let mut raw_tables = Vec::new();
        // Texts of the tables that may use params: Delta's as_of and the views.
        let as_of_texts: Vec<String> = config
            .tables
            .values()
            .flat_map(|t| [&t.as_of, &t.batch_view, &t.stream_view])
            .flatten()
            .cloned()
            .collect();
        for (name, table) in config.tables {
            let both = table.format;
            let (batch_format, stream_format) = (table.batch_format, table.stream_format);
            let sides = [
                (Side::Batch, &table.batch, &table.batch_view),
                (Side::Stream, &table.stream, &table.stream_view),
            ];
            for (side, location, view) in sides {
                let key = side.name();
                if location.as_deref().is_some_and(|l| l.trim().is_empty()) {
                    bail!(
                        "[tables.{name}] {key} is empty: give the table's location (path or URL)"
                    );
                }
                if view.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    bail!(
                        "[tables.{name}] {key}_view is empty: give a SELECT over the {key} side's tables"
                    );
                }
                if location.is_some() && view.is_some() {
                    bail!("[tables.{name}] give {key} or {key}_view, not both");
                }
            }
            let defined = |side: usize| sides[side].1.is_some() || sides[side].2.is_some();
            let raw_side = match (defined(0), defined(1)) {
                (true, true) => None,
                (true, false) if table.batch.is_some() => Some(Side::Batch),
                (false, true) if table.stream.is_some() => Some(Side::Stream),
                (false, false) => bail!(
                    "[tables.{name}] has no location: give batch and stream (paths or URLs), or a view on a side (batch_view, stream_view)"
                ),
                _ => bail!(
                    "[tables.{name}] is a view on one side only: give its other side too (a location, or a view over that side's tables)"
                ),
            };
            let watermark = match (&table.watermark, &table.lateness) {
                (Some(expression), lateness) => Some(Watermark {
                    expression: expression.clone(),
                    lateness: lateness.map(|HumanDuration(d)| d).unwrap_or_default(),
                }),
                (None, Some(_)) => {
                    bail!("[tables.{name}] lateness needs a watermark expression too")
                }
                (None, None) => None,
            };
            if table.version.is_some() && table.as_of.is_some() {
                bail!("[tables.{name}] give version or as_of, not both");
            }
            let as_of = table
                .as_of
                .as_deref()
                .map(|t| substitute_params(t, &params));
            let location = |l: &Option<String>| {
                l.as_deref()
                    .map(|l| resolve_location(base, l))
                    .unwrap_or_default()
            };
            let view = |v: &Option<String>| v.as_deref().map(|v| substitute_params(v, &params));
            let delimiter = |side: &Option<String>, key: &str| -> Result<Option<u8>> {
                let (text, key) = match side {
                    Some(text) => (Some(text), key),
                    None => (table.csv_delimiter.as_ref(), "csv_delimiter"),
                };
                text.map(|text| {
                    csv_delimiter(text).with_context(|| format!("[tables.{name}] {key}"))
                })
                .transpose()
            };
            let spec = TableSpec {
                batch: SourceSpec {
                    url: location(&table.batch),
                    view: view(&table.batch_view),
                    format: batch_format.or(both),
                    partition_cols: table.partition_cols.clone(),
                    delta_version: table.version,
                    delta_as_of: as_of.clone(),
                    csv_header: table.batch_csv_header.or(table.csv_header).unwrap_or(true),
                    csv_delimiter: delimiter(&table.batch_csv_delimiter, "batch_csv_delimiter")?,
                    infer_all_records: table.infer_all_records.unwrap_or(false),
                    changelog: table
                        .batch_changelog
                        .as_ref()
                        .map(|c| c.resolve(&format!("[tables.{name}] batch_changelog"), &params))
                        .transpose()?,
                },
                stream: SourceSpec {
                    url: location(&table.stream),
                    view: view(&table.stream_view),
                    format: stream_format.or(both),
                    partition_cols: table.partition_cols,
                    delta_version: table.version,
                    delta_as_of: as_of,
                    csv_header: table.stream_csv_header.or(table.csv_header).unwrap_or(true),
                    csv_delimiter: delimiter(&table.stream_csv_delimiter, "stream_csv_delimiter")?,
                    infer_all_records: table.infer_all_records.unwrap_or(false),
                    changelog: table
                        .stream_changelog
                        .as_ref()
                        .map(|c| c.resolve(&format!("[tables.{name}] stream_changelog"), &params))
                        .transpose()?,
                },
                name,
                watermark,
            };
            match raw_side {
                None => tables.push(spec),
                Some(side) => {
                    if spec.watermark.is_some() {
                        bail!(
                            "[tables.{}] is a raw table of the {} side (no other side): a watermark belongs on the logical table its view defines",
                            spec.name,
                            side.name()
                        );
                    }
                    raw_tables.push(RawTable {
                        source: spec.side(side).clone(),
                        name: spec.name,
                        side,
                    });
                }
            }
        }

        if config.checks.is_empty() {
            bail!("no [[checks]]: add at least one check (see `dualrun init`)");
        }
        let gate_defaults = CheckGate {
            clean_runs: config.gate.clean_runs.unwrap_or(7),
            max_divergence_ratio: config.gate.max_divergence_ratio.unwrap_or(0.0),
            required: true,
        };
        check_gate_numbers(
            gate_defaults.clean_runs,
            gate_defaults.max_divergence_ratio,
            "[gate]",
        )?;
        if let Some(required) = &config.gate.required {
            for name in required {
                if !config.checks.iter().any(|c| &c.name == name) {
                    bail!("[gate] required names check '{name}', which is not in the config");
                }
            }
        }
        let mut checks = Vec::new();
        for check in config.checks {
            if checks.iter().any(|c: &CheckSpec| c.name == check.name) {
                bail!("two checks are named '{}'", check.name);
            }
            let context = format!("check '{}'", check.name);
            let (sql, sql_origin) = match (check.sql, check.query, origin) {
                (Some(sql), None, Origin::File) => (sql, format!("{context} sql")),
                (Some(sql), None, Origin::CommandLine) => (sql, "--sql".to_string()),
                (None, Some(query), _) => {
                    let path = base.join(&query);
                    (
                        origin.in_check(read_query(&path), &context)?,
                        path.display().to_string(),
                    )
                }
                (_, _, Origin::File) => {
                    bail!("{context}: give exactly one of query = \"file.sql\" or sql = \"…\"")
                }
                (_, _, Origin::CommandLine) => {
                    bail!("give the query with exactly one of --sql or --query")
                }
            };
            let columns = |columns: &[String], key: &str| {
                origin.in_check(clean_columns(columns, &origin.key(key)), &context)
            };
            checks.push(CheckSpec {
                key: columns(&check.key, "key")?,
                tolerances: check.tolerance.into_iter().collect(),
                ignore: columns(&check.ignore, "ignore")?,
                sample: check.sample.unwrap_or(DEFAULT_SAMPLE),
                gate: {
                    let own = check.gate.clone().unwrap_or_default();
                    let gate = CheckGate {
                        clean_runs: own.clean_runs.unwrap_or(gate_defaults.clean_runs),
                        max_divergence_ratio: own
                            .max_divergence_ratio
                            .unwrap_or(gate_defaults.max_divergence_ratio),
                        required: config
                            .gate
                            .required
                            .as_ref()
                            .is_none_or(|r| r.contains(&check.name)),
                    };
                    check_gate_numbers(gate.clean_runs, gate.max_divergence_ratio, &context)?;
                    gate
                },
                window_end: check.window_end.clone(),
                time_column: check.time_column.clone(),
                window_column: check.window_column.clone(),
                timeout: check.timeout.map(|HumanDuration(d)| d),
                redact: columns(&check.redact, "redact")?,
                embedded: match check.engine.as_deref() {
                    None => false,
                    Some("embedded") => true,
                    Some(other) => bail!(
                        "{context}: engine = \"{other}\": a check can only ask for \"embedded\" (the cluster itself is [engine] url or --engine)"
                    ),
                },
                lateness: check.lateness.map(|HumanDuration(d)| d),
                evidence: {
                    if check.allow_empty && check.min_rows.is_some() {
                        bail!("{context}: give min_rows or allow_empty = true, not both");
                    }
                    Evidence {
                        min_rows: check.min_rows.unwrap_or(1),
                        allow_empty: check.allow_empty,
                    }
                },
                allow_nondeterministic: check.allow_nondeterministic,
                control: check_control(
                    check.control.unwrap_or(0),
                    &match origin {
                        Origin::File => format!("{context} control"),
                        Origin::CommandLine => "--control".to_string(),
                    },
                )?,
                name: check.name,
                sql,
                sql_origin,
            });
        }
        for wanted in only_checks {
            if !checks.iter().any(|c| &c.name == wanted) {
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                bail!(
                    "--check '{wanted}' is not in the config (checks: {})",
                    names.join(", ")
                );
            }
        }
        let all_checks = checks.clone();
        if !only_checks.is_empty() {
            checks.retain(|c| only_checks.contains(&c.name));
        }
        // [params] may serve any check of the config; --param must serve a selected one.
        fn texts<'a>(checks: &'a [CheckSpec], as_of: &'a [String]) -> Vec<&'a str> {
            checks
                .iter()
                .flat_map(|c| [Some(c.sql.as_str()), c.window_end.as_deref()])
                .flatten()
                .chain(as_of.iter().map(String::as_str))
                .collect()
        }
        check_params(
            &config_params,
            "[params]",
            &texts(&all_checks, &as_of_texts),
        )?;
        check_params(&flag_params, "--param", &texts(&checks, &as_of_texts))?;
        let mut engine = EngineSpec::from_config(&config.engine, flags.memory_limit, flags.engine)?;
        engine.store.query_timeout = checks
            .iter()
            .map(|c| c.timeout)
            .collect::<Option<Vec<_>>>()
            .and_then(|timeouts| timeouts.into_iter().max());
        Ok(Plan {
            tables,
            raw_tables,
            checks,
            params,
            engine,
            metrics: MetricsSpec::resolve(
                &config.metrics,
                flags.metrics_textfile,
                flags.pushgateway,
            )?,
            history: Some(resolve_location(
                base,
                config.history.url.as_deref().unwrap_or(".dualrun/history/"),
            )),
            all_checks,
        })
    }
}

/// `${name}` and `$name` → the param's value; longest names first so `$run_date_end` is not cut
/// at `$run_date`.
fn substitute_params(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = params.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_string();
    for name in names {
        out = out.replace(&format!("${{{name}}}"), &params[name]);
        out = out.replace(&format!("${name}"), &params[name]);
    }
    out
}

fn check_gate_numbers(clean_runs: u32, ratio: f64, what: &str) -> Result<()> {
    if clean_runs == 0 {
        bail!("{what}: clean_runs must be at least 1");
    }
    if !(0.0..=1.0).contains(&ratio) {
        bail!("{what}: max_divergence_ratio must be between 0 and 1");
    }
    Ok(())
}

fn read_query(path: &Path) -> Result<String> {
    let sql = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read query file {}", path.display()))?;
    if sql.trim().is_empty() {
        bail!("query file {} is empty", path.display());
    }
    Ok(sql)
}

fn clean_columns(columns: &[String], what: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for column in columns.iter().map(|c| c.trim()) {
        if column.is_empty() {
            bail!("{what}: empty column name");
        }
        if out.iter().any(|c| c == column) {
            bail!("{what}: column '{column}' is given twice");
        }
        out.push(column.to_string());
    }
    Ok(out)
}

/// Relative local paths in a config file are relative to the file, so `dualrun run --config
/// some/dir/dualrun.toml` works from any directory. URLs are kept as they are.
fn resolve_location(base: &Path, location: &str) -> String {
    // An SQLite file's path is a path like any other: `sqlite://shop.db?…` sits beside the config.
    if let Some(rest) = location.strip_prefix("sqlite://")
        && !rest.starts_with('/')
    {
        return format!("sqlite://{}", base.join(rest).display());
    }
    if location.contains("://") || Path::new(location).is_absolute() {
        return location.to_string();
    }
    let joined = base.join(location);
    let mut text = joined.display().to_string();
    if location.ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// A TOML mistake in one line: where (line and column) and what, without the source excerpt
/// the toml crate draws over several lines.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}
