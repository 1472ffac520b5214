//! The diff's contract: what a diff returns, serialised as it is into the JSON report and the
//! run history. Changing a type here changes what users' tools read; the machinery that fills
//! them (plan, pack, collect, explain) lives in the other files of diff/.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// What a finding says is the likely cause of divergent values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Keys repeat on a side: rows were paired by occurrence.
    Duplicates,
    /// A column exists on one side only.
    SchemaDrift,
    /// Divergent rows cluster after the watermark: data arrived late.
    LateData,
    /// NULL on one side where the other has a default (0, '', epoch).
    NullVsDefault,
    /// Values differ by a constant factor (cents vs units, ms vs s).
    UnitShift,
    /// Values differ in the last digits only (rounding, float vs decimal).
    Precision,
    /// Timestamps differ by a whole number of hours.
    TimezoneShift,
    /// Texts differ in case or surrounding whitespace only.
    TextNormalisation,
    /// Rows extra in a stream read from a change log are keys the log never deletes, while the
    /// batch snapshot no longer has them.
    MissedDeletes,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Duplicates => "duplicates",
            FindingKind::SchemaDrift => "schema_drift",
            FindingKind::LateData => "late_data",
            FindingKind::NullVsDefault => "null_vs_default",
            FindingKind::UnitShift => "unit_shift",
            FindingKind::Precision => "precision",
            FindingKind::TimezoneShift => "timezone_shift",
            FindingKind::TextNormalisation => "text_normalisation",
            FindingKind::MissedDeletes => "missed_deletes",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiffResult {
    pub rows: RowCounts,
    pub counts: Counts,
    pub columns: Vec<ColumnDiff>,
    pub schema: SchemaDiff,
    pub samples: Samples,
    /// Whether duplicate keys made the diff pair rows by occurrence.
    pub paired_by_occurrence: bool,
    /// What the diff plan read, per side.
    pub scan: ScanStats,
    /// Causes the statistics point to.
    pub findings: Vec<Finding>,
    /// Where divergent rows fall along the time or window column.
    pub histogram: Option<Histogram>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub matched: u64,
    pub missing_in_stream: u64,
    pub extra_in_stream: u64,
    pub mismatched: u64,
    pub duplicate_keys_batch: u64,
    pub duplicate_keys_stream: u64,
}

impl Counts {
    pub fn divergent(&self) -> u64 {
        self.missing_in_stream + self.extra_in_stream + self.mismatched
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RowCounts {
    pub batch: u64,
    pub stream: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnDiff {
    pub name: String,
    pub mismatched: u64,
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
    /// How the mismatched values differ (absent when the column has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<DiffStats>,
}

/// One differing value of a mismatched row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueDiff {
    pub column: String,
    pub batch: Value,
    pub stream: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowSample {
    /// The key of the row (keyed) or the whole row (keyless).
    pub key: BTreeMap<String, Value>,
    /// Values of the row on the side that has it (missing/extra), absent for keyless.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    /// The differing columns (mismatched rows only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<ValueDiff>,
    /// How many times this row is missing or extra (keyless duplicates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Samples {
    pub missing_in_stream: Vec<RowSample>,
    pub extra_in_stream: Vec<RowSample>,
    pub mismatched: Vec<RowSample>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SchemaDiff {
    pub only_in_batch: Vec<String>,
    pub only_in_stream: Vec<String>,
    pub type_changes: Vec<TypeChange>,
}

impl SchemaDiff {
    /// A column on one side only is a divergence; a type change alone is not.
    pub fn diverges(&self) -> bool {
        !self.only_in_batch.is_empty() || !self.only_in_stream.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeChange {
    pub column: String,
    pub batch: String,
    pub stream: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub columns: Vec<String>,
    pub rows: u64,
    /// One sentence a person can act on.
    pub evidence: String,
    /// The figures behind the sentence.
    pub details: Value,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DiffStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_abs_diff: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel_diff: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_rel_diff: Option<f64>,
    /// Most frequent (batch value → stream value) pairs among the mismatched rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_pairs: Vec<ValuePair>,
}

/// A NULL is `None` (JSON `null`), never the text "NULL", which may be a real value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValuePair {
    pub batch: Option<String>,
    pub stream: Option<String>,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Histogram {
    /// What the buckets are: `hour(event_time)` or a column name.
    pub dimension: String,
    pub buckets: Vec<Bucket>,
    /// True when more buckets existed than were kept.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub value: String,
    pub missing_in_stream: u64,
    pub extra_in_stream: u64,
    pub mismatched: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct SideScan {
    /// Files the plan read.
    pub files: u64,
    /// Files listed for the tables the query reads (before pruning).
    pub files_listed: u64,
    /// Size of the files read.
    pub bytes: u64,
    /// Bytes actually fetched (Parquet reads only the needed columns and row groups), where the
    /// format reports it.
    pub bytes_scanned: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ScanStats {
    pub batch: SideScan,
    pub stream: SideScan,
    /// The queries sent to databases, as the database received them: what was pushed down
    /// (columns and filters) is in their SELECT list and WHERE clause.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub database_queries: Vec<DatabaseQuery>,
}

/// One query a database scan sent, and the rows that came back over the wire.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DatabaseQuery {
    pub sql: String,
    pub rows: u64,
}
