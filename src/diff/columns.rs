//! Names of the columns the diff plans add beside the user's: all start with `__dr_`, so they
//! cannot meet a user's column, and all are defined here, so no two files invent the same one.

pub const PRESENT: &str = "__dr_present";
pub const OCCURRENCE: &str = "__dr_occ";
pub const COUNT: &str = "__dr_n";
pub const BATCH_PRESENT: &str = "__dr_bp";
pub const STREAM_PRESENT: &str = "__dr_sp";
pub const BATCH_OCCURRENCE: &str = "__dr_bocc";
/// Each side's row number (see [`RowIds`]), and both in the keyed output.
pub const ROW_ID: &str = "__dr_id";
pub const BATCH_ROW_ID: &str = "__dr_bid";
pub const STREAM_ROW_ID: &str = "__dr_sid";
pub const STREAM_OCCURRENCE: &str = "__dr_socc";
pub const BATCH_COUNT: &str = "__dr_bn";
pub const STREAM_COUNT: &str = "__dr_sn";
pub const MATCHED_COUNT: &str = "__dr_matched";
pub const MISSING_COUNT: &str = "__dr_missing";
pub const EXTRA_COUNT: &str = "__dr_extra";
/// The time and window columns of the findings, whichever side has the row (batch first).
pub const TIME: &str = "__dr_time";
pub const WINDOW: &str = "__dr_window";

pub fn differs_name(i: usize) -> String {
    format!("__dr_d{i}")
}
pub fn batch_value_name(i: usize) -> String {
    format!("__dr_b{i}")
}
pub fn stream_value_name(i: usize) -> String {
    format!("__dr_s{i}")
}

/// Output columns of a packed diff: both sides' packed values, and whether they differ.
pub const BATCH_PACKED: &str = "__dr_bpk";
pub const STREAM_PACKED: &str = "__dr_spk";
pub const PACKED_DIFFERS: &str = "__dr_pkd";
/// The packed column on each side before the join.
pub const PACKED: &str = "__dr_pk";
