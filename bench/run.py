"""`make bench`: dualrun's keyed and keyless diffs on generated data, timed against DuckDB in the
same run, with the unfriendly shapes real pipelines produce.

Data (numpy, fixed seed; reused while its manifest matches): Parquet tables of N rows x 10
mixed columns under bench-data/ (5M) and bench-data-<N>m/ (1M, 20M, 50M). The batch side is
in key order in 8 files; the stream side is the same rows shuffled in 16 files, except that
0.1% differ: 0.05% changed in one or two columns, 0.025% missing, 0.025% extra. Next to the
5M data, variants: unsorted/ (batch shuffled too), replayed/ (unsorted, plus one stream
micro-batch of 0.1% of the rows delivered twice) and small-files/ (unsorted, stream in 1,000
files). manifest.json / variants.json record what was planted: every run's counts are checked
against it (rows, counts and, with a key, every column).

Stages (--stages, default all):
  unsorted  5M, keys unsorted on both sides: dualrun vs DuckDB's fastest way (one hash per row,
            bench/duckdb_diff.py --method rowhash) and its exact per-column join, and plain
            DataFusion running both (examples/datafusion_diff.rs: the engine's own floor); the replayed
            micro-batch against the unique-key time; 1,000 small files against DuckDB on them.
  twice     5M unsorted with the whole stream side delivered twice (every stream file twice: a
            sink replayed from the start), so every stream key repeats and every row pairs by
            occurrence: dualrun against DuckDB's per-column join on (key, row_number() per key
            in value order) on the same files (bench/duckdb_diff.py --method occurrence); and
            under the first two --limits (256MiB, 512MiB): peak RSS against the limit.
  limits    5M unsorted under --memory-limit 256MiB, 512MiB, 2GiB: peak RSS against the limit.
  scaling   1M / 5M / 20M / 50M, no memory limit.
  big       50M: no limit, under each limit, and keyless under 512MiB.
  wide      200K rows x 301 columns (id, 200 integer and 100 float columns with 1% NULLs), one
            Parquet row group of ~240 MB per side, keys unsorted on both sides: dualrun vs
            DuckDB's row hash on the same files.
  floats    10M float rows (batch 1 file in id order, stream the same rows shuffled in 50 files):
            GROUP BY SUM/AVG, STDDEV/VAR and COVAR/CORR with DataFusion's float aggregates against dualrun's
            exact ones, on 8 groups and on 1M groups; the exact ones must match, 20 of 20. Then the cost of
            control runs: --control 1 and 2 on that query and on the 5M unsorted row diff.
  changelog 10M upsert change rows over 2M keys (5% of keys deleted last, 1% of rows replayed,
            changes after the cut-off) against the batch snapshot: compaction + diff against a
            plain keyed diff of the compacted result; also under --memory-limit 512MiB. Peer:
            DuckDB compacting the same changes (QUALIFY row_number, and max_by) and diffing
            by row hash, next to its own plain diff (bench/duckdb_changelog.py).
  databases 1M rows in PostgreSQL (scripts/servers.sh starts it unless DUALRUN_TEST_PG_ADMIN
            names one) against the same rows in Parquet, keyed diff, with and without a WHERE
            on one day of ten; against `COPY ... TO STDOUT` of the same rows (the floor for
            getting them out of PostgreSQL); rows that came over the wire, from the report.
Each case runs --repeat times (3), all cases of a stage interleaved, each as a child process
whose wall time and peak RSS (wait4) are measured the same way; min and median are printed,
then every target with "met" or "MISSED".

Exit code: 0 when every count agrees with the planted data (a missed target is reported, not
failed); 1 when counts disagree; 2 when a tool could not run.

    .venv/bin/python bench/run.py --dualrun $CARGO_TARGET_DIR/release/dualrun [--stages ...]
"""

import argparse
import datetime as dt
import decimal
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

# Bump whenever the generated data would change, so stale bench-data/ is regenerated.
GENERATOR_VERSION = "1"
DEFAULT_SEED = 20261126
DEFAULT_ROWS = 5_000_000

# The divergence planted in the stream side: 0.1% of the rows in all.
CHANGED_FRACTION = 0.0005
MISSING_FRACTION = 0.00025
EXTRA_FRACTION = 0.00025

BATCH_FILES = 8
# The stream side is written as more, smaller files, like a streaming sink's output.
STREAM_FILES = 16
# Several row groups per file, so either engine can split a file across its threads.
ROW_GROUP_ROWS = 128 * 1024

# From this many rows on, the data is generated chunk by chunk (see generate_streaming).
STREAMING_MIN_ROWS = 10_000_000
# Where generate_streaming keeps the stream side's rows until each file is shuffled.
STREAM_TMP = "stream.tmp"

TARGET_RATIO = 1.0
TARGET_RSS_MIB = 1024
# With --memory-limit, dualrun's peak RSS is reported against this multiple of the limit.
LIMIT_RSS_FACTOR = 1.5

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("customer_id", pa.int64()),
        ("quantity", pa.int32()),
        ("amount", pa.float64()),
        ("price", pa.decimal128(12, 2)),
        ("region", pa.string()),
        ("comment", pa.string()),
        ("is_member", pa.bool_()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("ship_date", pa.date32()),
    ]
)
KEY = "id"
VALUE_COLUMNS = [f.name for f in SCHEMA if f.name != KEY]

REGIONS = 50
ADJECTIVES = ["late", "damaged", "gift-wrapped", "express", "partial", "re-routed", "standard",
              "fragile", "oversized", "priority"]
NOUNS = ["delivery", "package", "refund request", "address change", "pickup", "return",
         "invoice question", "exchange"]
EPOCH_2026_US = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
YEAR_US = 365 * 86_400 * 1_000_000
DAY_US = 86_400 * 1_000_000


# --------------------------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------------------------

def make_rows(rng, ids):
    """A table of realistic order-like rows for the given keys, with a few NULLs (and NaNs).

    Built column-wise with numpy and Arrow kernels: 5M rows take seconds, not minutes.
    """
    n = len(ids)

    def nulls(fraction):
        return rng.random(n) < fraction

    customer_id = rng.integers(1, 2_000_000, n, dtype=np.int64)
    quantity = pa.array(rng.integers(1, 21, n, dtype=np.int32), mask=nulls(0.01))
    amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
    amount[nulls(0.0001)] = np.nan  # NaN equals NaN for both tools: it must not count as a diff
    amount = pa.array(amount, mask=nulls(0.02))
    # decimal128 straight from integer cents: the 16-byte little-endian two's complement value.
    cents = rng.integers(99, 500_000, n, dtype=np.int64)
    words = np.zeros((n, 2), dtype=np.int64)
    words[:, 0] = cents
    price = pa.Array.from_buffers(pa.decimal128(12, 2), n, [None, pa.py_buffer(words)])
    # A skewed categorical, the kind a real dimension column has.
    weights = 1.0 / np.arange(1, REGIONS + 1)
    region_index = rng.choice(REGIONS, n, p=weights / weights.sum())
    region = pa.array([f"region_{k}" for k in range(REGIONS)]).take(pa.array(region_index))
    # Longer free text, NULL for most orders.
    adjective = pa.array(ADJECTIVES).take(pa.array(rng.integers(0, len(ADJECTIVES), n)))
    noun = pa.array(NOUNS).take(
        pa.array(rng.integers(0, len(NOUNS), n), mask=nulls(0.7)))
    ticket = pc.cast(pa.array(rng.integers(100_000, 1_000_000, n)), pa.string())
    comment = pc.binary_join_element_wise(
        adjective, noun, "for customer", pc.cast(pa.array(customer_id), pa.string()),
        "- ticket", ticket, " ")
    is_member = pa.array(rng.random(n) < 0.35, mask=nulls(0.05))
    created_us = EPOCH_2026_US + rng.integers(0, YEAR_US, n, dtype=np.int64)
    created_at = pa.array(created_us).cast(pa.timestamp("us", tz="UTC"))
    ship_days = (created_us // DAY_US + rng.integers(0, 8, n)).astype(np.int32)
    ship_date = pa.array(ship_days, mask=nulls(0.10)).cast(pa.date32())
    return pa.Table.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(customer_id), quantity, amount, price, region,
         comment, is_member, created_at, ship_date],
        schema=SCHEMA,
    )


# The value a NULL becomes when a changed row gets one.
FILL = {
    "customer_id": 1,
    "quantity": 1,
    "amount": 1.0,
    "price": decimal.Decimal("1.00"),
    "region": "region_0",
    "comment": "added later",
    "is_member": False,
    "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    "ship_date": dt.date(2026, 1, 2),
}


def changed_value(column, value, rng):
    """A value that is certainly IS DISTINCT FROM `value`, as a buggy pipeline would write it."""
    if value is None:
        return FILL[column]
    if rng.random() < 0.1:
        return None  # a dropped value
    if column in ("customer_id", "quantity"):
        return value + 1
    if column == "amount":
        return 0.5 if value != value else round(value + 0.01, 2)  # value != value: NaN
    if column == "price":
        return value + decimal.Decimal("0.01")
    if column == "region":
        return f"region_{(int(value.split('_')[1]) + 1) % REGIONS}"
    if column == "comment":
        return value + " (edited)"
    if column == "is_member":
        return not value
    if column == "created_at":
        return value + dt.timedelta(seconds=1)
    if column == "ship_date":
        return value + dt.timedelta(days=1)
    raise ValueError(column)


def choose_columns(rows, rng):
    """Which one or two value columns each of `rows` gets changed in: {column: [row, ...]}."""
    by_column = {c: [] for c in VALUE_COLUMNS}
    for row in rows:
        for column in rng.choice(VALUE_COLUMNS, 1 if rng.random() < 0.7 else 2, replace=False):
            by_column[str(column)].append(int(row))
    return by_column


def apply_changes(table, by_column, rng):
    """Replaces, in each column, the value of the rows `by_column` lists (indices into `table`)."""
    for column in VALUE_COLUMNS:
        targets = sorted(by_column[column])
        if not targets:
            continue
        array = table.column(column).combine_chunks()
        old = array.take(pa.array(targets)).to_pylist()
        new = pa.array([changed_value(column, v, rng) for v in old], type=array.type)
        mask = np.zeros(len(array), dtype=bool)
        mask[targets] = True
        array = pc.replace_with_mask(array, pa.array(mask), new)
        table = table.set_column(table.schema.get_field_index(column), SCHEMA.field(column), array)
    return table


def plant_changes(table, rows, rng):
    """Changes one or two columns of each of `rows`; returns the table and per-column counts."""
    by_column = choose_columns(rows, rng)
    table = apply_changes(table, by_column, rng)
    return table, {c: len(by_column[c]) for c in VALUE_COLUMNS}


def write_parts(table, directory, files):
    directory.mkdir(parents=True)
    per_file = -(-table.num_rows // files)
    names = []
    for i in range(files):
        part = table.slice(i * per_file, per_file)
        if part.num_rows == 0:
            break
        name = f"part-{i:05d}.parquet"
        pq.write_table(part, directory / name, row_group_size=ROW_GROUP_ROWS)
        names.append(name)
    return names


def manifest_is_current(data_dir, rows, seed, generator):
    path = data_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    wanted = {"generator_version": GENERATOR_VERSION, "rows": rows, "seed": seed}
    if any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    if manifest.get("generator", "in-memory") != generator:
        return None
    for side in ("batch", "stream"):
        for name, size in manifest["files"][side].items():
            file = data_dir / side / name
            if not file.is_file() or file.stat().st_size != size:
                return None
    return manifest


def generator_for(rows, choice="auto"):
    if choice != "auto":
        return choice
    return "in-memory" if rows < STREAMING_MIN_ROWS else "streaming"


def generate(data_dir, rows, seed, generator):
    """Writes batch/, stream/ and manifest.json (last, so an interrupted run regenerates).

    Below STREAMING_MIN_ROWS the tables are built whole in memory (about 1.6 GB per 5M rows);
    from there on they are generated and written chunk by chunk (generate_streaming), so that
    50M rows fit in a few hundred MB. The two produce different data for the same seed (their
    random draws are ordered differently), which is why the choice depends on --rows alone.
    """
    started = time.perf_counter()
    changed_n = max(1, round(rows * CHANGED_FRACTION))
    missing_n = max(1, round(rows * MISSING_FRACTION))
    extra_n = max(1, round(rows * EXTRA_FRACTION))
    clear_outputs(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if generator == "in-memory":
        files, row_counts, column_counts = generate_in_memory(
            data_dir, rows, seed, changed_n, missing_n, extra_n)
    else:
        files, row_counts, column_counts = generate_streaming(
            data_dir, rows, seed, changed_n, missing_n, extra_n)

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "generator": generator,
        "rows": rows,
        "seed": seed,
        "columns": [f.name for f in SCHEMA],
        "files": files,
        "expected": {
            "rows": row_counts,
            "counts": {
                "matched": rows - changed_n - missing_n,
                "missing_in_stream": missing_n,
                "extra_in_stream": extra_n,
                "mismatched": changed_n,
            },
            "columns": column_counts,
        },
    }
    (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(sum(f.values()) for f in files.values())
    print(f"generated {data_dir} ({generator}) in {time.perf_counter() - started:.1f} s "
          f"({size / 2**20:.0f} MiB of Parquet)", flush=True)
    return manifest


def clear_outputs(data_dir):
    """Removes what generate writes (and nothing else: --data-dir may hold other things)."""
    for path in (data_dir / "manifest.json", data_dir / "batch", data_dir / "stream",
                 data_dir / STREAM_TMP):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate_in_memory(data_dir, rows, seed, changed_n, missing_n, extra_n):
    """Both tables whole in memory: the original generator, kept as is for the default 5M data."""
    rng = np.random.default_rng(seed)
    # Batch keys are the even numbers; extra stream rows take odd ones, so they are new keys.
    ids = np.arange(rows, dtype=np.int64) * 2 + 1_000_000
    batch = make_rows(rng, ids)

    picked = rng.choice(rows, changed_n + missing_n, replace=False)
    changed_rows, missing_rows = picked[:changed_n], picked[changed_n:]
    stream, column_counts = plant_changes(batch, changed_rows, rng)
    keep = np.ones(rows, dtype=bool)
    keep[missing_rows] = False
    stream = stream.filter(pa.array(keep))
    extra_ids = rng.choice(rows, extra_n, replace=False).astype(np.int64) * 2 + 1_000_001
    extra = make_rows(np.random.default_rng([seed, 1]), extra_ids)
    stream = pa.concat_tables([stream, extra])
    # Streams deliver rows in arrival order, not key order.
    stream = stream.take(pa.array(rng.permutation(stream.num_rows)))

    files = {}
    for side, table, count in (("batch", batch, BATCH_FILES), ("stream", stream, STREAM_FILES)):
        names = write_parts(table, data_dir / side, count)
        files[side] = {name: (data_dir / side / name).stat().st_size for name in names}
    return files, {"batch": batch.num_rows, "stream": stream.num_rows}, column_counts


def generate_streaming(data_dir, rows, seed, changed_n, missing_n, extra_n):
    """The same kind of data as generate_in_memory, never holding more than one stream file.

    1. A global plan from np.random.default_rng(seed): which batch rows are changed (and in
       which columns) or missing, and which odd keys are extra; O(planted rows) memory.
    2. The batch side, in key order, one chunk of ROW_GROUP_ROWS at a time, each chunk from its
       own generator default_rng([seed, 2, first row]): written as a row group of its batch
       file; its stream copy gets the planted changes and drops the missing rows, then each of
       its rows goes to a random one of STREAM_FILES buckets (Arrow IPC files in STREAM_TMP).
    3. The extra rows are spread over the buckets the same way; then each bucket is read back,
       shuffled and written as one stream file. Random bucket plus shuffle within it is a
       uniformly random arrival order, as the in-memory generator's global permutation is.
    """
    rng = np.random.default_rng(seed)
    picked = rng.choice(rows, changed_n + missing_n, replace=False)
    changed_rows, missing_rows = picked[:changed_n], picked[changed_n:]
    by_column = choose_columns(changed_rows, rng)
    column_counts = {c: len(by_column[c]) for c in VALUE_COLUMNS}
    # (row, column) pairs sorted by row, so each chunk finds its own with searchsorted.
    change_rows = np.array([r for c in VALUE_COLUMNS for r in by_column[c]], dtype=np.int64)
    change_cols = np.array([i for i, c in enumerate(VALUE_COLUMNS) for _ in by_column[c]],
                           dtype=np.int64)
    order = np.argsort(change_rows, kind="stable")
    change_rows, change_cols = change_rows[order], change_cols[order]
    missing_rows = np.sort(missing_rows)
    extra_ids = rng.choice(rows, extra_n, replace=False).astype(np.int64) * 2 + 1_000_001

    tmp = data_dir / STREAM_TMP
    tmp.mkdir(parents=True)
    ipc_options = pa.ipc.IpcWriteOptions(compression="lz4")
    buckets = [pa.ipc.new_file(str(tmp / f"bucket-{b:05d}.arrow"), SCHEMA, options=ipc_options)
               for b in range(STREAM_FILES)]

    def to_buckets(table, bucket_rng):
        bucket = bucket_rng.integers(0, STREAM_FILES, table.num_rows)
        order = np.argsort(bucket, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=STREAM_FILES))])
        table = table.take(pa.array(order))
        for b in range(STREAM_FILES):
            if bounds[b + 1] > bounds[b]:
                buckets[b].write_table(table.slice(bounds[b], bounds[b + 1] - bounds[b]))

    batch_dir = data_dir / "batch"
    batch_dir.mkdir(parents=True)
    files = {"batch": {}, "stream": {}}
    per_file = -(-rows // BATCH_FILES)
    stream_rows = 0
    for i in range(BATCH_FILES):
        first, last = i * per_file, min((i + 1) * per_file, rows)
        if first >= last:
            break
        name = f"part-{i:05d}.parquet"
        with pq.ParquetWriter(batch_dir / name, SCHEMA) as writer:
            for start in range(first, last, ROW_GROUP_ROWS):
                end = min(start + ROW_GROUP_ROWS, last)
                chunk_rng = np.random.default_rng([seed, 2, start])
                ids = np.arange(start, end, dtype=np.int64) * 2 + 1_000_000
                chunk = make_rows(chunk_rng, ids)
                writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)

                lo, hi = np.searchsorted(change_rows, [start, end])
                local = {c: [] for c in VALUE_COLUMNS}
                for row, col in zip(change_rows[lo:hi], change_cols[lo:hi]):
                    local[VALUE_COLUMNS[col]].append(int(row) - start)
                stream = apply_changes(chunk, local, chunk_rng)
                lo, hi = np.searchsorted(missing_rows, [start, end])
                if hi > lo:
                    keep = np.ones(end - start, dtype=bool)
                    keep[missing_rows[lo:hi] - start] = False
                    stream = stream.filter(pa.array(keep))
                stream_rows += stream.num_rows
                to_buckets(stream, chunk_rng)
        files["batch"][name] = (batch_dir / name).stat().st_size
        print(f"  batch {name}: rows {first:,}..{last:,} written", flush=True)

    extra = make_rows(np.random.default_rng([seed, 1]), extra_ids)
    stream_rows += extra.num_rows
    to_buckets(extra, rng)
    for writer in buckets:
        writer.close()

    stream_dir = data_dir / "stream"
    stream_dir.mkdir(parents=True)
    for b in range(STREAM_FILES):
        path = tmp / f"bucket-{b:05d}.arrow"
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        # Streams deliver rows in arrival order, not key order.
        permutation = np.random.default_rng([seed, 3, b]).permutation(table.num_rows)
        table = table.take(pa.array(permutation))
        name = f"part-{b:05d}.parquet"
        pq.write_table(table, stream_dir / name, row_group_size=ROW_GROUP_ROWS)
        del table
        path.unlink()
        files["stream"][name] = (stream_dir / name).stat().st_size
    tmp.rmdir()
    assert stream_rows == rows - missing_n + extra_n, (stream_rows, rows, missing_n, extra_n)
    print(f"  stream: {stream_rows:,} rows in {STREAM_FILES} files written", flush=True)
    return files, {"batch": rows, "stream": stream_rows}, column_counts


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    wall: float
    rss_mib: float
    exit_code: int
    stdout: str
    stderr: str


# Runs argv[2:] and writes "wall_seconds max_rss_kib exit_code" to the file argv[1]. It runs as a
# small Python of its own (-I -S: no site packages) because Linux carries the RSS high-water mark
# of the process that execs over into the new program's ru_maxrss: measured straight from this
# process (numpy, pyarrow, maybe 1.6 GB of data generation behind it), every tool would seem at
# least that large. The launcher's own mark is a few MiB.
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write("%r %d %d" % (wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


def measure(cmd):
    """Runs `cmd` to completion: its wall time and the peak RSS of that process alone.

    Output goes to temporary files rather than pipes, so a chatty child cannot block on a full
    pipe while it is waited on; wait4 gives the child's own rusage (ru_maxrss in KiB on Linux).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as result:
        subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, result.name, *cmd],
                       stdout=out, stderr=err, check=True)
        wall, rss_kib, exit_code = result.read().split()
        out.seek(0)
        err.seek(0)
        return Run(float(wall), int(rss_kib) / 1024, int(exit_code),
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


class ToolError(Exception):
    pass


def dualrun_counts(run):
    """Counts from dualrun's JSON report; exit 1 (diverged) is the expected verdict here."""
    if run.exit_code not in (0, 1):
        raise ToolError(f"dualrun exited {run.exit_code}:\n{run.stderr.strip()}")
    try:
        check = json.loads(run.stdout)["checks"][0]
    except (ValueError, KeyError, IndexError) as e:
        raise ToolError(f"dualrun printed no JSON report ({e}):\n{run.stdout[:2000]}") from e
    if check.get("error"):
        raise ToolError(f"dualrun check failed: {check['error']}")
    counts = {k: check["counts"][k]
              for k in ("matched", "missing_in_stream", "extra_in_stream", "mismatched")}
    if check["counts"]["duplicate_keys_batch"] or check["counts"]["duplicate_keys_stream"]:
        counts["duplicate_keys"] = [check["counts"]["duplicate_keys_batch"],
                                    check["counts"]["duplicate_keys_stream"]]
    return {
        "rows": check["rows"],
        "counts": counts,
        "columns": {c["name"]: c["mismatched"] for c in check["columns"]},
    }, check.get("duration_seconds")


def peer_counts(run):
    if run.exit_code != 0:
        raise ToolError(f"the peer exited {run.exit_code}:\n{run.stderr.strip()}")
    try:
        result = json.loads(run.stdout)
    except ValueError as e:
        raise ToolError(f"the peer printed no JSON ({e}):\n{run.stdout[:2000]}") from e
    return {k: result[k] for k in ("rows", "counts", "columns")}, result.get("query_seconds")


def warm_page_cache(data_dir):
    """Reads every data file once, so the first timed run does not pay for a cold disk alone."""
    for path in sorted(data_dir.glob("*/*.parquet")):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def parse_size(text):
    """Bytes in a size like dualrun's --memory-limit takes: 512MiB, 2GiB, 256M, 1024 (binary)."""
    number = text.strip().rstrip("iIbB")
    shift = {"k": 10, "m": 20, "g": 30, "t": 40}.get(number[-1:].lower(), 0)
    if shift:
        number = number[:-1]
    try:
        value = float(number) * (1 << shift)
    except ValueError:
        raise ValueError(f"--memory-limit {text!r} does not parse: expected e.g. 512MiB") from None
    if not value >= 1:
        raise ValueError(f"--memory-limit {text!r} must be at least one byte")
    return int(value)


def differences(expected, actual, path=""):
    """Human-readable list of where two count dicts disagree."""
    out = []
    for key in sorted(set(expected) | set(actual)):
        e, a = expected.get(key), actual.get(key)
        where = f"{path}.{key}" if path else key
        if isinstance(e, dict) and isinstance(a, dict):
            out += differences(e, a, where)
        elif e != a:
            out.append(f"{where}: expected {e}, got {a}")
    return out


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Variants of the generated data: the unfriendly shapes real pipelines write
# --------------------------------------------------------------------------------------------

# Files a replayed micro-batch or a many-small-files stream side is cut into.
SMALL_FILES = 1000
REPLAY_FRACTION = 0.001


def link_files(source, target):
    """Hard links every Parquet file of `source` into a new directory `target`."""
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.parquet")):
        os.link(path, target / path.name)


def derive_variants(data_dir, manifest, seed):
    """Writes, next to batch/ and stream/, the variants the benchmark also runs on:
      unsorted/     batch rows shuffled (no key order on either side), stream as generated;
      replayed/     unsorted, plus one stream micro-batch of 0.1% of the rows delivered twice
                    (at-least-once delivery): each of those keys is duplicated on the stream side;
      small-files/  unsorted, with the stream side cut into 1,000 small files.
    Returns {variant: expected counts}. Reused while variants.json matches the base manifest.
    """
    marker = data_dir / "variants.json"
    stamp = {"base": manifest["files"], "seed": seed, "version": 1}
    try:
        known = json.loads(marker.read_text())
        if known.get("stamp") == stamp:
            return known["expected"]
    except (OSError, ValueError):
        pass
    for name in ("unsorted", "replayed", "small-files"):
        if (data_dir / name).exists():
            shutil.rmtree(data_dir / name)
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 7])
    batch = pq.read_table(data_dir / "batch")
    batch = batch.take(pa.array(rng.permutation(batch.num_rows)))
    write_parts(batch, data_dir / "unsorted" / "batch", BATCH_FILES)
    del batch
    link_files(data_dir / "stream", data_dir / "unsorted" / "stream")

    link_files(data_dir / "unsorted" / "batch", data_dir / "replayed" / "batch")
    link_files(data_dir / "stream", data_dir / "replayed" / "stream")
    first = sorted((data_dir / "stream").glob("*.parquet"))[STREAM_FILES // 2]
    part = pq.read_table(first)
    replay_rows = max(1, round(manifest["rows"] * REPLAY_FRACTION))
    start = part.num_rows // 3
    pq.write_table(part.slice(start, replay_rows),
                   data_dir / "replayed" / "stream" / "part-replay-00000.parquet")
    del part

    link_files(data_dir / "unsorted" / "batch", data_dir / "small-files" / "batch")
    stream = pq.read_table(data_dir / "stream")
    write_parts(stream, data_dir / "small-files" / "stream", SMALL_FILES)
    del stream

    base = manifest["expected"]
    replayed = json.loads(json.dumps(base))
    replayed["rows"]["stream"] += replay_rows
    replayed["counts"]["extra_in_stream"] += replay_rows
    replayed["counts"]["duplicate_keys"] = [0, replay_rows]
    expected = {"unsorted": base, "replayed": replayed, "small-files": base}
    marker.write_text(json.dumps({"stamp": stamp, "expected": expected}, indent=2) + "\n")
    print(f"derived unsorted/, replayed/ and small-files/ in {time.perf_counter() - started:.1f} s",
          flush=True)
    return expected


def delivered_twice(data_dir, expected):
    """Writes twice/: the unsorted variant with every stream file hard-linked twice, as a sink
    replayed from the start writes it. Returns its expected counts (every stream row is one
    extra copy of itself; a key's copies pair with the one batch row as before)."""
    target = data_dir / "twice"
    if target.exists():
        shutil.rmtree(target)
    link_files(data_dir / "unsorted" / "batch", target / "batch")
    (target / "stream").mkdir(parents=True)
    for path in sorted((data_dir / "unsorted" / "stream").glob("*.parquet")):
        for copy in ("a", "b"):
            os.link(path, target / "stream" / f"{copy}-{path.name}")
    twice = json.loads(json.dumps(expected))
    stream_rows = twice["rows"]["stream"]
    twice["rows"]["stream"] = 2 * stream_rows
    twice["counts"]["extra_in_stream"] += stream_rows
    twice["counts"]["duplicate_keys"] = [0, stream_rows]
    return twice


def keyless_expected(expected):
    """What a keyless (multiset) diff of the same data finds: a changed row is one row missing
    and one extra; per-column counts do not exist without a key."""
    c = expected["counts"]
    changed = c["mismatched"]
    return {
        "rows": expected["rows"],
        "counts": {
            "matched": c["matched"],
            "missing_in_stream": c["missing_in_stream"] + changed,
            "extra_in_stream": c["extra_in_stream"] + changed,
            "mismatched": 0,
        },
    }


# --------------------------------------------------------------------------------------------
# Stages: cases measured interleaved, their figures and the targets they are held to
# --------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    cmd: list
    parse: object
    expected: dict
    limit: str = None


@dataclass
class Figures:
    best: float
    median: float
    rss_max: float
    rss_median: float


def compare_counts(expected, counts):
    """Where a tool's counts disagree with what was planted (only the keys both have)."""
    keys = [k for k in ("rows", "counts", "columns") if expected.get(k) is not None
            and counts.get(k) is not None]
    return differences({k: expected[k] for k in keys}, {k: counts[k] for k in keys})


def run_stage(title, cases, repeat, log):
    """Runs every case `repeat` times, interleaved (drift of a shared machine hits all alike).
    Returns {name: Figures}; raises ToolError when a tool fails or its counts are wrong."""
    print(f"\n== {title}", flush=True)
    for case in cases:
        print(f"  {case.name}: $ {shlex.join(case.cmd)}", flush=True)
    runs = {case.name: [] for case in cases}
    for i in range(repeat):
        line = []
        for case in cases:
            run = measure(case.cmd)
            try:
                counts, _ = case.parse(run)
            except ToolError as e:
                raise ToolError(f"{case.name}: {e} (after {run.wall:.1f} s, peak RSS "
                                f"{run.rss_mib:.0f} MiB)") from None
            wrong = compare_counts(case.expected, counts)
            if wrong:
                raise ToolError(f"{case.name}: counts DISAGREE with the planted data: "
                                + "; ".join(wrong[:10]))
            runs[case.name].append(run)
            line.append(f"{case.name} {run.wall:.2f} s {run.rss_mib:.0f} MiB")
        print(f"  run {i + 1}/{repeat}: " + " | ".join(line), flush=True)
    figures = {}
    rows = []
    for case in cases:
        walls = [r.wall for r in runs[case.name]]
        rss = [r.rss_mib for r in runs[case.name]]
        f = Figures(min(walls), statistics.median(walls), max(rss), statistics.median(rss))
        figures[case.name] = f
        limit = ""
        if case.limit:
            limit = f"{f.rss_max * 2**20 / parse_size(case.limit):.2f}"
        rows.append([case.name, f"{f.best:.2f}", f"{f.median:.2f}", f"{f.rss_max:.0f}", limit])
        log.append({"stage": title, "case": case.name, "walls": walls, "rss_mib": rss,
                    "memory_limit": case.limit})
    print(table(rows, ["case", "best s", "median s", "peak RSS MiB", "RSS/limit"]))
    return figures


class Targets:
    """Collects target lines; a missed target is reported, not failed (counts fail)."""

    def __init__(self):
        self.lines = []

    def check(self, what, value, bound, unit=""):
        ok = value <= bound
        self.lines.append(f"{'met   ' if ok else 'MISSED'}  {what}: {value:.2f}{unit} "
                          f"(target <= {bound:g}{unit})")
        print("  " + self.lines[-1], flush=True)
        return ok


EXTRA_ARGS = []


def dualrun_cmd(binary, batch, stream, key=True, limit=None, extra=()):
    cmd = [str(binary), "compare", "--batch", f"t={batch}/", "--stream", f"t={stream}/",
           "--sql", "SELECT * FROM t", "--format", "json"]
    if key:
        cmd += ["--key", KEY]
    if limit:
        cmd += ["--memory-limit", limit]
    return cmd + list(extra) + EXTRA_ARGS


def duckdb_cmd(batch, stream, method, threads):
    return [sys.executable, str(Path(__file__).with_name("duckdb_diff.py")), "--batch",
            str(batch), "--stream", str(stream), "--key", KEY, "--threads", str(threads),
            "--method", method]


def datafusion_cmd(dualrun, batch, stream, method):
    """Plain DataFusion's keyed diff (examples/datafusion_diff.rs, built by `make bench` next to
    the dualrun binary): the engine's own speed on the same files, without dualrun."""
    example = Path(dualrun).parent / "examples" / "datafusion_diff"
    return [str(example), "--batch", str(batch), "--stream", str(stream), "--key", KEY,
            "--method", method]


def dataset(data_dir, rows, seed, generator="auto"):
    generator = generator_for(rows, generator)
    manifest = manifest_is_current(data_dir, rows, seed, generator)
    if manifest:
        print(f"reusing {data_dir} ({rows:,} rows, seed {seed}, {generator} generator)")
        return manifest
    return generate(data_dir, rows, seed, generator)


STAGES = ("unsorted", "twice", "limits", "scaling", "big", "wide", "floats", "changelog", "databases")

DATABASE_ROWS = 1_000_000
DATABASE_DAY = "2026-11-25"


def database_dataset(data_dir, seed, admin):
    """1M rows over ten days in Parquet and, the same rows, in PostgreSQL table bench.events
    (loaded with COPY); returns the PostgreSQL URL of the database holding it."""
    rng = np.random.default_rng(seed)
    n = DATABASE_ROWS
    days = np.datetime64("2026-11-16") + rng.integers(0, 10, n).astype("timedelta64[D]")
    table = pa.table({
        "id": np.arange(n, dtype=np.int64),
        "dt": pa.array(days.astype("datetime64[D]"), pa.date32()),
        "amount": pa.array([decimal.Decimal(int(c)) / 100 for c in rng.integers(0, 10**7, n)],
                           pa.decimal128(12, 2)),
        "status": np.array(["new", "paid", "shipped", "returned"])[rng.integers(0, 4, n)],
        "ts": pa.array(days.astype("datetime64[us]")
                       + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]"),
                       pa.timestamp("us")),
    })
    shutil.rmtree(data_dir, ignore_errors=True)
    write_parts(table.take(rng.permutation(n)), data_dir / "parquet", 4)
    csv = data_dir / "events.csv"
    import pyarrow.csv as pacsv
    pacsv.write_csv(table, csv, pacsv.WriteOptions(include_header=False))
    url = admin.rsplit("/", 1)[0] + "/dualrun_bench"
    subprocess.run(["psql", admin, "-q", "-c", "DROP DATABASE IF EXISTS dualrun_bench",
                    "-c", "CREATE DATABASE dualrun_bench"], check=True)
    subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    "CREATE SCHEMA bench; CREATE TABLE bench.events (id bigint PRIMARY KEY, "
                    "dt date, amount numeric(12, 2), status text, ts timestamp)",
                    "-c", f"\\copy bench.events FROM '{csv}' WITH (FORMAT csv)",
                    "-c", "CREATE INDEX ON bench.events (dt); ANALYZE bench.events"], check=True)
    return url


def database_verdict(rows):
    """The parse step of a database case: a match on `rows` rows, and the rows transferred."""
    def parse(run):
        if run.exit_code != 0:
            raise ToolError(f"dualrun exited {run.exit_code}:\n{run.stderr.strip()}")
        check = json.loads(run.stdout)["checks"][0]
        if check["status"] != "match" or check["counts"]["matched"] != rows:
            raise ToolError(f"counts DISAGREE: {check['status']} {check['counts']}")
        wire = sum(q["rows"] for q in check["scan"].get("database_queries", []))
        return {"wire_rows": wire}, check.get("duration_seconds")
    return parse


def copy_verdict(run):
    if run.exit_code != 0:
        raise ToolError(f"psql exited {run.exit_code}:\n{run.stderr.strip()}")
    return {}, None

CHANGELOG_ROWS = 10_000_000
CHANGELOG_KEYS = 2_000_000


def changelog_dataset(data_dir, seed):
    """An upsert change log and the snapshot it compacts to as of 2026-11-25 24:00."""
    marker = data_dir / "changelog.json"
    wanted = {"rows": CHANGELOG_ROWS, "keys": CHANGELOG_KEYS, "seed": seed, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {data_dir} ({CHANGELOG_ROWS:,} change rows)")
        return
    print(f"generating {data_dir} ({CHANGELOG_ROWS:,} change rows over {CHANGELOG_KEYS:,} keys)",
          flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(seed)
    cut = int(dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc).timestamp() * 1000)
    keys = np.concatenate([np.arange(CHANGELOG_KEYS, dtype=np.int64),
                           rng.integers(0, CHANGELOG_KEYS, CHANGELOG_ROWS - CHANGELOG_KEYS)])
    # Unique timestamps (a tie would be refused), 2% of them after the cut-off.
    ts = cut - 1 - rng.permutation(CHANGELOG_ROWS).astype(np.int64) * 7
    late = rng.random(CHANGELOG_ROWS) < 0.02
    ts[late] = cut + 1 + np.arange(late.sum(), dtype=np.int64)
    amount = np.round(rng.random(CHANGELOG_ROWS) * 1000, 2)
    status = np.array(["new", "paid", "shipped"])[rng.integers(0, 3, CHANGELOG_ROWS)]
    deleted = np.zeros(CHANGELOG_ROWS, dtype=bool)
    table = pa.table({"id": keys, "amount": amount, "status": status, "ts_ms": ts,
                      "deleted": deleted})
    # The latest change at or before the cut-off, per key; 5% of keys end deleted.
    order = np.lexsort((ts, keys))
    in_bound = ~late[order]
    sorted_keys = keys[order][in_bound]
    last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
    latest_rows = order[in_bound][last]
    gone = latest_rows[rng.random(len(latest_rows)) < 0.05]
    deleted[gone] = True
    table = table.set_column(4, "deleted", pa.array(deleted))
    snapshot = table.take(np.setdiff1d(latest_rows, gone)).drop_columns(["deleted"])
    replay = table.slice(0, CHANGELOG_ROWS // 100)
    shuffled = pa.concat_tables([table, replay]).take(rng.permutation(CHANGELOG_ROWS + replay.num_rows))
    write_parts(shuffled, data_dir / "changes", 20)
    write_parts(snapshot.sort_by("id"), data_dir / "snapshot", 4)
    write_parts(snapshot.take(rng.permutation(snapshot.num_rows)), data_dir / "compacted", 8)
    marker.write_text(json.dumps(wanted))


def changelog_config(data_dir, stream, changelog, limit=None):
    path = data_dir / f"changelog-{stream}-{'cl' if changelog else 'plain'}-{limit or 'none'}.toml"
    text = ("[params]\nrun_date = \"2026-11-25\"\n\n"
            + (f"[engine]\nmemory_limit = \"{limit}\"\n\n" if limit else "")
            + f"[tables.t]\nbatch = \"{data_dir / 'snapshot'}/\"\nstream = \"{data_dir / stream}/\"\n")
    if changelog:
        text += ('stream_changelog = { shape = "upsert", key = ["id"], order_by = ["ts_ms"], '
                 'deleted = "deleted" }\n')
    text += ('\n[[checks]]\nname = "t"\nsql = "SELECT id, amount, status, ts_ms FROM t"\n'
             'key = ["id"]\n')
    path.write_text(text)
    return path

FLOAT_ROWS = 10_000_000
FLOAT_QUERIES = {
    "8 groups": "SELECT g, SUM(x) AS s, AVG(x) AS a, COUNT(*) AS n FROM t GROUP BY g",
    "1M groups": "SELECT id % 1000000 AS bucket, SUM(x) AS s, AVG(x) AS a FROM t GROUP BY id % 1000000",
    "stddev, 8 groups": "SELECT g, STDDEV(x) AS sd, VAR_POP(x) AS vp FROM t GROUP BY g",
    "stddev, 1M groups": "SELECT id % 1000000 AS bucket, STDDEV(x) AS sd FROM t GROUP BY id % 1000000",
    "corr, 8 groups": "SELECT g, COVAR_SAMP(x, x + CAST(id % 997 AS DOUBLE)) AS c, "
                      "CORR(x, x + CAST(id % 997 AS DOUBLE)) AS r FROM t GROUP BY g",
    "corr, 1M groups": "SELECT id % 1000000 AS bucket, CORR(x, x + CAST(id % 997 AS DOUBLE)) AS r "
                       "FROM t GROUP BY id % 1000000",
}


def float_dataset(data_dir, seed):
    """10M rows (id, g, x): x spans 12 orders of magnitude with both signs, so the order of
    addition shows in the last bits of a naive sum."""
    marker = data_dir / "floats.json"
    wanted = {"rows": FLOAT_ROWS, "seed": seed, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {data_dir} ({FLOAT_ROWS:,} float rows)")
        return
    print(f"generating {data_dir} ({FLOAT_ROWS:,} float rows)", flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(seed)
    ids = np.arange(FLOAT_ROWS, dtype=np.int64)
    x = rng.lognormal(0.0, 1.0, FLOAT_ROWS) * 10.0 ** rng.integers(-6, 7, FLOAT_ROWS) \
        * np.where(rng.random(FLOAT_ROWS) < 0.3, -1.0, 1.0)
    table = pa.table({"id": ids, "g": ids % 8, "x": x})
    write_parts(table, data_dir / "batch", 1)
    write_parts(table.take(rng.permutation(FLOAT_ROWS)), data_dir / "stream", 50)
    marker.write_text(json.dumps(wanted))


WIDE_ROWS = 200_000
WIDE_INTS = 200
WIDE_FLOATS = 100


def wide_dataset(data_dir, seed):
    """A wide table (what an analytics team's fact tables look like): WIDE_ROWS rows of id,
    WIDE_INTS integer and WIDE_FLOATS float columns (1% NULLs), each side one file of one row
    group, rows shuffled on both sides. The stream differs in 0.1% of the rows changed in one
    column, 0.05% missing and 0.05% extra. Returns what was planted."""
    marker = data_dir / "wide.json"
    wanted = {"rows": WIDE_ROWS, "ints": WIDE_INTS, "floats": WIDE_FLOATS, "seed": seed,
              "version": 1}
    try:
        known = json.loads(marker.read_text())
        if known.get("wanted") == wanted:
            print(f"reusing {data_dir} ({WIDE_ROWS:,} rows x {1 + WIDE_INTS + WIDE_FLOATS} "
                  "columns)")
            return known["expected"]
    except (OSError, ValueError):
        pass
    print(f"generating {data_dir} ({WIDE_ROWS:,} rows x {1 + WIDE_INTS + WIDE_FLOATS} columns)",
          flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng([seed, 301])
    n = WIDE_ROWS
    names = [f"i{c:03d}" for c in range(WIDE_INTS)] + [f"f{c:03d}" for c in range(WIDE_FLOATS)]
    columns = {"id": np.arange(n, dtype=np.int64)}
    nulls = {}
    for c, name in enumerate(names):
        if c < WIDE_INTS:
            columns[name] = rng.integers(0, 10 ** rng.integers(2, 12), n, dtype=np.int64)
        else:
            columns[name] = np.round(rng.normal(0, 1000, n), 2)
            nulls[name] = rng.random(n) < 0.01
    changed_n, missing_n, extra_n = n // 1000, n // 2000, n // 2000
    picked = rng.choice(n, changed_n + missing_n, replace=False)
    changed, missing = picked[:changed_n], picked[changed_n:]
    stream = {k: v.copy() for k, v in columns.items()}
    stream_nulls = {k: v.copy() for k, v in nulls.items()}
    per_column = {name: 0 for name in names}
    for row, c in zip(changed, rng.integers(0, len(names), changed_n)):
        name = names[c]
        if name in stream_nulls and stream_nulls[name][row]:
            stream_nulls[name][row] = False
            stream[name][row] = 0.5
        else:
            stream[name][row] += 1
        per_column[name] += 1

    def table(values, null_masks, rows):
        arrays = {k: pa.array(v[rows], mask=null_masks[k][rows] if k in null_masks else None)
                  for k, v in values.items()}
        return pa.table(arrays)

    keep = np.setdiff1d(np.arange(n), missing)
    extra = {k: (np.arange(n, n + extra_n, dtype=np.int64) if k == "id"
                 else v[rng.integers(0, n, extra_n)]) for k, v in stream.items()}
    stream = {k: np.concatenate([v[keep], extra[k]]) for k, v in stream.items()}
    stream_nulls = {k: np.concatenate([v[keep], np.zeros(extra_n, bool)])
                    for k, v in stream_nulls.items()}
    for side, values, masks in (("batch", columns, nulls), ("stream", stream, stream_nulls)):
        rows = len(values["id"])
        (data_dir / side).mkdir(parents=True)
        pq.write_table(table(values, masks, rng.permutation(rows)),
                       data_dir / side / "part-00000.parquet", row_group_size=rows)
    expected = {
        "rows": {"batch": n, "stream": n - missing_n + extra_n},
        "counts": {"matched": n - missing_n - changed_n, "missing_in_stream": missing_n,
                   "extra_in_stream": extra_n, "mismatched": changed_n},
        "columns": per_column,
    }
    marker.write_text(json.dumps({"wanted": wanted, "expected": expected}))
    return expected


def float_config(data_dir, sql, aggregates, control=0):
    """A config running `sql` on both sides with the given float aggregates; its path."""
    digest = hashlib.sha256(sql.encode()).hexdigest()[:8]
    name = f"floats-{aggregates}-{digest}-c{control}.toml"
    path = data_dir / name
    path.write_text(
        f"[engine]\nfloat_aggregates = \"{aggregates}\"\n\n"
        f"[tables.t]\nbatch = \"{data_dir / 'batch'}/\"\nstream = \"{data_dir / 'stream'}/\"\n\n"
        f"[[checks]]\nname = \"floats\"\nsql = {json.dumps(sql)}\ncontrol = {control}\n"
        f"key = [\"{'g' if 'GROUP BY g' in sql else 'bucket'}\"]\n")
    return path


def float_verdict(must_match):
    """The parse step of a float case: a report, and (exact) a match with stable controls."""
    def parse(run):
        if run.exit_code not in (0, 1):
            raise ToolError(f"dualrun exited {run.exit_code}:\n{run.stderr.strip()}")
        check = json.loads(run.stdout)["checks"][0]
        if must_match and check["status"] != "match":
            raise ToolError(f"exact float aggregates DISAGREE on identical data: {check['status']} "
                            f"{check['counts']}")
        return {"status": check["status"]}, check.get("duration_seconds")
    return parse


def changelog_peer_verdict(run):
    """The parse step of a DuckDB changelog case: its counts, which must be a match."""
    if run.exit_code != 0:
        raise ToolError(f"duckdb_changelog.py exited {run.exit_code}:\n{run.stderr.strip()}")
    result = json.loads(run.stdout)
    if result["status"] != "match":
        raise ToolError(f"DuckDB's compaction DISAGREES with the snapshot: {result['counts']}")
    return {"status": result["status"]}, result.get("query_seconds")


def database_stage(args, b, targets, log):
    """PostgreSQL against Parquet, with the server scripts/servers.sh starts for the tests."""
    started = False
    env = {}
    if "DUALRUN_TEST_PG_ADMIN" not in os.environ:
        out = subprocess.run([str(ROOT / "scripts/servers.sh"), "start"], check=True,
                             capture_output=True, text=True).stdout
        started = True
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
    admin = os.environ.get("DUALRUN_TEST_PG_ADMIN") or env["DUALRUN_TEST_PG_ADMIN"]
    try:
        data_dir = args.data_root.resolve() / "bench-data-databases"
        url = database_dataset(data_dir, args.seed, admin)
        stream = f"t={url}?table=bench.events&sslmode=disable"
        columns = "id, dt, amount, status, ts"
        where = f"WHERE dt = DATE '{DATABASE_DAY}'"
        day_rows = pq.read_table(data_dir / "parquet", filters=[
            ("dt", "=", dt.date.fromisoformat(DATABASE_DAY))]).num_rows

        def compare(sql):
            return [str(b), "compare", "--batch", f"t={data_dir / 'parquet'}/", "--stream",
                    stream, "--sql", sql, "--key", "id", "--format", "json"] + EXTRA_ARGS

        cases = [
            Case("dualrun, whole table", compare(f"SELECT {columns} FROM t"),
                 database_verdict(DATABASE_ROWS), {}),
            Case("COPY TO STDOUT, whole table",
                 ["psql", url, "-c", f"COPY (SELECT {columns} FROM bench.events) TO STDOUT"],
                 copy_verdict, {}),
            Case("dualrun, one day", compare(f"SELECT {columns} FROM t {where}"),
                 database_verdict(day_rows), {}),
            Case("COPY TO STDOUT, one day",
                 ["psql", url, "-c",
                  f"COPY (SELECT {columns} FROM bench.events {where}) TO STDOUT"],
                 copy_verdict, {}),
        ]
        f = run_stage(f"{DATABASE_ROWS:,} rows in PostgreSQL vs Parquet", cases, args.repeat, log)
        for case, rows in ((cases[0], DATABASE_ROWS), (cases[2], day_rows)):
            wire = case.parse(measure(case.cmd))[0]["wire_rows"]
            print(f"  {case.name}: {wire:,} rows came over the wire for {rows:,} compared")
        print(f"  whole table: dualrun {f['dualrun, whole table'].best:.2f} s = "
              f"{f['dualrun, whole table'].best / f['COPY TO STDOUT, whole table'].best:.2f}x COPY; "
              f"one day: {f['dualrun, one day'].best:.2f} s = "
              f"{f['dualrun, one day'].best / f['COPY TO STDOUT, one day'].best:.2f}x COPY")
    finally:
        if started:
            subprocess.run([str(ROOT / "scripts/servers.sh"), "stop"], check=False)


def main():
    parser = argparse.ArgumentParser(
        description="Benchmark `dualrun compare` on generated keyed diffs, against DuckDB.")
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/dualrun"
    parser.add_argument("--dualrun", type=Path, default=default_bin,
                        help=f"the dualrun binary (default: {default_bin})")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run (default: all of {','.join(STAGES)})")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help="rows of the small data set (default: 5,000,000)")
    parser.add_argument("--big-rows", type=int, default=50_000_000,
                        help="rows of the big data set (default: 50,000,000)")
    parser.add_argument("--scaling", default="1000000,5000000,20000000,50000000",
                        help="row counts of the scaling table")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-root", type=Path, default=ROOT,
                        help="where bench-data-<rows>/ directories go (default: the checkout)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (default: 3)")
    parser.add_argument("--big-repeat", type=int, default=3,
                        help="timed runs per case at the big size (default: 3)")
    parser.add_argument("--duckdb-threads", type=int, default=2)
    parser.add_argument("--limits", default="256MiB,512MiB,2GiB",
                        help="memory limits measured at both sizes")
    parser.add_argument("--json", type=Path, help="also write every measured run here")
    parser.add_argument("--extra-args", default="",
                        help="more dualrun flags for every dualrun run, shell-quoted "
                             "(e.g. --engine ballista://host:50050)")
    parser.add_argument("--only-generate", action="store_true")
    args = parser.parse_args()
    EXTRA_ARGS.extend(shlex.split(args.extra_args))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")

    def data_dir(rows):
        return (args.data_root / ("bench-data" if rows == DEFAULT_ROWS else f"bench-data-{rows // 1_000_000}m")).resolve()

    small_dir = data_dir(args.rows)
    # The 5M data and its variants, unless only stages with data of their own run.
    needs_small = not set(stages) <= {"changelog", "databases", "wide"}
    small = dataset(small_dir, args.rows, args.seed) if needs_small else None
    variants = derive_variants(small_dir, small, args.seed) if needs_small else {}
    sizes = sorted({int(n) for n in args.scaling.split(",")} | {args.big_rows}) \
        if "scaling" in stages or "big" in stages else []
    manifests = {args.rows: small} if needs_small else {}
    for rows in sizes:
        if rows not in manifests and (rows == args.big_rows or "scaling" in stages):
            manifests[rows] = dataset(data_dir(rows), rows, args.seed)
    if args.only_generate:
        return 0
    if not os.access(args.dualrun, os.X_OK):
        print(f"bench: no dualrun binary at {args.dualrun} (build it: cargo build --release)",
              file=sys.stderr)
        return 2

    example = Path(datafusion_cmd(args.dualrun, "", "", "")[0])
    if "unsorted" in stages and not os.access(example, os.X_OK):
        print(f"bench: no DataFusion peer at {example} (build it: cargo build --release "
              f"--example datafusion_diff)", file=sys.stderr)
        return 2

    import duckdb  # only for its version in the header; the timed runs import it in a child
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"DuckDB {duckdb.__version__} with {args.duckdb_threads} threads; dualrun {args.dualrun}")
    if needs_small:
        c = small["expected"]["counts"]
        print(f"data: {args.rows:,} rows x {len(SCHEMA)} columns per side; stream differs in "
              f"{c['mismatched']:,} changed, {c['missing_in_stream']:,} missing, "
              f"{c['extra_in_stream']:,} extra rows")
    targets = Targets()
    log = []
    b = args.dualrun
    limits = [s.strip() for s in args.limits.split(",") if s.strip()]
    try:
        unsorted = replayed = None
        if "unsorted" in stages:
            warm_page_cache(small_dir)
            u, r, sf = (small_dir / v for v in ("unsorted", "replayed", "small-files"))
            cases = [
                Case("dualrun unsorted", dualrun_cmd(b, u / "batch", u / "stream"),
                     dualrun_counts, variants["unsorted"]),
                Case("duckdb rowhash", duckdb_cmd(u / "batch", u / "stream", "rowhash",
                                                  args.duckdb_threads),
                     peer_counts, variants["unsorted"]),
                Case("duckdb columns", duckdb_cmd(u / "batch", u / "stream", "columns",
                                                  args.duckdb_threads),
                     peer_counts, variants["unsorted"]),
                Case("datafusion rowhash",
                     datafusion_cmd(b, u / "batch", u / "stream", "rowhash"),
                     peer_counts, variants["unsorted"]),
                Case("datafusion columns",
                     datafusion_cmd(b, u / "batch", u / "stream", "columns"),
                     peer_counts, variants["unsorted"]),
                Case("dualrun replayed", dualrun_cmd(b, r / "batch", r / "stream"),
                     dualrun_counts, variants["replayed"]),
                Case("dualrun 1000 files", dualrun_cmd(b, sf / "batch", sf / "stream"),
                     dualrun_counts, variants["small-files"]),
                Case("duckdb rowhash 1000 files",
                     duckdb_cmd(sf / "batch", sf / "stream", "rowhash", args.duckdb_threads),
                     peer_counts, variants["small-files"]),
                Case("datafusion rowhash 1000 files",
                     datafusion_cmd(b, sf / "batch", sf / "stream", "rowhash"),
                     peer_counts, variants["small-files"]),
            ]
            f = run_stage(f"{args.rows:,} rows, keys unsorted on both sides", cases,
                          args.repeat, log)
            unsorted, replayed = f["dualrun unsorted"], f["dualrun replayed"]
            fastest = min(f["duckdb rowhash"].best, f["duckdb columns"].best)
            targets.check("unsorted: dualrun / DuckDB's fastest (best wall)",
                          unsorted.best / fastest, 1.0)
            print(f"  for reference: DuckDB's row hash / plain DataFusion's row hash "
                  f"{f['duckdb rowhash'].best / f['datafusion rowhash'].best:.2f}, "
                  f"dualrun / DataFusion's row hash "
                  f"{unsorted.best / f['datafusion rowhash'].best:.2f}, "
                  f"dualrun / DataFusion's per-column join "
                  f"{unsorted.best / f['datafusion columns'].best:.2f}; 1,000 files: dualrun / "
                  f"DataFusion's row hash "
                  f"{f['dualrun 1000 files'].best / f['datafusion rowhash 1000 files'].best:.2f}",
                  flush=True)
            targets.check("unsorted: dualrun peak RSS", unsorted.rss_max, 1024, " MiB")
            targets.check("replayed micro-batch: time / unique-key time (best)",
                          replayed.best / unsorted.best, 1.25)
            targets.check("replayed micro-batch: peak RSS / unique-key peak RSS",
                          replayed.rss_max / unsorted.rss_max, 1.25)
            targets.check("1,000 small files: dualrun / DuckDB rowhash on the same files",
                          f["dualrun 1000 files"].best / f["duckdb rowhash 1000 files"].best, 1.0)
        if "twice" in stages:
            expected = delivered_twice(small_dir, variants["unsorted"])
            peer_expected = json.loads(json.dumps(expected))
            del peer_expected["counts"]["duplicate_keys"]
            t = small_dir / "twice"
            warm_page_cache(t)
            cases = [
                Case("dualrun twice", dualrun_cmd(b, t / "batch", t / "stream"),
                     dualrun_counts, expected),
                Case("duckdb occurrence", duckdb_cmd(t / "batch", t / "stream", "occurrence",
                                                     args.duckdb_threads),
                     peer_counts, peer_expected),
            ] + [Case(f"dualrun twice {limit}", dualrun_cmd(b, t / "batch", t / "stream",
                                                            limit=limit),
                      dualrun_counts, expected, limit) for limit in limits[:2]]
            f = run_stage(f"{args.rows:,} rows, the stream side delivered twice", cases,
                          args.repeat, log)
            targets.check("stream delivered twice: dualrun / DuckDB's occurrence join (best)",
                          f["dualrun twice"].best / f["duckdb occurrence"].best, 1.0)
            for limit in limits[:2]:
                targets.check(f"stream delivered twice under {limit}: peak RSS / limit",
                              f[f"dualrun twice {limit}"].rss_max * 2**20 / parse_size(limit),
                              1.25)
        if "limits" in stages:
            u = small_dir / "unsorted"
            cases = [Case(f"dualrun {limit}", dualrun_cmd(b, u / "batch", u / "stream",
                                                          limit=limit),
                          dualrun_counts, variants["unsorted"], limit) for limit in limits]
            f = run_stage(f"{args.rows:,} rows unsorted under --memory-limit", cases,
                          args.repeat, log)
            for limit in limits:
                targets.check(f"{args.rows // 1_000_000}M under {limit}: peak RSS / limit",
                              f[f"dualrun {limit}"].rss_max * 2**20 / parse_size(limit), 1.25)
        scaling = {}
        if "scaling" in stages:
            cases = []
            for rows in sizes:
                d = data_dir(rows)
                cases.append(Case(f"dualrun {rows // 1_000_000}M",
                                  dualrun_cmd(b, d / "batch", d / "stream"), dualrun_counts,
                                  manifests[rows]["expected"]))
            repeat = args.repeat if max(sizes) <= 20_000_000 else args.big_repeat
            scaling = run_stage("scaling, no memory limit (batch side in key order)", cases,
                                repeat, log)
            base = scaling.get(f"dualrun {args.rows // 1_000_000}M")
            if base:
                for rows in sizes:
                    s = scaling[f"dualrun {rows // 1_000_000}M"]
                    print(f"  {rows:>12,} rows: {s.best:7.2f} s best, "
                          f"{s.best / base.best:5.2f}x the {args.rows // 1_000_000}M time for "
                          f"{rows / args.rows:g}x the rows; {s.rss_max:.0f} MiB")
        if "big" in stages:
            d = data_dir(args.big_rows)
            big = manifests[args.big_rows]["expected"]
            cases = [Case("keyed unlimited", dualrun_cmd(b, d / "batch", d / "stream"),
                          dualrun_counts, big)]
            cases += [Case(f"keyed {limit}", dualrun_cmd(b, d / "batch", d / "stream",
                                                         limit=limit),
                           dualrun_counts, big, limit) for limit in limits]
            cases.append(Case("keyless 512MiB",
                              dualrun_cmd(b, d / "batch", d / "stream", key=False,
                                          limit="512MiB"),
                              dualrun_counts, keyless_expected(big), "512MiB"))
            f = run_stage(f"{args.big_rows:,} rows", cases, args.big_repeat, log)
            five = scaling.get(f"dualrun {args.rows // 1_000_000}M")
            if five is None:
                five = run_stage(f"{args.rows:,} rows (the reference for the big runs)",
                                 [Case("dualrun", dualrun_cmd(b, small_dir / "batch",
                                                              small_dir / "stream"),
                                       dualrun_counts, small["expected"])], args.repeat, log)["dualrun"]
            n = args.big_rows // 1_000_000
            targets.check(f"{n}M unlimited: time / 5M time", f["keyed unlimited"].best / five.best, 12)
            targets.check(f"{n}M unlimited: peak RSS", f["keyed unlimited"].rss_max, 4096, " MiB")
            if "keyed 512MiB" in f:
                targets.check(f"{n}M under 512MiB: time / 5M unlimited time",
                              f["keyed 512MiB"].best / five.best, 12)
                targets.check(f"{n}M under 512MiB: peak RSS", f["keyed 512MiB"].rss_max, 640,
                              " MiB")
                targets.check(f"{n}M keyless under 512MiB: time / keyed under 512MiB",
                              f["keyless 512MiB"].best / f["keyed 512MiB"].best, 2)
            targets.check(f"{n}M keyless under 512MiB: peak RSS", f["keyless 512MiB"].rss_max,
                          640, " MiB")
            for limit in limits:
                targets.check(f"{n}M under {limit}: peak RSS / limit",
                              f[f"keyed {limit}"].rss_max * 2**20 / parse_size(limit), 1.25)
        if "wide" in stages:
            wd = args.data_root.resolve() / "bench-data-wide"
            wide = wide_dataset(wd, args.seed)
            warm_page_cache(wd)
            cases = [
                Case("dualrun wide", dualrun_cmd(b, wd / "batch", wd / "stream"),
                     dualrun_counts, wide),
                Case("duckdb rowhash wide", duckdb_cmd(wd / "batch", wd / "stream", "rowhash",
                                                       args.duckdb_threads),
                     peer_counts, wide),
            ]
            f = run_stage(f"{WIDE_ROWS:,} rows x {1 + WIDE_INTS + WIDE_FLOATS} columns, one row "
                          "group per side", cases, args.repeat, log)
            targets.check("wide: dualrun / DuckDB rowhash (best wall)",
                          f["dualrun wide"].best / f["duckdb rowhash wide"].best, 1.0)
            targets.check("wide: dualrun peak RSS / DuckDB's",
                          f["dualrun wide"].rss_max / f["duckdb rowhash wide"].rss_max, 1.0)
        if "floats" in stages:
            fd = args.data_root.resolve() / "bench-data-floats"
            float_dataset(fd, args.seed)
            warm_page_cache(fd)
            run_cmd = lambda config: [str(b), "run", "--config", str(config), "--no-history",
                                      "--format", "json"] + EXTRA_ARGS
            cases = []
            for label, sql in FLOAT_QUERIES.items():
                cases.append(Case(f"builtin {label}", run_cmd(float_config(fd, sql, "builtin")),
                                  float_verdict(False), {}))
                cases.append(Case(f"exact {label}", run_cmd(float_config(fd, sql, "exact")),
                                  float_verdict(True), {}))
            for control in (1, 2):
                cases.append(Case(f"exact 8 groups, control {control}",
                                  run_cmd(float_config(fd, FLOAT_QUERIES["8 groups"], "exact",
                                                       control)),
                                  float_verdict(True), {}))
            f = run_stage(f"{FLOAT_ROWS:,} float rows per side, GROUP BY SUM/AVG, STDDEV/VAR and COVAR/CORR",
                          cases, args.repeat, log)
            for label in FLOAT_QUERIES:
                ratio = f[f"exact {label}"].best / f[f"builtin {label}"].best
                if label.startswith(("stddev", "corr")):
                    # Three exact sums a value (of it, its square and the square's residue),
                    # eight a pair for CORR, against one Welford state or five rounded sums:
                    # no target, the figure is in the notes.
                    print(f"  exact / built-in float {label} (best wall): {ratio:.2f}")
                else:
                    targets.check(f"exact / built-in float SUM+AVG, {label} (best wall)",
                                  ratio, 1.5)
            for control in (1, 2):
                print(f"  control {control}: {f[f'exact 8 groups, control {control}'].best / f['exact 8 groups'].best:.2f}x "
                      f"the time without control runs (8 groups)")
            # Twenty runs of the exact aggregates: every one a match (the builtin flaps).
            for query in ("8 groups", "stddev, 8 groups", "corr, 8 groups"):
                statuses = {"exact": [], "builtin": []}
                for i in range(20):
                    for kind in statuses:
                        run = measure(run_cmd(float_config(fd, FLOAT_QUERIES[query], kind)))
                        statuses[kind].append(json.loads(run.stdout)["checks"][0]["status"])
                for kind, seen in statuses.items():
                    print(f"  20 runs, {query}, {kind}: "
                          + ", ".join(f"{seen.count(s)} {s}" for s in sorted(set(seen))))
                if any(s != "match" for s in statuses["exact"]):
                    raise ToolError("exact float aggregates DISAGREE on identical data in some runs")
            u = small_dir / "unsorted"
            cases = [Case("row diff", dualrun_cmd(b, u / "batch", u / "stream"), dualrun_counts,
                          variants["unsorted"])]
            cases += [Case(f"row diff, control {n}",
                           dualrun_cmd(b, u / "batch", u / "stream", extra=("--control", str(n))),
                           dualrun_counts, variants["unsorted"]) for n in (1, 2)]
            f = run_stage(f"{args.rows:,} rows unsorted, control runs", cases, args.repeat, log)
            for n in (1, 2):
                print(f"  control {n}: {f[f'row diff, control {n}'].best / f['row diff'].best:.2f}x "
                      f"the time, {f[f'row diff, control {n}'].rss_max / f['row diff'].rss_max:.2f}x the peak RSS")
        if "changelog" in stages:
            cd = args.data_root.resolve() / "bench-data-changelog"
            changelog_dataset(cd, args.seed)
            run_cmd = lambda config: [str(b), "run", "--config", str(config), "--no-history",
                                      "--format", "json"] + EXTRA_ARGS
            cases = [
                Case("plain keyed diff of the compacted rows",
                     run_cmd(changelog_config(cd, "compacted", False)), float_verdict(True), {}),
                Case("changelog compaction + diff",
                     run_cmd(changelog_config(cd, "changes", True)), float_verdict(True), {}),
                Case("changelog under 512MiB",
                     run_cmd(changelog_config(cd, "changes", True, "512MiB")), float_verdict(True),
                     {}, "512MiB"),
            ]
            cases += [Case(f"duckdb {method}",
                           [sys.executable, str(Path(__file__).with_name("duckdb_changelog.py")), "--data", str(cd),
                            "--method", method], changelog_peer_verdict, {})
                      for method in ("plain", "qualify", "max_by")]
            f = run_stage(f"{CHANGELOG_ROWS:,} change rows over {CHANGELOG_KEYS:,} keys", cases,
                          args.repeat, log)
            targets.check("changelog: compaction + diff / plain diff of the compacted rows",
                          f["changelog compaction + diff"].best
                          / f["plain keyed diff of the compacted rows"].best, 2)
            duckdb_compaction = min(f["duckdb qualify"].best, f["duckdb max_by"].best)
            print(f"  DuckDB's own compaction + diff / its plain diff: "
                  f"{duckdb_compaction / f['duckdb plain'].best:.2f}x")
            targets.check("changelog: compaction + diff / DuckDB's fastest compaction + diff",
                          f["changelog compaction + diff"].best / duckdb_compaction, 1.0)
            targets.check("changelog under 512MiB: peak RSS / limit",
                          f["changelog under 512MiB"].rss_max * 2**20 / parse_size("512MiB"), 1.25)
        if "databases" in stages:
            database_stage(args, b, targets, log)
    except ToolError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1 if "DISAGREE" in str(e) else 2
    finally:
        if args.json:
            args.json.write_text(json.dumps(log, indent=2) + "\n")
    print("\ntargets:")
    for line in targets.lines:
        print("  " + line)
    print("counts: every run of every tool agreed with the planted data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
