//! Test helpers: write real input files in every supported format (from SQL, through
//! DataFusion and arrow's own writers) and run the real `dualrun` binary on them.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn sql_batches(sql: &str) -> Vec<RecordBatch> {
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
        let output: Output = Command::new(env!("CARGO_BIN_EXE_dualrun"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("dualrun starts");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
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
