"""Differential fuzzing of change-log compaction: random change logs (upsert with a delete flag or
tombstones, Flink row kinds with before-images, flattened Debezium, dedup of at-least-once
appends), with replayed events, re-inserts after deletes, changes after the as-of bound, one or
two ordering columns of several types, NULL keys, NaN and -0.0 values, sometimes a tie or a
missing ordering value; compacted and diffed by dualrun against a snapshot, and by a plain-Python
model of docs/semantics.md ("When the stream writes a change log"). The diff's counts, the
report's `changelog` figures, or the error (tie, missing ordering, unknown marker) must agree.

    .venv/bin/python bench/fuzz_changelog.py --dualrun target/release/dualrun --seeds 0:300

The variants run each case as it is (`run`), with 3-row batches, and with partial aggregation
skipped (every change row goes to the final aggregate as a state) over 5 partitions."""
import datetime, json, math, os, random, shutil, struct, subprocess, sys
import pyarrow as pa

from fuzz_verdicts import fuzz_arguments, ARROW, canon, gen_value, mutate, oracle, write

T0 = datetime.datetime(2026, 1, 1)
EPOCH_MS = int(T0.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
DAY_MS = 86_400_000
SHAPES = ("upsert", "tombstone", "flink", "debezium", "envelope", "dedup")
ORDERINGS = ("ms", "ts", "ms+seq", "seq", "str")


def identity(v):
    """What the row hash tells apart: floats by their bits (a NaN's sign, -0.0)."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    return (type(v).__name__, v)


def changelog_scenario(seed):
    rng = random.Random(seed)
    shape = rng.choice(SHAPES)
    keyshape = rng.choice(["int", "int", "str", "composite", "nullable"])
    ordering = "debezium" if shape in ("debezium", "envelope") else rng.choice(ORDERINGS)
    if shape == "debezium" and rng.random() < 0.3:
        ordering = "debezium+seq"
    kinds = [rng.choice([k for k in ARROW if k != "f32"]) for _ in range(rng.randint(1, 4))]
    keycols = {"int": ["id"], "str": ["id"], "composite": ["ka", "kb"], "nullable": ["id"]}[keyshape]
    keytypes = {"int": [pa.int64()], "str": [pa.string()], "composite": [pa.int32(), pa.string()],
                "nullable": [pa.int64()]}[keyshape]
    values = [f"c{i}" for i in range(len(kinds))]
    # Ordering and as-of columns: (name, arrow type), the order_by list, the as-of column.
    order_cols, order_by, as_of_column = {
        "ms": ([("ms", pa.int64())], ["ms"], "ms"),
        "ts": ([("ts", pa.timestamp("us"))], ["ts"], "ts"),
        "ms+seq": ([("ms", pa.int64()), ("seq", pa.int64())], ["ms", "seq"], "ms"),
        "seq": ([("ms", pa.int64()), ("seq", pa.int64())], ["seq"], "ms"),
        "str": ([("ver", pa.string())], ["ver"], None),
        "debezium": ([("__source_ts_ms", pa.int64())], ["__source_ts_ms"], "__source_ts_ms"),
        "debezium+seq": ([("__source_ts_ms", pa.int64()), ("__seq", pa.int64())],
                         ["__source_ts_ms", "__seq"], "__source_ts_ms"),
    }[ordering]
    marker_cols = {
        "upsert": [("deleted", pa.bool_())],
        "tombstone": [],
        "flink": [("op", pa.string())],
        "debezium": [("__op", pa.string())] + rng.choice(
            [[], [("__deleted", pa.string())], [("__deleted", pa.bool_())]]),
        "envelope": [("__op", pa.string())],
        "dedup": [],
    }[shape]
    names = keycols + values + [n for n, _ in order_cols] + [n for n, _ in marker_cols]
    strings = rng.choice([pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
    types = keytypes + [ARROW[k] for k in kinds] + [t for _, t in order_cols] + [t for _, t in marker_cols]
    change_types = [strings if t == pa.string() else t for t in types]

    n_keys = rng.choice([1, 3, 20, 200, 1000])
    n_events = rng.choice([0, 1, 5, 50, 400, 3000])
    ties = rng.random() < 0.15
    # Times in ms after T0, over two days: unique unless ties are wanted.
    span = 2 * DAY_MS
    if ties:
        times = [rng.randrange(max(1, n_events // 3)) * 1000 for _ in range(n_events)]
    else:
        times = rng.sample(range(span), n_events) if n_events else []

    def key(k):
        if keyshape == "int":
            return [k]
        if keyshape == "str":
            return [f"k{k}"]
        if keyshape == "composite":
            return [k % 7, str(k // 7)]
        return [None if k % 11 == 0 else k]

    def order_values(t, i):
        """The ordering columns' values for time t (ms after T0), i-th event."""
        if ordering in ("ms", "debezium"):
            return [EPOCH_MS + t]
        if ordering == "ts":
            return [T0 + datetime.timedelta(milliseconds=t)]
        if ordering in ("ms+seq", "debezium+seq"):
            return [EPOCH_MS + t, i if not ties else rng.randrange(3)]
        if ordering == "seq":
            return [EPOCH_MS + rng.randrange(span), t]  # ms (the as-of column), then seq
        return [f"v{t // 1000}"]  # str: byte order, "v10" < "v9"

    rows = []
    for i, t in enumerate(times):
        k = rng.randrange(n_keys)
        vals = [gen_value(rng, kind) for kind in kinds]
        order = order_values(t, i)
        if shape == "upsert":
            marks = [rng.choices([True, False, None], [0.15, 0.8, 0.05])[0]]
        elif shape == "tombstone":
            if rng.random() < 0.15:
                vals = [None] * len(vals)
                if ordering == "seq":
                    order[0] = None  # ms is a value column there, so a tombstone has none
            marks = []
        elif shape == "flink":
            op = rng.choices(["+I", "+U", "-D"], [0.35, 0.45, 0.2])[0]
            marks = [op]
            if op == "+U" and rng.random() < 0.7:
                # The before-image: same ordering, older values; never a change.
                rows.append(key(k) + [gen_value(rng, kind) for kind in kinds] + list(order) + ["-U"])
        elif shape in ("debezium", "envelope"):
            op = rng.choices(["c", "u", "r", "d"], [0.3, 0.4, 0.1, 0.2])[0]
            marks = [op]
            if len(marker_cols) == 2:
                gone = op == "d" or rng.random() < 0.05
                marks.append(("true" if gone else "false") if marker_cols[1][1] == pa.string() else gone)
        else:
            marks = []
        rows.append(key(k) + vals + order + marks)
    # At-least-once: replayed events, identical rows.
    replay = rng.choice([0, 0, 0.05, 0.3])
    rows += [list(r) for r in rows if rng.random() < replay]
    # Sometimes a change without an ordering value, or an op the shape does not know.
    if rows and rng.random() < 0.06:
        r = rng.choice(rows)
        r[names.index(order_by[rng.randrange(len(order_by))])] = None
    if rows and shape in ("flink", "debezium", "envelope") and rng.random() < 0.03:
        rng.choice(rows)[names.index(marker_cols[0][0])] = rng.choice(["+X", "x", None])
    rng.shuffle(rows)

    # The bound: none, the default (end of run_date), or an explicit instant.
    if as_of_column is None:
        as_of = ("none", None)
    else:
        as_of = rng.choice([("none", None), ("default", DAY_MS),
                            ("explicit", rng.randrange(span))])
    raw = envelope(rng, rows, keycols + values, keytypes + [ARROW[k] for k in kinds], kinds) \
        if shape == "envelope" else None
    return dict(rng=rng, shape=shape, raw=raw, ordering=ordering, keycols=keycols, names=names,
                types=types, change_types=change_types, kinds=kinds, values=values,
                order_by=order_by, as_of_column=as_of_column, as_of=as_of, rows=rows,
                changelog_side=rng.choice(["stream", "stream", "stream", "batch"]),
                marker_cols=[n for n, _ in marker_cols])


def envelope(rng, rows, row_names, row_types, kinds):
    """Debezium's own envelope of flattened rows (the row's columns, __source_ts_ms, __op), as
    a sink writes it to Parquet: before/after structs, op, ts_ms, source.ts_ms, sometimes in a
    payload struct. An update's before is another version of the row; its after may hold NULLs."""
    n = len(row_names)
    row_type = pa.struct([pa.field(name, t) for name, t in zip(row_names, row_types)])
    source_type = pa.struct([pa.field("db", pa.string()), pa.field("ts_ms", pa.int64())])
    names = ["before", "after", "op", "ts_ms", "source"]
    types = [row_type, row_type, pa.string(), pa.int64(), source_type]
    out = []
    for r in rows:
        row = dict(zip(row_names, r[:n]))
        ts, op = r[n], r[n + 1]
        older = dict(row, **{c: gen_value(rng, k) for c, k in zip(row_names[n - len(kinds):], kinds)})
        before, after = {"c": (None, row), "r": (None, row), "u": (older, row),
                         "d": (row, None)}.get(op, (older, row))
        # The commit time in source.ts_ms, else (older connectors) only the event's ts_ms.
        if rng.random() < 0.8:
            source, event_ts = {"db": "shop", "ts_ms": ts}, (None if ts is None else ts + 7)
        else:
            source, event_ts = {"db": "shop", "ts_ms": None}, ts
        out.append([before, after, op, event_ts, source])
    if rng.random() < 0.5:
        return names, types, out
    payload = pa.struct([pa.field(name, t) for name, t in zip(names, types)])
    return ["payload"], [payload], [[dict(zip(names, r))] for r in out]


def ms_of(sc, v):
    """The as-of column's value as ms after T0 (None: NULL)."""
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        return (v - T0) // datetime.timedelta(milliseconds=1)
    return v - EPOCH_MS


def order_key(v):
    if isinstance(v, str):
        return v.encode()
    return v


def output_names(sc):
    names, shape = sc["names"], sc["shape"]
    if shape == "upsert":
        return [n for n in names if n != "deleted"]
    if shape == "flink":
        return [n for n in names if n != "op"]
    if shape in ("debezium", "envelope"):
        return [n for n in names if not n.startswith("__")]
    return list(names)


def compact(sc):
    """The model: (error kind, None) or (None, (logical rows, figures))."""
    names, shape = sc["names"], sc["shape"]
    col = {n: i for i, n in enumerate(names)}
    rows = sc["rows"]

    def is_change(r):
        return shape != "flink" or r[col["op"]] != "-U"

    if shape in ("flink", "debezium", "envelope"):
        marker, allowed = ("op", {"+I", "-U", "+U", "-D"}) if shape == "flink" else \
            ("__op", {"c", "u", "d", "r"})
        if any(r[col[marker]] not in allowed for r in rows):
            return "markers", None
    if any(is_change(r) and any(r[col[o]] is None for o in sc["order_by"]) for r in rows):
        return "unordered", None

    def in_bound(r):
        kind, bound = sc["as_of"]
        if kind == "none":
            return True
        v = ms_of(sc, r[col[sc["as_of_column"]]])
        return v is not None and v <= bound

    def is_delete(r):
        if shape == "upsert":
            return r[col["deleted"]] is True
        if shape == "tombstone":
            others = [n for n in names if n not in sc["keycols"] and n not in sc["order_by"]]
            return all(r[col[n]] is None for n in others)
        if shape == "flink":
            return r[col["op"]] == "-D"
        if shape in ("debezium", "envelope"):
            gone = r[col["__op"]] == "d"
            if "__deleted" in col:
                d = r[col["__deleted"]]
                gone = gone or d is True or d == "true"
            return gone
        return False

    nk = len(sc["keycols"])
    groups = {}
    ignored = 0
    for r in rows:
        if not is_change(r):
            continue
        if not in_bound(r):
            ignored += 1
            continue
        groups.setdefault(tuple(canon(v) for v in r[:nk]), []).append(r)
    out_names = output_names(sc)
    logical, copies, deletes = [], 0, 0
    for members in groups.values():
        order = lambda r: [order_key(r[col[o]]) for o in sc["order_by"]]
        top = max(order(r) for r in members)
        latest = [r for r in members if order(r) == top]
        ids = {tuple(identity(v) for v in r) for r in latest}
        if len(ids) > 1:
            return "tied", None
        copies += len(latest)
        if is_delete(latest[0]):
            deletes += 1
        else:
            logical.append([latest[0][col[n]] for n in out_names])
    figures = dict(change_rows=len(rows), replayed_rows=copies - len(groups),
                   ignored_after_as_of=ignored, keys=len(groups), deletes_applied=deletes,
                   rows=len(groups) - deletes)
    return None, (logical, figures)


ERRORS = {"markers": "holds values other than", "unordered": "without a value in order_by",
          "tied": "tied on order_by"}


def snapshot(sc, logical):
    """The other side: the compacted rows with a few dropped, changed and added."""
    rng = sc["rng"]
    nk = len(sc["keycols"])
    out_names = output_names(sc)
    kinds = {n: k for n, k in zip(sc["values"], sc["kinds"])}
    p_del, p_mod = rng.choice([(0, 0), (0, 0), (0.02, 0.02), (0.2, 0.2)])
    rows = []
    for r in logical:
        if rng.random() < p_del:
            continue
        r = list(r)
        if rng.random() < p_mod:
            changeable = [i for i, n in enumerate(out_names) if n in kinds]
            i = rng.choice(changeable)
            r[i] = mutate(rng, kinds[out_names[i]], r[i])
        rows.append(r)
    if logical and rng.random() < 0.3:
        rows += [list(rng.choice(logical)) for _ in range(rng.randint(1, 3))]
    rng.shuffle(rows)
    return rows


def config(sc, d):
    shape = {"tombstone": "upsert", "envelope": "debezium"}.get(sc["shape"], sc["shape"])
    spec = {"shape": shape, "key": sc["keycols"]}
    if not sc["ordering"].startswith("debezium") or sc["ordering"] == "debezium+seq" or sc["rng"].random() < 0.5:
        spec["order_by"] = sc["order_by"]
    if sc["shape"] == "upsert":
        spec["deleted"] = "deleted"
    if sc["ordering"] == "seq":
        spec["as_of_column"] = "ms"
    kind, bound = sc["as_of"]
    params = ""
    if kind == "none":
        spec["as_of"] = "none"
    elif kind == "default":
        params = '[params]\nrun_date = "2026-01-01"\n\n'
    else:
        at = T0 + datetime.timedelta(milliseconds=bound)
        spec["as_of"] = f"CAST('{at.isoformat(sep=' ')}' AS TIMESTAMP)"
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.items())
    side = sc["changelog_side"]
    other = "batch" if side == "stream" else "stream"
    return (f'{params}[tables.t]\n{side} = "{d}/changes/"\n{other} = "{d}/snapshot/"\n'
            f"{side}_changelog = {{ {inline} }}\n\n"
            f'[[checks]]\nname = "c"\nsql = "SELECT * FROM t"\nkey = {json.dumps(sc["keycols"])}\n'
            "allow_empty = true\n")


def run(sc, d, variants, snapshot_rows):
    shutil.rmtree(d, ignore_errors=True)
    if sc["raw"]:
        write(sc["raw"][2], sc["raw"][0], sc["raw"][1], f"{d}/changes", sc["rng"])
    else:
        write(sc["rows"], sc["names"], sc["change_types"], f"{d}/changes", sc["rng"])
    out_names = output_names(sc)
    out_types = [sc["types"][sc["names"].index(n)] for n in out_names]
    write(snapshot_rows, out_names, out_types, f"{d}/snapshot", sc["rng"])
    results = {}
    for v in variants:
        text = config(sc, d)
        env = dict(os.environ)
        if v == "tiny":
            env["DATAFUSION_EXECUTION_BATCH_SIZE"] = "3"
        elif v == "skip":
            env["DATAFUSION_EXECUTION_SKIP_PARTIAL_AGGREGATION_PROBE_ROWS_THRESHOLD"] = "1"
            env["DATAFUSION_EXECUTION_SKIP_PARTIAL_AGGREGATION_PROBE_RATIO_THRESHOLD"] = "0"
            text += "\n[engine]\ntarget_partitions = 5\n"
        with open(f"{d}/c.toml", "w") as f:
            f.write(text)
        p = subprocess.run([BIN, "run", "--config", f"{d}/c.toml", "--format", "json", "--no-history"],
                           capture_output=True, text=True, env=env)
        try:
            c = json.loads(p.stdout)["checks"][0]
            figures = [dict((k, x[k]) for k in ("change_rows", "replayed_rows", "ignored_after_as_of",
                                                "keys", "deletes_applied", "rows"))
                       for x in c.get("changelog") or []]
            results[v] = (c["status"], c.get("counts"), figures[0] if figures else None, c.get("error"))
        except Exception:
            results[v] = ("crash", p.returncode, None, p.stderr[-400:])
    return results


def main():
    args = fuzz_arguments(__doc__, "run,tiny,skip", "dualrun-fuzz-changelog").parse_args()
    global BIN
    BIN = args.dualrun
    variants = args.variants
    fails, outcomes = 0, {}
    for seed in args.seeds:
        sc = changelog_scenario(seed)
        error, compacted = compact(sc)
        snapshot_rows = snapshot(sc, compacted[0]) if compacted else []
        if compacted:
            logical, figures = compacted
            keys = dict(keycols=sc["keycols"], keyed=True, where=None, tolerance=None)
            if sc["changelog_side"] == "stream":
                counts = oracle(dict(keys, batch=snapshot_rows, stream=logical))
            else:
                counts = oracle(dict(keys, batch=logical, stream=snapshot_rows))
        d = f"{args.work}/{seed}"
        got = run(sc, d, variants, snapshot_rows)
        outcomes[error or "compared"] = outcomes.get(error or "compared", 0) + 1
        ok_all = True
        for v, (status, got_counts, got_figures, err) in got.items():
            if error:
                ok = status == "error" and ERRORS[error] in (err or "")
                want = f"error: {ERRORS[error]}"
            else:
                ok = got_counts == counts and got_figures == figures
                want = f"{counts}\n  want {figures}"
            if not ok:
                ok_all = False
                fails += 1
                print(f"seed {seed} {v}: status={status} err={err}\n  got  {got_counts}\n  got  {got_figures}\n"
                      f"  want {want}\n  shape={sc['shape']} ordering={sc['ordering']} keys={sc['keycols']} "
                      f"kinds={sc['kinds']} as_of={sc['as_of']} side={sc['changelog_side']} "
                      f"rows={len(sc['rows'])}", flush=True)
        if ok_all:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{fails} disagreements in {len(args.seeds)} cases x {len(variants)} variants "
          f"(model outcomes: {', '.join(f'{k} {n}' for k, n in sorted(outcomes.items()))})")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
