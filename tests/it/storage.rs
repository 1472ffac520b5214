//! Where the tables really live: a real S3-compatible server on loopback, sink layouts of Kafka
//! Connect, Spark and Flink, and partition pruning proven by the files the plan read.

use crate::common::{Fmt, S3Server, SECRET, Workspace};

const ROWS: &str =
    "SELECT * FROM (VALUES (1, 'a', 1.5), (2, 'b', 2.5), (3, 'c', 3.5)) AS t(id, name, x)";
const ROWS_CHANGED: &str =
    "SELECT * FROM (VALUES (1, 'a', 1.5), (2, 'B', 2.5), (4, 'd', 4.5)) AS t(id, name, x)";

fn assert_no_secret(run: &crate::common::Run) {
    assert!(!run.stdout.contains(SECRET), "secret in stdout");
    assert!(!run.stderr.contains(SECRET), "secret in stderr");
}

#[test]
fn compare_and_run_against_s3() {
    let s3 = S3Server::start();
    s3.create_bucket("warehouse");
    s3.create_bucket("lake");
    let ws = Workspace::new();
    ws.table_file(
        "local/batch/orders/dt=2026-11-25/part-0.parquet",
        Fmt::Parquet,
        ROWS,
    );
    ws.table_file(
        "local/stream/orders/dt=2026-11-25/mb-0.ndjson",
        Fmt::NdJson,
        ROWS_CHANGED,
    );
    s3.upload_dir(&ws.path("local/batch/orders"), "warehouse", "orders");
    s3.upload_dir(&ws.path("local/stream/orders"), "lake", "stream/orders");

    let env = s3.env();
    let run = ws.run_with_env(
        &[
            "compare",
            "--batch",
            "orders=s3://warehouse/orders/",
            "--stream",
            "orders=s3://lake/stream/orders/",
            "--sql",
            "SELECT id, name, x FROM orders WHERE dt = $run_date",
            "--key",
            "id",
            "--param",
            "run_date=2026-11-25",
            "--format",
            "json",
        ],
        &env,
    );
    assert_no_secret(&run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [1, 1, 1, 1, 0, 0]);

    ws.write(
        "dualrun.toml",
        r#"
[tables.orders]
batch = "s3://warehouse/orders/"
stream = "s3://lake/stream/orders/"

[[checks]]
name = "orders"
sql = "SELECT id, name, x FROM orders"
key = ["id"]

[history]
url = "s3://lake/dualrun/history/"
"#,
    );
    let run = ws.run_with_env(
        &["run", "--config", "dualrun.toml", "--format", "json"],
        &env,
    );
    assert_no_secret(&run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [1, 1, 1, 1, 0, 0]);
    let run = ws.run_with_env(
        &["history", "--config", "dualrun.toml", "--format", "json"],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json().as_array().unwrap().len(), 1);

    // A missing bucket: exit 2, the URL named, the credentials not.
    let run = ws.run_with_env(
        &[
            "compare",
            "--batch",
            "orders=s3://nobucket/x/",
            "--stream",
            "orders=s3://lake/stream/orders/",
            "--sql",
            "SELECT * FROM orders",
        ],
        &env,
    );
    assert_no_secret(&run);
    crate::common::assert_trouble(&run, "s3://nobucket/x/");
}

#[test]
fn urls_with_credentials_are_redacted() {
    let ws = Workspace::new();
    let run = ws.run(&[
        "compare",
        "--batch",
        &format!("t=https://user:{SECRET}@127.0.0.1:9/data/t.parquet"),
        "--stream",
        &format!("t=https://127.0.0.1:9/data/t.parquet?sig={SECRET}"),
        "--sql",
        "SELECT * FROM t",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 2);
    assert_no_secret(&run);
    assert!(
        run.stderr
            .contains("https://***@127.0.0.1:9/data/t.parquet"),
        "{}",
        run.stderr
    );
}

#[test]
fn partition_pruning_reads_one_partition_of_a_hundred() {
    let ws = Workspace::new();
    for n in 0..100 {
        let dt = format!("2026-08-{:02}", n % 31 + 1);
        let dt = format!("{dt}-{:02}", n / 31); // 100 distinct partition values
        ws.table_file(
            &format!("batch/events/dt={dt}/part-0.parquet"),
            Fmt::Parquet,
            ROWS,
        );
        ws.table_file(
            &format!("stream/events/dt={dt}/part-0.parquet"),
            Fmt::Parquet,
            ROWS,
        );
    }
    let run = ws.run(&[
        "compare",
        "--batch",
        "events=batch/events/",
        "--stream",
        "events=stream/events/",
        "--sql",
        "SELECT dt, id, name, x FROM events WHERE dt = $partition",
        "--key",
        "dt,id",
        "--param",
        "partition=2026-08-05-01",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 0, 0, 0]);
    let scan = &run.check()["scan"];
    for side in ["batch", "stream"] {
        assert_eq!(scan[side]["files"], 1, "{side}: {scan}");
        assert_eq!(scan[side]["files_listed"], 100, "{side}: {scan}");
        assert!(scan[side]["bytes"].as_u64().unwrap() > 0);
    }
    // The same in the verbose text report.
    let run = ws.run(&[
        "compare",
        "--batch",
        "events=batch/events/",
        "--stream",
        "events=stream/events/",
        "--sql",
        "SELECT dt, id, name, x FROM events WHERE dt = $partition",
        "--key",
        "dt,id",
        "--param",
        "partition=2026-08-05-01",
        "--verbose",
    ]);
    assert!(
        run.stdout.contains("scanned: batch 1 of 100 files"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_file_read_in_byte_ranges_counts_once() {
    let ws = Workspace::new();
    let rows = "SELECT value AS id, value * 7 AS x FROM generate_series(1, 200000)";
    let batch = ws.table("batch", Fmt::Parquet, rows);
    let stream = ws.table("stream", Fmt::Parquet, rows);
    let size = |dir: &str| {
        std::fs::metadata(format!("{dir}part-0.parquet"))
            .unwrap()
            .len()
    };
    let args = [
        "compare",
        "--batch",
        &format!("t={batch}"),
        "--stream",
        &format!("t={stream}"),
        "--sql",
        "SELECT * FROM t",
        "--key",
        "id",
        "--format",
        "json",
    ];
    // Files above this size are read in byte ranges, one per partition.
    let ranges = [(
        "DATAFUSION_OPTIMIZER_REPARTITION_FILE_MIN_SIZE",
        "1024".to_string(),
    )];
    let run = ws.run_with_env(&args, &ranges);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [200_000, 0, 0, 0, 0, 0]);
    let scan = &run.check()["scan"];
    for (side, dir) in [("batch", &batch), ("stream", &stream)] {
        assert_eq!(scan[side]["files"], 1, "{side}: {scan}");
        assert_eq!(scan[side]["bytes"], size(dir), "{side}: {scan}");
        assert!(scan[side]["bytes_scanned"].as_u64().unwrap() <= size(dir));
    }
}

#[test]
fn kafka_connect_sink_layout() {
    let ws = Workspace::new();
    // Batch: one Parquet file per day. Stream: Kafka Connect S3 sink, topics/<topic>/year=/month=/day=/hour=/.
    ws.table_file(
        "batch/orders/part-0.parquet",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 10, 5.0), (2, 11, 6.0), (3, 23, 7.0)) AS t(id, hour, amount)",
    );
    for (hour, sql) in [
        ("10", "SELECT * FROM (VALUES (1, 5.0)) AS t(id, amount)"),
        ("11", "SELECT * FROM (VALUES (2, 6.0)) AS t(id, amount)"),
        ("23", "SELECT * FROM (VALUES (3, 7.5)) AS t(id, amount)"),
    ] {
        ws.table_file(
            &format!(
                "topics/orders/year=2026/month=11/day=25/hour={hour}/orders+0+00000000{hour}.json"
            ),
            Fmt::NdJson,
            sql,
        );
    }
    let run = ws.run(&[
        "compare",
        "--batch",
        "orders=batch/orders/",
        "--stream",
        "orders=topics/orders/",
        "--sql",
        "SELECT id, CAST(hour AS INT) AS hour, amount FROM orders",
        "--key",
        "id",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [2, 1, 0, 0, 0, 0]);
    assert_eq!(run.check()["samples"]["mismatched"][0]["key"]["id"], 3);
}

#[test]
fn spark_and_flink_leftovers_are_skipped() {
    let ws = Workspace::new();
    let batch = ws.table("batch/t", Fmt::Parquet, ROWS);
    ws.table_file("spark/t/part-00000.parquet", Fmt::Parquet, ROWS);
    ws.write("spark/t/_SUCCESS", "");
    ws.write("spark/t/.part-00000.parquet.crc", "crc");
    // A failed task's output, and files still being written: never read.
    ws.table_file(
        "spark/t/_temporary/0/task_1/part-00001.parquet",
        Fmt::Parquet,
        ROWS_CHANGED,
    );
    ws.table_file(
        "spark/t/.part-00002.parquet.inprogress.1f2e",
        Fmt::Parquet,
        ROWS_CHANGED,
    );
    ws.write("spark/t/part-00003.parquet.inprogress", "half a file");
    let run = ws.compare(
        &batch,
        &format!("{}/", ws.path("spark/t").display()),
        "SELECT * FROM t",
        &["--key", "id"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 0, 0, 0]);
}

#[test]
fn hidden_files_named_like_data_files_are_left_out() {
    let ws = Workspace::new();
    let batch = ws.table("batch/t", Fmt::Parquet, ROWS);
    // Beside the data: a macOS resource fork copied along (not Parquet at all), and a hidden
    // Parquet file of other rows. A name with its own '%' is read as the file it names.
    ws.table_file("stream/t/part 0%20.parquet", Fmt::Parquet, ROWS);
    ws.write(
        "stream/t/._part 0%20.parquet",
        "\u{0}\u{5}\u{16}\u{7}Mac OS X",
    );
    ws.table_file("stream/t/.part-1.parquet", Fmt::Parquet, ROWS_CHANGED);
    let stream = format!("{}/", ws.path("stream/t").display());
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 0, 0, 0]);

    let s3 = S3Server::start();
    s3.create_bucket("lake");
    s3.upload_dir(&ws.path("stream/t"), "lake", "t");
    let run = ws.run_with_env(
        &[
            "compare",
            "--batch",
            &format!("t={batch}"),
            "--stream",
            "t=s3://lake/t/",
            "--sql",
            "SELECT * FROM t",
            "--key",
            "id",
            "--format",
            "json",
        ],
        &s3.env(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 0, 0, 0]);

    // In a partition directory the file cannot be left out: an error naming it.
    ws.table_file("parted/t/dt=1/part-0.parquet", Fmt::Parquet, ROWS);
    ws.write("parted/t/dt=1/._part-0.parquet", "Mac OS X");
    let parted = format!("{}/", ws.path("parted/t").display());
    let run = ws.compare(
        &batch,
        &parted,
        "SELECT id, name, x FROM t",
        &["--key", "id"],
    );
    crate::common::assert_trouble(&run, "dt=1/._part-0.parquet: a hidden file");
}

#[test]
fn files_only_in_plain_subdirectories_are_an_error_naming_one() {
    // Firehose writes under YYYY/MM/DD/HH/, Flink under yyyy-MM-dd--HH/: not partitions.
    let ws = Workspace::new();
    let batch = ws.table("batch/t", Fmt::Parquet, ROWS);
    ws.table_file("firehose/t/2026/12/01/10/a.parquet", Fmt::Parquet, ROWS);
    let stream = format!("{}/", ws.path("firehose/t").display());
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    crate::common::assert_trouble(&run, "files sit in other subdirectories (e.g. ");
    assert!(
        run.stderr.contains("2026/12/01/10/a.parquet"),
        "{}",
        run.stderr
    );
    let hour = format!("{}/", ws.path("firehose/t/2026/12/01/10").display());
    let run = ws.compare(&batch, &hour, "SELECT * FROM t", &["--key", "id"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Flink's part files carry no extension unless a suffix is configured: named all the same.
    ws.table_file("flink/t/2026-12-01--10/part-0-0", Fmt::Parquet, ROWS);
    let stream = format!("{}/", ws.path("flink/t").display());
    let run = ws.compare(&batch, &stream, "SELECT * FROM t", &["--key", "id"]);
    crate::common::assert_trouble(&run, "2026-12-01--10/part-0-0");
}

/// Writes `sql`'s rows as one commit of a Delta table at `path` (created on the first commit).
#[cfg(feature = "delta")]
fn delta_commit(path: &std::path::Path, sql: &str) {
    std::fs::create_dir_all(path).unwrap();
    let batches = crate::common::sql_batches(sql);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = url::Url::from_directory_path(path).unwrap();
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        table
            .write(batches)
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .unwrap();
    });
}

/// A Delta log's file statistics leave NaN out of min and max as Parquet's do; read by them, a
/// file of NaN and 1.0 would hold 1.0 twice (see the Parquet case in `hardening`).
#[cfg(feature = "delta")]
#[test]
fn nan_in_delta_is_read_as_nan_whatever_its_statistics_say() {
    let ws = Workspace::new();
    let delta = ws.path("lake/t");
    delta_commit(&delta, crate::common::NAN_AND_ONE);
    let batch = format!("{}/", delta.display());
    let same = ws.table("arrow", Fmt::Arrow, crate::common::NAN_AND_ONE);
    crate::common::assert_nan_read_as_nan(&ws, &batch, &same, &[]);
}

#[cfg(feature = "delta")]
#[test]
fn delta_tables_with_time_travel() {
    let ws = Workspace::new();
    let batch = ws.table("batch/orders", Fmt::Parquet, ROWS);
    let delta = ws.path("lake/orders");
    delta_commit(&delta, ROWS);
    delta_commit(
        &delta,
        "SELECT * FROM (VALUES (4, 'd', 4.5)) AS t(id, name, x)",
    );
    let stream = format!("{}/", delta.display());

    // Recognised by its _delta_log; the latest version has the late row 4.
    let run = ws.compare(
        &batch,
        &stream,
        "SELECT id, name, x FROM t",
        &["--key", "id"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 1, 0, 0]);
    assert_eq!(run.check()["samples"]["extra_in_stream"][0]["key"]["id"], 4);

    // Time travel: version 0 is what the stream had committed before row 4.
    let config = |travel: &str| {
        format!(
            "[tables.t]\nbatch = \"{batch}\"\nstream = \"{stream}\"\nstream_format = \"delta\"\n{travel}\n\n[[checks]]\nname = \"t\"\nsql = \"SELECT id, name, x FROM t\"\nkey = [\"id\"]\n"
        )
    };
    ws.write("v0.toml", &config("version = 0"));
    let run = ws.run(&["run", "--config", "v0.toml", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 0, 0, 0]);

    // As of a point in time given through a param: now is after both commits.
    ws.write("asof.toml", &config("as_of = \"${day}T23:59:59Z\""));
    let run = ws.run(&[
        "run",
        "--config",
        "asof.toml",
        "--param",
        "day=2999-01-01",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [3, 0, 0, 1, 0, 0]);
    // Before the table existed: an error that says so, for this check only.
    let run = ws.run(&[
        "run",
        "--config",
        "asof.toml",
        "--param",
        "day=2001-01-01",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.check()["error"].as_str().unwrap().contains("Delta"),
        "{}",
        run.stdout
    );
}

/// A minimal static file server with HEAD and byte ranges (what object_store's HTTP store needs),
/// on a free loopback port, serving one file.
fn serve_file(bytes: Vec<u8>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (start, end) = value.trim().split_once('-').unwrap();
                        let start: usize = start.parse().unwrap();
                        let end: usize = end
                            .parse()
                            .map(|e: usize| e.min(bytes.len() - 1))
                            .unwrap_or(bytes.len() - 1);
                        range = Some((start, end));
                    }
                }
                let mut stream = stream;
                let head = "Last-Modified: Thu, 26 Nov 2026 12:00:00 GMT\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n";
                if request.starts_with("HEAD") {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{head}\r\n",
                        bytes.len()
                    );
                } else if let Some((start, end)) = range {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n{head}\r\n",
                        end - start + 1,
                        bytes.len()
                    );
                    let _ = stream.write_all(&bytes[start..=end]);
                } else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{head}\r\n",
                        bytes.len()
                    );
                    let _ = stream.write_all(&bytes);
                }
            });
        }
    });
    address
}

#[test]
fn a_parquet_file_over_http() {
    let ws = Workspace::new();
    let batch = ws.table("batch/t", Fmt::Parquet, ROWS);
    let file = ws.table_file("served/t.parquet", Fmt::Parquet, ROWS_CHANGED);
    let server = serve_file(std::fs::read(file).unwrap());
    let run = ws.compare(
        &batch,
        &format!("{server}/t.parquet"),
        "SELECT * FROM t",
        &["--key", "id"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [1, 1, 1, 1, 0, 0]);
}

/// A Delta table has no codec that Ballista executors know: the check fails before anything
/// runs, naming the table, and says what Ballista can read.
#[cfg(all(feature = "delta", feature = "ballista"))]
#[test]
fn delta_tables_are_refused_on_ballista_before_running() {
    let ws = Workspace::new();
    let batch = ws.table("batch/orders", Fmt::Parquet, ROWS);
    let delta = ws.path("lake/orders");
    delta_commit(&delta, ROWS);
    let stream = format!("{}/", delta.display());
    let run = ws.compare(
        &batch,
        &stream,
        "SELECT id, name, x FROM t",
        &["--key", "id", "--engine", "ballista://standalone"],
    );
    crate::common::assert_trouble(&run, "stream side cannot run on Ballista (tables: t)");
    assert!(run.stderr.contains("not Delta tables"), "{}", run.stderr);
}

/// Azurite's well-known development account (public, documented by Microsoft).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Uploads a local directory into an Azurite container (created), with Microsoft's own client.
fn azurite_upload(endpoint: &str, dir: &std::path::Path, container: &str, prefix: &str) {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import os, sys\n\
             from azure.core.exceptions import ResourceExistsError\n\
             from azure.storage.blob import BlobServiceClient\n\
             endpoint, key, root, container, prefix = sys.argv[1:6]\n\
             svc = BlobServiceClient.from_connection_string(\n\
                 f'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint}/devstoreaccount1;')\n\
             try:\n    svc.create_container(container)\n\
             except ResourceExistsError:\n    pass\n\
             c = svc.get_container_client(container)\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       p = os.path.join(d, f)\n\
             \x20       c.upload_blob(prefix + '/' + os.path.relpath(p, root), open(p, 'rb').read(), overwrite=True)",
        ])
        .arg(endpoint)
        .arg(AZURITE_KEY)
        .arg(dir)
        .arg(container)
        .arg(prefix)
        .output()
        .expect("azure-storage-blob is installed in .venv (make test installs it)");
    assert!(output.status.success(), "{output:?}");
}

/// Azure Blob Storage for real: Azurite, started once per `make test` run by scripts/servers.sh.
#[test]
fn compare_against_azure_blob_storage_on_azurite() {
    let endpoint = std::env::var("DUALRUN_TEST_AZURITE").expect(
        "DUALRUN_TEST_AZURITE is not set: run the tests through `make test`, which starts Azurite",
    );
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", endpoint.clone()),
        ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".to_string()),
        ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.to_string()),
    ];
    let outputs = orders_in_an_object_store(
        "az://lake",
        Some("az://lake/dualrun/history/"),
        &env,
        |dir| azurite_upload(&endpoint, dir, "lake", "stream/orders"),
    );
    for output in outputs {
        assert!(!output.contains(AZURITE_KEY), "the account key was printed");
    }
}

/// The orders check with its stream side in an object store (`root` + `/stream/orders/`, put
/// there by `upload` from a local directory): compare with exact counts, a missing bucket in
/// one line, then `run` (history at `history`, else local) and `history` reading the record
/// back. Returns everything the runs printed.
fn orders_in_an_object_store(
    root: &str,
    history: Option<&str>,
    env: &[(&str, String)],
    upload: impl FnOnce(&std::path::Path),
) -> Vec<String> {
    let ws = Workspace::new();
    ws.table_file("local/batch/orders/part-0.parquet", Fmt::Parquet, ROWS);
    ws.table_file(
        "local/stream/orders/part-0.parquet",
        Fmt::Parquet,
        ROWS_CHANGED,
    );
    upload(&ws.path("local/stream/orders"));
    let compare = |stream: &str| {
        ws.run_with_env(
            &[
                "compare",
                "--batch",
                "orders=local/batch/orders/",
                "--stream",
                stream,
                "--sql",
                "SELECT id, name, x FROM orders",
                "--key",
                "id",
                "--format",
                "json",
            ],
            env,
        )
    };
    let run = compare(&format!("orders={root}/stream/orders/"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.counts(), [1, 1, 1, 1, 0, 0]);
    assert_eq!(run.check()["scan"]["stream"]["files"], 1);
    let scheme = root.split("://").next().unwrap();
    let missing = compare(&format!("orders={scheme}://nosuch/stream/orders/"));
    crate::common::assert_trouble(&missing, "table 'orders' (stream side");
    assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);

    let history_section =
        history.map_or(String::new(), |url| format!("[history]\nurl = \"{url}\"\n"));
    ws.write(
        "dualrun.toml",
        &format!(
            "[params]\nrun_date = \"2026-11-25\"\n{history_section}[tables.orders]\n\
             batch = \"local/batch/orders/\"\nstream = \"{root}/stream/orders/\"\n\
             [[checks]]\nname = \"orders\"\nsql = \"SELECT id, name, x FROM orders\"\nkey = [\"id\"]\n"
        ),
    );
    let nightly = ws.run_with_env(&["run", "--format", "json"], env);
    assert_eq!(nightly.code, 1, "{}", nightly.stderr);
    assert_eq!(
        ws.path(".dualrun").exists(),
        history.is_none(),
        "where the history went"
    );
    let records = ws.run_with_env(&["history", "--format", "json"], env);
    assert_eq!(records.code, 0, "{}", records.stderr);
    assert!(
        records.stdout.contains("\"orders\"") && records.stdout.contains("\"diverged\""),
        "{}",
        records.stdout
    );
    [run, missing, nightly, records]
        .into_iter()
        .flat_map(|r| [r.stdout, r.stderr])
        .collect()
}

/// Uploads a local directory into a bucket (created) of the GCS emulator, through its JSON API.
fn gcs_upload(endpoint: &str, dir: &std::path::Path, bucket: &str, prefix: &str) {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, os, sys, urllib.error, urllib.request\n\
             endpoint, root, bucket, prefix = sys.argv[1:5]\n\
             def post(url, data, kind):\n\
             \x20   urllib.request.urlopen(urllib.request.Request(url, data=data, method='POST', headers={'Content-Type': kind}))\n\
             try:\n\
             \x20   post(f'{endpoint}/storage/v1/b?project=dualrun', json.dumps({'name': bucket}).encode(), 'application/json')\n\
             except urllib.error.HTTPError as e:\n\
             \x20   assert e.code == 409, e\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       p = os.path.join(d, f)\n\
             \x20       name = prefix + '/' + os.path.relpath(p, root)\n\
             \x20       post(f'{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}', open(p, 'rb').read(), 'application/octet-stream')",
        ])
        .arg(endpoint)
        .arg(dir)
        .arg(bucket)
        .arg(prefix)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// Google Cloud Storage for real: fake-gcs-server, started once per `make test` run by
/// scripts/servers.sh, reached only through the standard environment (`GOOGLE_SERVICE_ACCOUNT`
/// naming a key file whose `gcs_base_url` is the emulator): compare, and run with its history.
/// The history stays local here: the emulator accepts XML-API uploads (what object_store sends
/// to write an object) only as signed URLs, so it cannot hold a history record.
#[test]
fn compare_run_and_history_on_google_cloud_storage() {
    let endpoint = std::env::var("DUALRUN_TEST_GCS").expect(
        "DUALRUN_TEST_GCS is not set: run the tests through `make test`, which starts fake-gcs-server",
    );
    let ws = Workspace::new();
    let key = ws.write(
        "service-account.json",
        &format!(
            r#"{{"gcs_base_url": "{endpoint}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
        ),
    );
    let env = [("GOOGLE_SERVICE_ACCOUNT", key.display().to_string())];
    orders_in_an_object_store("gs://lake", None, &env, |dir| {
        gcs_upload(&endpoint, dir, "lake", "stream/orders")
    });
}

/// Text that does not read as the other side's type names the object and line that hold it, in
/// a table of hive partitions on S3 too.
#[test]
fn text_that_does_not_read_names_its_object_on_s3() {
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let ws = Workspace::new();
    ws.table_file(
        "batch/dt=2026-11-25/part-0.parquet",
        Fmt::Parquet,
        "SELECT * FROM (VALUES (1, 5), (2, 7)) AS t(id, n)",
    );
    let batch = format!("{}/", ws.path("batch").display());
    ws.write("local/t/dt=2026-11-24/a.csv", "id,n\n9,z\n");
    ws.write("local/t/dt=2026-11-25/b.csv", "id,n\n1,5\n2,7x\n");
    s3.upload_dir(&ws.path("local/t"), "lake", "t");
    let run = ws.run_with_env(
        &[
            "compare",
            "--batch",
            &format!("t={batch}"),
            "--stream",
            "t=s3://lake/t/",
            "--sql",
            "SELECT id, n FROM t WHERE dt = '2026-11-25'",
            "--key",
            "id",
            "--format",
            "json",
        ],
        &s3.env(),
    );
    assert_no_secret(&run);
    crate::common::assert_trouble(
        &run,
        "file s3://lake/t/dt=2026-11-25/b.csv, line 3: column 'n' (stream side): its text is read as Int64",
    );
    assert_eq!(run.json()["status"], "error", "{}", run.stdout);
}
