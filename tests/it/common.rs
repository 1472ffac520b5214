//! Test helpers: write real input files in every supported format (from SQL, through
//! DataFusion and arrow's own writers) and run the real `dualrun` binary on them.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Fmt {
    Parquet,
    Csv,
    NdJson,
    Arrow,
    Avro,
}

impl Fmt {
    pub const ALL: [Fmt; 5] = [Fmt::Parquet, Fmt::Csv, Fmt::NdJson, Fmt::Arrow, Fmt::Avro];

    pub fn extension(self) -> &'static str {
        match self {
            Fmt::Parquet => "parquet",
            Fmt::Csv => "csv",
            Fmt::NdJson => "ndjson",
            Fmt::Arrow => "arrow",
            Fmt::Avro => "avro",
        }
    }
}

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The first check of a JSON report.
    pub fn check(&self) -> Value {
        self.json()["checks"][0].clone()
    }

    pub fn counts(&self) -> [u64; 6] {
        let c = &self.check()["counts"];
        [
            "matched",
            "mismatched",
            "missing_in_stream",
            "extra_in_stream",
            "duplicate_keys_batch",
            "duplicate_keys_stream",
        ]
        .map(|k| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("no count {k} in {c}"))
        })
    }
}

pub fn sql_batches(sql: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = SessionContext::new();
        ctx.sql(sql)
            .await
            .expect("test SQL plans")
            .collect()
            .await
            .expect("test SQL runs")
    })
}

pub fn write_batches(batches: &[RecordBatch], format: Fmt, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = File::create(path).unwrap();
    let schema = batches[0].schema();
    match format {
        Fmt::Parquet => {
            let mut w =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
            batches.iter().for_each(|b| w.write(b).unwrap());
            w.close().unwrap();
        }
        Fmt::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(file);
            batches.iter().for_each(|b| w.write(b).unwrap());
        }
        Fmt::NdJson => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(file);
            batches.iter().for_each(|b| w.write(b).unwrap());
            w.finish().unwrap();
        }
        Fmt::Arrow => {
            let mut w = datafusion::arrow::ipc::writer::FileWriter::try_new(file, &schema).unwrap();
            batches.iter().for_each(|b| w.write(b).unwrap());
            w.finish().unwrap();
        }
        Fmt::Avro => {
            let mut w = arrow_avro::writer::AvroWriter::new(file, schema.as_ref().clone()).unwrap();
            batches.iter().for_each(|b| w.write(b).unwrap());
            w.finish().unwrap();
        }
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes the result of `sql` as one file `relative/part-0.<ext>`; returns the directory.
    pub fn table(&self, relative: &str, format: Fmt, sql: &str) -> String {
        self.table_file(
            &format!("{relative}/part-0.{}", format.extension()),
            format,
            sql,
        );
        format!("{}/", self.path(relative).display())
    }

    /// Writes the result of `sql` to exactly this file.
    pub fn table_file(&self, relative: &str, format: Fmt, sql: &str) -> String {
        let path = self.path(relative);
        write_batches(&sql_batches(sql), format, &path);
        path.display().to_string()
    }

    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// `dualrun compare` of table `t` with `--format json` and extra flags.
    pub fn compare(&self, batch: &str, stream: &str, sql: &str, extra: &[&str]) -> Run {
        let b = format!("t={batch}");
        let s = format!("t={stream}");
        let mut args = vec![
            "compare", "--batch", &b, "--stream", &s, "--sql", sql, "--format", "json",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

/// Asserts a user-facing failure: exit 2, the expected words on stderr, no panic or backtrace.
pub fn assert_trouble(run: &Run, expected: &str) {
    assert_eq!(
        run.code, 2,
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(expected),
        "stderr should contain {expected:?}:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "panic:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("internal error"),
        "internal error:\n{}",
        run.stderr
    );
}

/// A real S3-compatible server (moto, from PyPI, in the project's venv) on a free loopback
/// port, killed when dropped. `make test` installs it.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moto = std::env::var("DUALRUN_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
            });
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not start ({e}); `make test` installs moto[server] in .venv",
                    moto.display()
                )
            });
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 30,
                "moto_server did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    /// The standard AWS environment that points dualrun (and object_store) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "dualrun-test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    fn request(&self, method: &str, path: &str, body: Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("{}/{path}", self.endpoint);
        let status = runtime.block_on(async {
            let client = reqwest::Client::new();
            let request = match method {
                "PUT" => client.put(&url),
                _ => client.get(&url),
            };
            request.body(body).send().await.map(|r| r.status())
        });
        let status = status.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert!(status.is_success(), "{method} {url}: {status}");
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.request("PUT", bucket, Vec::new());
    }

    /// Uploads every file under `dir` to `bucket/prefix/…`, keeping relative paths.
    pub fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out)
                } else {
                    out.push(path)
                }
            }
        }
        let mut files = Vec::new();
        walk(dir, &mut files);
        for file in files {
            let relative = file
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            self.request(
                "PUT",
                &format!("{bucket}/{prefix}/{relative}"),
                std::fs::read(&file).unwrap(),
            );
        }
    }
}

/// The secret the tests give dualrun; it must never appear in anything dualrun prints.
pub const SECRET: &str = "s3cr3t-DO-NOT-PRINT-0123456789";

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Workspace {
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, String)]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_dualrun"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("dualrun starts");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn http(method: &str, url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let request = match method {
            "POST" => client.post(url),
            _ => client.get(url),
        };
        match request.send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    })
}

pub fn wait_until_up(url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if http("GET", url).0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not come up");
}

/// Rows whose Parquet statistics say min = max = 1.0: NaN is left out of them.
pub const NAN_AND_ONE: &str =
    "SELECT * FROM (VALUES (1, CAST('NaN' AS DOUBLE)), (2, 1.0)) AS t(id, x)";

/// Queries whose answers NaN changes if statistics stand in for the rows of `NAN_AND_ONE`.
pub const NAN_QUERIES: [&str; 4] = [
    "SELECT * FROM t",
    "SELECT id, x FROM t WHERE x > 5",
    "SELECT id FROM t WHERE x = 1.0",
    "SELECT max(x) AS most, count(*) AS n FROM t",
];

/// Asserts that `NAN_QUERIES` give the same answers over `batch` and `same` (both holding
/// `NAN_AND_ONE`): everything matches, with two rows for the whole table and one otherwise.
pub fn assert_nan_read_as_nan(ws: &Workspace, batch: &str, same: &str, extra: &[&str]) {
    for sql in NAN_QUERIES {
        let run = ws.compare(batch, same, sql, extra);
        assert_eq!(run.code, 0, "{sql}: {}{}", run.stdout, run.stderr);
        let rows = 1 + u64::from(sql == NAN_QUERIES[0]);
        assert_eq!(run.counts()[0], rows, "{sql}");
    }
}
