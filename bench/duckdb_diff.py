"""The benchmark's peer: the same keyed diff as `dualrun compare`, written as one DuckDB query.

Run as its own process by bench/run.py, so that its wall time and peak RSS are measured exactly
like dualrun's. Prints one JSON object on stdout with the counts, in dualrun's vocabulary:

    {"rows": {"batch": N, "stream": N},
     "counts": {"matched": N, "missing_in_stream": N, "extra_in_stream": N, "mismatched": N},
     "columns": {"<column>": <paired rows where that column differs>, ...},
     "query_seconds": S}

Three methods:
- `columns` (default): a FULL OUTER JOIN on the key with per-column IS DISTINCT FROM, so the
  per-column counts are exact. NULL equals NULL and NaN equals NaN (what DuckDB's IS DISTINCT
  FROM does already), as in dualrun.
- `rowhash`: each side reduced to (key, hash of all value columns), then joined on the key and
  the hashes compared: the fastest way DuckDB knows to find divergent rows (no per-column counts,
  and a hash collision would hide a difference). It is the speed reference of the benchmark.
- `occurrence`: `columns`, with rows sharing a key paired by occurrence in value order (a
  row_number() per key on each side, joined on key and occurrence): dualrun's duplicate-safe
  pairing, the peer for a stream side with repeated keys.

    python bench/duckdb_diff.py --batch DIR --stream DIR --key id [--threads 2] [--method rowhash]
"""

import argparse
import json
import sys
import time

import duckdb


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def parquet_glob(directory):
    return "'" + directory.rstrip("/").replace("'", "''") + "/*.parquet'"


def diff_query(batch_dir, stream_dir, keys, values, occurrence=False):
    """One pass over the FULL OUTER JOIN computing every count at once; with `occurrence`,
    joined on key and each row's occurrence index within its key in value order.

    Presence of a side is tested on its first key column: keys are NOT NULL in the benchmark
    data, so a NULL key on one side of the joined row means the row is absent from that side.
    Per-column counts are computed too because dualrun computes them (same work on both sides).
    """
    on = " AND ".join(f"b.{quote(k)} = s.{quote(k)}" for k in keys)
    sides = [f"read_parquet({parquet_glob(d)})" for d in (batch_dir, stream_dir)]
    if occurrence:
        on += " AND b.__occ = s.__occ"
        order = ", ".join(f"{quote(v)} NULLS LAST" for v in values) or quote(keys[0])
        partition = ", ".join(quote(k) for k in keys)
        sides = [f"(SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {order}) "
                 f"AS __occ FROM {side})" for side in sides]
    b_present = f"b.{quote(keys[0])} IS NOT NULL"
    s_present = f"s.{quote(keys[0])} IS NOT NULL"
    both = f"{b_present} AND {s_present}"
    differs = [f"b.{quote(v)} IS DISTINCT FROM s.{quote(v)}" for v in values]
    any_differs = " OR ".join(differs) if differs else "false"
    select = [
        f"count(*) FILTER (WHERE {b_present}) AS rows_batch",
        f"count(*) FILTER (WHERE {s_present}) AS rows_stream",
        f"count(*) FILTER (WHERE NOT ({s_present})) AS missing_in_stream",
        f"count(*) FILTER (WHERE NOT ({b_present})) AS extra_in_stream",
        f"count(*) FILTER (WHERE {both} AND ({any_differs})) AS mismatched",
        f"count(*) FILTER (WHERE {both} AND NOT ({any_differs})) AS matched",
    ]
    select += [
        f"count(*) FILTER (WHERE {both} AND {d}) AS {quote('col:' + v)}"
        for v, d in zip(values, differs)
    ]
    return (
        "SELECT\n  " + ",\n  ".join(select) + "\n"
        f"FROM {sides[0]} AS b\n"
        f"FULL OUTER JOIN {sides[1]} AS s ON {on}"
    )


def rowhash_query(batch_dir, stream_dir, keys, values):
    """Both sides as (key, row hash); one pass over their FULL OUTER JOIN on the key."""
    key_list = ", ".join(quote(k) for k in keys)
    row_hash = "hash(" + ", ".join(quote(v) for v in values) + ")" if values else "0"

    def side(directory):
        return f"SELECT {key_list}, {row_hash} AS __h FROM read_parquet({parquet_glob(directory)})"

    on = " AND ".join(f"b.{quote(k)} = s.{quote(k)}" for k in keys)
    b_present = f"b.{quote(keys[0])} IS NOT NULL"
    s_present = f"s.{quote(keys[0])} IS NOT NULL"
    both = f"{b_present} AND {s_present}"
    select = [
        f"count(*) FILTER (WHERE {b_present}) AS rows_batch",
        f"count(*) FILTER (WHERE {s_present}) AS rows_stream",
        f"count(*) FILTER (WHERE NOT ({s_present})) AS missing_in_stream",
        f"count(*) FILTER (WHERE NOT ({b_present})) AS extra_in_stream",
        f"count(*) FILTER (WHERE {both} AND b.__h <> s.__h) AS mismatched",
        f"count(*) FILTER (WHERE {both} AND b.__h = s.__h) AS matched",
    ]
    return (
        "SELECT\n  " + ",\n  ".join(select) + "\n"
        f"FROM ({side(batch_dir)}) AS b\nFULL OUTER JOIN ({side(stream_dir)}) AS s ON {on}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", required=True, help="directory of the batch Parquet files")
    parser.add_argument("--stream", required=True, help="directory of the stream Parquet files")
    parser.add_argument("--key", default="id", help="key column(s), comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 1GiB (default: DuckDB's)")
    parser.add_argument("--method", choices=["columns", "rowhash", "occurrence"],
                        default="columns",
                        help="per-column comparison (default), one hash per row, or per-column "
                             "with repeated keys paired by occurrence")
    parser.add_argument("--print-query", action="store_true", help="print the SQL and exit")
    args = parser.parse_args()

    keys = [k.strip() for k in args.key.split(",") if k.strip()]
    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    if args.memory_limit:
        con.execute("SET memory_limit = ?", [args.memory_limit])
    # Column list from the files themselves, so the query follows the data generator.
    schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet({parquet_glob(args.batch)})").fetchall()
    columns = [row[0] for row in schema]
    missing = [k for k in keys if k not in columns]
    if missing:
        sys.exit(f"duckdb_diff: key column(s) {missing} not in {columns}")
    values = [c for c in columns if c not in keys]
    if args.method == "rowhash":
        query = rowhash_query(args.batch, args.stream, keys, values)
    else:
        query = diff_query(args.batch, args.stream, keys, values,
                           occurrence=args.method == "occurrence")
    if args.print_query:
        print(query)
        return

    started = time.perf_counter()
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    row = dict(zip(names, cursor.fetchone()))
    seconds = time.perf_counter() - started

    result = {
        "rows": {"batch": row["rows_batch"], "stream": row["rows_stream"]},
        "counts": {
            name: row[name]
            for name in ("matched", "missing_in_stream", "extra_in_stream", "mismatched")
        },
        "columns": {v: row["col:" + v] for v in values} if args.method != "rowhash" else None,
        "query_seconds": seconds,
        "duckdb_version": duckdb.__version__,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
