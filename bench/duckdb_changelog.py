"""The changelog stage's peer: DuckDB compacting the same upsert change log (latest change per
key at or before the cut-off, deletes removed) and diffing it against the snapshot, as one query,
next to its plain diff of the already-compacted rows. Both diffs reduce each side to (key, row
hash), DuckDB's fastest diff (bench/duckdb_diff.py --method rowhash).

Run as its own process by bench/run.py, so that wall time and peak RSS are measured like
dualrun's. Prints one JSON object: {"counts": {...}, "status": "match"|"diverged",
"query_seconds": S}.

    python bench/duckdb_changelog.py --data bench-data-changelog --method qualify|max_by|plain
"""

import argparse
import json
import sys
import time

import duckdb

# The bench's cut-off, 2026-11-26 00:00 UTC in epoch milliseconds (changelog_dataset in run.py).
CUT_OFF_MS = 1795651200000


def files(directory):
    return "read_parquet('" + directory.rstrip("/").replace("'", "''") + "/*.parquet')"


def compacted(method, data):
    """The stream side as (id, row hash) of each key's latest change, deletes removed."""
    changes = files(f"{data}/changes")
    if method == "plain":
        return f"SELECT id, hash(amount, status, ts_ms) AS h FROM {files(data + '/compacted')}"
    if method == "max_by":
        return (
            "SELECT id, hash(v.amount, v.status, v.ts_ms) AS h FROM ("
            "SELECT id, max_by(struct_pack(amount, status, ts_ms, deleted), ts_ms) AS v "
            f"FROM {changes} WHERE ts_ms <= {CUT_OFF_MS} GROUP BY id) WHERE NOT v.deleted"
        )
    return (
        "SELECT id, hash(amount, status, ts_ms) AS h FROM ("
        f"SELECT * FROM {changes} WHERE ts_ms <= {CUT_OFF_MS} "
        "QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts_ms DESC) = 1) WHERE NOT deleted"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the changelog stage's data directory")
    parser.add_argument("--method", choices=["plain", "qualify", "max_by"], required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    batch = f"SELECT id, hash(amount, status, ts_ms) AS h FROM {files(args.data + '/snapshot')}"
    query = (
        "SELECT count(*) FILTER (WHERE b.id IS NOT NULL AND s.id IS NOT NULL AND b.h = s.h), "
        "count(*) FILTER (WHERE s.id IS NULL), count(*) FILTER (WHERE b.id IS NULL), "
        "count(*) FILTER (WHERE b.h <> s.h) "
        f"FROM ({batch}) AS b FULL OUTER JOIN ({compacted(args.method, args.data)}) AS s "
        "ON b.id = s.id"
    )
    started = time.perf_counter()
    matched, missing, extra, mismatched = con.execute(query).fetchone()
    seconds = time.perf_counter() - started
    counts = {"matched": matched, "missing_in_stream": missing, "extra_in_stream": extra,
              "mismatched": mismatched}
    status = "match" if missing == extra == mismatched == 0 else "diverged"
    json.dump({"counts": counts, "status": status, "query_seconds": seconds,
               "duckdb_version": duckdb.__version__}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
