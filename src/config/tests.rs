//! Config resolution through the library: every mistake named, every default filled in.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The canonical form the fingerprint hashes spells out every field itself (no `Debug`), in the
/// form released builds wrote; a temporal tolerance too.
#[test]
fn canonical_form_is_pinned_for_temporal_tolerances() {
    let plan = Plan::from_config_text(
        r#"
[tables.orders]
batch = "b/"
stream = "s/"

[[checks]]
name = "pinned_time"
sql = "SELECT order_id, status FROM orders"
key = ["order_id"]
tolerance = { status = "abs:2s" }
"#,
        Path::new(""),
    )
    .unwrap();
    let check = &plan.checks[0];
    assert_eq!(
        check.canonical(),
        "sql=SELECT order_id, status FROM orders\nkey=[\"order_id\"]\nignore=[]\ntolerance=status:Temporal { abs: 2s }\n"
    );
    assert_eq!(check.fingerprint(), "86ffc743ca2b41b9");
}

/// The fingerprint is stored in every history record: if it changed between versions, every
/// check's clean streak would silently restart. Pinned; change it only on purpose.
#[test]
fn fingerprint_is_pinned() {
    let plan = Plan::from_config_text(
        r#"
[tables.t]
batch = "b/"
stream = "s/"

[[checks]]
name = "c"
sql = "SELECT dt, sum(x) AS s FROM t WHERE dt = $run_date GROUP BY dt"
key = ["dt"]
tolerance = { s = "abs:0.01,rel:1e-6" }
ignore = ["loaded_at"]
"#,
        Path::new("."),
    )
    .unwrap();
    assert_eq!(plan.checks[0].fingerprint(), "82cb1ba1be80aa44");
}

#[test]
fn sizes_are_binary_with_or_without_ib() {
    assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("1k").unwrap(), 1024);
    assert_eq!(parse_size("1024B").unwrap(), 1024);
    let bare = parse_size("512").unwrap_err().to_string();
    assert!(bare.contains("512 bytes? use e.g. 512MiB"), "{bare}");
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("0").is_err());
}

#[test]
fn tolerance_specs() {
    assert_eq!(
        Tolerance::parse("abs:0.01").unwrap(),
        Tolerance::Numeric {
            abs: 0.01,
            rel: 0.0
        }
    );
    assert_eq!(
        Tolerance::parse("rel:1e-6").unwrap(),
        Tolerance::Numeric {
            abs: 0.0,
            rel: 1e-6
        }
    );
    assert_eq!(
        Tolerance::parse("abs:0.5, rel:0.1").unwrap(),
        Tolerance::Numeric { abs: 0.5, rel: 0.1 }
    );
    assert_eq!(
        Tolerance::parse("abs:500ms").unwrap(),
        Tolerance::Temporal {
            abs: Duration::from_millis(500)
        }
    );
    assert_eq!(
        Tolerance::parse("abs:2h").unwrap(),
        Tolerance::Temporal {
            abs: Duration::from_secs(7200)
        }
    );
    for bad in [
        "",
        "abs",
        "abs:",
        "abs:x",
        "abs:-1",
        "rel:nan",
        "abs:1,abs:2",
        "foo:1",
        "abs:1s,rel:0.1",
    ] {
        assert!(Tolerance::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn formats_from_names() {
    assert_eq!(
        Format::from_file_name("part-0.PARQUET").unwrap().0,
        Format::Parquet
    );
    assert_eq!(Format::from_file_name("a.jsonl").unwrap().0, Format::NdJson);
    assert!(Format::from_file_name("_SUCCESS").is_none());
    assert!(Format::parse("xlsx").is_err());
}

#[test]
fn unknown_config_keys_are_errors() {
    let err = toml::from_str::<ConfigFile>("[[checks]]\nname='a'\nsql='select 1'\nkeys=['x']\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `keys`"), "{err}");
}

#[test]
fn params_need_identifier_names() {
    assert!(parse_params(&["run_date=2026-11-25".into()]).is_ok());
    assert!(parse_params(&["run-date=1".into()]).is_err());
    assert!(parse_params(&["nodelimiter".into()]).is_err());
}

/// Config mistakes, each refused with the key or value named (the binary's exit code and JSON
/// report for them are tested once in tests/it/hardening.rs).
#[test]
fn config_mistakes_are_named() {
    const TABLE: &str = "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\n";
    const CHECK: &str = "[[checks]]\nname = \"c\"\nsql = \"SELECT * FROM t\"\n";
    let cases: &[(&str, String, &str)] = &[
        ("malformed TOML", "[tables.t\nbatch = 1".into(), "line 1"),
        ("unknown top-level key", "[tabels.t]\n".into(), "tabels"),
        (
            "unknown table key",
            format!("{TABLE}fromat = \"csv\"\n{CHECK}"),
            "fromat",
        ),
        (
            "unknown check key",
            format!("{TABLE}{CHECK}keys = [\"id\"]\n"),
            "keys",
        ),
        (
            "per-check engine",
            format!("{TABLE}{CHECK}engine = \"ballista://x:1\"\n"),
            "can only ask for \"embedded\"",
        ),
        ("no checks", TABLE.into(), "no [[checks]]"),
        (
            "empty location",
            format!("[tables.t]\nbatch = \"\"\nstream = \"s/\"\n{CHECK}"),
            "batch is empty",
        ),
        (
            "sql and query",
            format!("{TABLE}{CHECK}query = \"q.sql\"\n"),
            "exactly one of",
        ),
        (
            "query file missing",
            format!("{TABLE}[[checks]]\nname = \"c\"\nquery = \"q/missing.sql\"\n"),
            "q/missing.sql",
        ),
        (
            "two checks one name",
            format!("{TABLE}{CHECK}{CHECK}"),
            "two checks are named 'c'",
        ),
        (
            "gate clean_runs 0",
            format!("[gate]\nclean_runs = 0\n{TABLE}{CHECK}"),
            "clean_runs must be at least 1",
        ),
        (
            "gate ratio",
            format!("[gate]\nmax_divergence_ratio = 2.0\n{TABLE}{CHECK}"),
            "between 0 and 1",
        ),
        (
            "required unknown",
            format!("[gate]\nrequired = [\"x\"]\n{TABLE}{CHECK}"),
            "required names check 'x'",
        ),
        (
            "bad timeout",
            format!("{TABLE}{CHECK}timeout = \"soon\"\n"),
            "'soon' is not a duration",
        ),
        (
            "bad format",
            format!("[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nformat = \"xls\"\n{CHECK}"),
            "unknown format 'xls'",
        ),
        (
            "lateness without watermark",
            format!("[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nlateness = \"1h\"\n{CHECK}"),
            "lateness needs a watermark",
        ),
        (
            "version and as_of",
            format!(
                "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nversion = 1\nas_of = \"2026-01-01T00:00:00Z\"\n{CHECK}"
            ),
            "version or as_of, not both",
        ),
        (
            "tolerance spec",
            format!("{TABLE}{CHECK}key = [\"id\"]\ntolerance = {{ v = \"abs\" }}\n"),
            "tolerance of column 'v'",
        ),
        (
            "key twice",
            format!("{TABLE}{CHECK}key = [\"id\", \"id\"]\n"),
            "key: column 'id' is given twice",
        ),
        (
            "empty key column",
            format!("{TABLE}{CHECK}key = [\" \"]\n"),
            "key: empty column name",
        ),
        (
            "min_rows and allow_empty",
            format!("{TABLE}{CHECK}min_rows = 5\nallow_empty = true\n"),
            "min_rows or allow_empty",
        ),
        (
            "too many control runs",
            format!("{TABLE}{CHECK}control = 99\n"),
            "at most 8 control runs",
        ),
        (
            "unknown nondeterminism",
            format!("{TABLE}{CHECK}allow_nondeterministic = [\"sometimes\"]\n"),
            "sometimes",
        ),
        (
            "memory limit without unit",
            format!("[engine]\nmemory_limit = \"512\"\n{TABLE}{CHECK}"),
            "has no unit",
        ),
        (
            "memory limit too small",
            format!("[engine]\nmemory_limit = \"1MiB\"\n{TABLE}{CHECK}"),
            "memory limit '1MiB' is too small",
        ),
        (
            "join",
            format!("[engine]\njoin = \"nested\"\n{TABLE}{CHECK}"),
            "join 'nested'",
        ),
        (
            "float aggregates",
            format!("[engine]\nfloat_aggregates = \"fast\"\n{TABLE}{CHECK}"),
            "fast",
        ),
        (
            "target partitions 0",
            format!("[engine]\ntarget_partitions = 0\n{TABLE}{CHECK}"),
            "target_partitions must be at least 1",
        ),
        (
            "engine URL",
            format!("[engine]\nurl = \"spark://x\"\n{TABLE}{CHECK}"),
            "expected ballista://HOST:PORT",
        ),
        (
            "pushgateway scheme",
            format!("[metrics]\npushgateway = \"ftp://x\"\n{TABLE}{CHECK}"),
            "must be http:// or https://",
        ),
        (
            "grouping label",
            format!(
                "[metrics]\npushgateway = \"http://x\"\ngrouping = {{ job = \"y\" }}\n{TABLE}{CHECK}"
            ),
            "grouping label 'job'",
        ),
        (
            "unused param",
            format!("[params]\nlo = 1\n{TABLE}{CHECK}"),
            "no query uses $lo",
        ),
        (
            "param not a date",
            format!("[params]\nrun_date = \"2026-13-45\"\n{TABLE}{CHECK}"),
            "is not a date",
        ),
        (
            "changelog without key",
            format!(
                "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nstream_changelog = {{ shape = \"upsert\", key = [], order_by = [\"ts\"] }}\n{CHECK}"
            ),
            "key is empty",
        ),
        (
            "csv delimiter of two characters",
            format!(
                "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nstream_csv_delimiter = \"||\"\n{CHECK}"
            ),
            "[tables.t] stream_csv_delimiter: the CSV delimiter must be one ASCII character",
        ),
        (
            "changelog op on upsert",
            format!(
                "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\nstream_changelog = {{ shape = \"upsert\", key = [\"id\"], order_by = [\"ts\"], op = \"o\" }}\n{CHECK}"
            ),
            "op applies to shape = \"flink\" only",
        ),
    ];
    let dir = std::env::temp_dir();
    for (what, text, expected) in cases {
        let error = match Plan::from_config_text(text, &dir) {
            Ok(_) => panic!("{what}: accepted:\n{text}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains(expected),
            "{what}: {error:?} should contain {expected:?}"
        );
        assert!(!error.contains('\n'), "{what}: not one line: {error:?}");
    }
}

#[test]
fn sqlite_paths_are_relative_to_the_config_file() {
    let plan = Plan::from_config_text(
        "[tables.t]\nbatch = \"b/\"\nstream = \"sqlite://data/shop.db?table=orders\"\n\
         [[checks]]\nname = \"c\"\nsql = \"SELECT * FROM t\"\n",
        Path::new("/etc/dualrun"),
    )
    .unwrap();
    assert_eq!(
        plan.tables[0].stream.url,
        "sqlite:///etc/dualrun/data/shop.db?table=orders"
    );
}

#[test]
fn csv_delimiters_apply_to_both_sides_unless_one_side_says_otherwise() {
    let plan = Plan::from_config_text(
        "[tables.t]\nbatch = \"b/\"\nstream = \"s/\"\ncsv_delimiter = \";\"\nstream_csv_delimiter = \"tab\"\n\
         [tables.u]\nbatch = \"b/\"\nstream = \"s/\"\n\
         [[checks]]\nname = \"c\"\nsql = \"SELECT * FROM t JOIN u USING (id)\"\n",
        Path::new("/etc/dualrun"),
    )
    .unwrap();
    let delimiters: Vec<(Option<u8>, Option<u8>)> = plan
        .tables
        .iter()
        .map(|t| (t.batch.csv_delimiter, t.stream.csv_delimiter))
        .collect();
    assert_eq!(delimiters, [(Some(b';'), Some(b'\t')), (None, None)]);
}
