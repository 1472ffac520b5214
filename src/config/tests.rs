//! Config resolution through the library: every mistake named, every default filled in.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The fingerprint decides which history records count for a check's streak: these values
/// were written by released builds, so a refactor that changes them would silently reset
/// every streak. They must never change.
#[test]
fn fingerprints_of_known_checks_are_pinned() {
    let plan = Plan::from_config_text(
        r#"
        [tables.orders]
        batch = "b/"
        stream = "s/"

        [[checks]]
        name = "pinned"
        sql = "SELECT order_id, amount, status FROM orders"
        key = ["order_id"]
        ignore = ["status"]
        tolerance = { amount = "abs:0.01,rel:0.001" }

        [[checks]]
        name = "pinned_time"
        sql = "SELECT order_id, status FROM orders"
        key = ["order_id"]
        tolerance = { status = "abs:2s" }
        "#,
        Path::new(""),
    )
    .unwrap();
    assert_eq!(plan.checks[0].fingerprint(), "581b7a622d8c2256");
    assert_eq!(plan.checks[1].fingerprint(), "86ffc743ca2b41b9");
    assert_eq!(
        plan.checks[0].canonical(),
        "sql=SELECT order_id, amount, status FROM orders\nkey=[\"order_id\"]\nignore=[\"status\"]\ntolerance=amount:Numeric { abs: 0.01, rel: 0.001 }\n"
    );
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
