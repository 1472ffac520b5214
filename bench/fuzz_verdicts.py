"""Differential fuzzing of verdicts: random messy tables (NULL, NaN and -0.0 values, NULL and
float keys, duplicate keys, replayed rows, widened integer types, integers and decimals as
doubles on the stream side, one to forty files, tiny row groups), diffed by dualrun and by a plain-Python model of docs/semantics.md; every count must
agree. Each seed is one case; a failing seed's files are kept under --work to replay.

    .venv/bin/python bench/fuzz_verdicts.py --dualrun target/release/dualrun --seeds 0:300

The variants run each case through `compare`, through `run` with the diff forced into 3 buckets
on disk, and with 3-row batches (DATAFUSION_EXECUTION_BATCH_SIZE=3); `limited` runs it under a
64MiB memory limit (--memory-limit), which splits into buckets with `--rows 300000`. A relative tolerance's bound is computed
in doubles, so a case where rounding could move a pair across it is skipped (and counted)."""
import argparse, datetime, decimal, json, math, os, random, shutil, struct, subprocess, sys, tempfile
import pyarrow as pa, pyarrow.parquet as pq

NAN = "NaN"


def canon(v):
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return NAN
        if v == 0.0:
            return 0.0
    return v


def order_key(v):
    v = canon(v)
    if v is None:
        return (2,)
    if v == NAN:
        return (1,)
    if isinstance(v, str):
        return (0, v.encode())
    return (0, v)


def gen_value(rng, kind):
    r = rng.random()
    if r < 0.08:
        return None
    if kind == "int":
        return rng.choice([0, 1, -1, 2, -2, 127, -128, 2**31 - 1, -(2**31), rng.randint(-1000, 1000)])
    if kind == "big":
        return rng.choice([0, -1, 2**62, -(2**63), 2**63 - 1, rng.randint(-10**12, 10**12)])
    if kind == "f32":  # as float32 holds them, so that the model compares what is stored
        v = rng.choice([0.0, -0.0, float("nan"), float("inf"), 1.5, -2.25, 3.0e38, 1.0e-40])
        return struct.unpack("<f", struct.pack("<f", v))[0]
    if kind == "float":
        return rng.choice([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1.5, -1.5,
                           1e-300, 5e-324, rng.uniform(-1e6, 1e6), rng.randint(-5, 5) * 1.0])
    if kind == "str":
        return rng.choice(["", "a", "A", "ä", "日本", "a" * 13, "x" * 40, "NULL", "0",
                           " a", "a ", "\n", "".join(rng.choice("abc") for _ in range(rng.randint(0, 20)))])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "dec":
        return decimal.Decimal(rng.randint(-10**8, 10**8)).scaleb(-2)
    if kind == "ts":
        return datetime.datetime(2026, 1, 1) + datetime.timedelta(microseconds=rng.randint(-10**15, 10**15))
    if kind == "date":
        return datetime.date(2026, 1, 1) + datetime.timedelta(days=rng.randint(-10**5, 10**5))
    raise ValueError(kind)


ARROW = {"f32": pa.float32(), "int": pa.int32(), "big": pa.int64(), "float": pa.float64(), "str": pa.string(),
         "bool": pa.bool_(), "dec": pa.decimal128(12, 2), "ts": pa.timestamp("us"),
         "date": pa.date32()}


NUDGES = {"int": [1, -1, 2, 100, 101], "big": [1, -1, 100, 101],
          "float": [0.5, -0.5, 1.0, 100.0, 1e-9], "dec": [decimal.Decimal("0.01"), decimal.Decimal("-1.00"), decimal.Decimal("100.00")],
          "ts": [datetime.timedelta(milliseconds=500), datetime.timedelta(seconds=-30), datetime.timedelta(seconds=31),
                 datetime.timedelta(hours=2), datetime.timedelta(days=1)],
          "date": [datetime.timedelta(days=1), datetime.timedelta(days=-2)]}
LIMITS = {"int": 2**31, "big": 2**63}


def mutate(rng, kind, v):
    # Half the time a value near the old one, often exactly on a tolerance's edge.
    if kind in NUDGES and v is not None and rng.random() < 0.5:
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            pass
        else:
            w = v + rng.choice(NUDGES[kind])
            if kind == "float" and rng.random() < 0.5:
                w = v * rng.choice([1.01, 0.99, 1.5, 2.0])
            if (kind not in LIMITS or -LIMITS[kind] <= w < LIMITS[kind]) and canon(w) != canon(v):
                return w
    for _ in range(20):
        w = gen_value(rng, kind)
        if canon(w) != canon(v):
            return w
    return None if v is not None else gen_value(rng, kind)


def equivalent(rng, kind, v):
    """A different bit pattern of an equal value (dualrun must call it equal)."""
    if kind in ("float", "f32") and v is not None:
        if isinstance(v, float) and math.isnan(v):
            return -float("nan") if rng.random() < 0.5 else float("nan")
        if v == 0.0:
            return -0.0 if math.copysign(1, v) > 0 else 0.0
    return v


def scenario(seed, rows=None):
    rng = random.Random(seed)
    kinds = [rng.choice(list(ARROW)) for _ in range(rng.randint(1, 6))]
    cols = [f"c{i}" for i in range(len(kinds))]
    keyshape = rng.choice(["int", "int", "str", "composite", "none", "nullable", "float", "ts"])
    keyed = keyshape != "none"
    n = rng.choice([0, 1, 5, 50, 300, 2000])
    if rows is not None:
        n = rows
    keyspace = max(1, int(n * rng.choice([0.3, 1.0, 3.0])))

    def make_key():
        k = rng.randrange(keyspace)
        if keyshape == "int":
            return (k,)
        if keyshape == "str":
            return (f"k{k}",)
        if keyshape == "composite":
            return (k % 7, f"{k // 7}")
        if keyshape == "nullable":
            return (None if k % 11 == 0 else k,)
        if keyshape == "ts":
            return (datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=k),)
        if keyshape == "float":
            return (rng.choice([float("nan"), 0.0, -0.0, 1.5]) if k % 9 == 0 else float(k),)
        return ()

    keycols = {"int": ["id"], "str": ["id"], "composite": ["ka", "kb"], "none": [],
               "nullable": ["id"], "float": ["id"], "ts": ["id"]}[keyshape]
    keytypes = {"int": [pa.int64()], "str": [pa.string()], "composite": [pa.int32(), pa.string()],
                "none": [], "nullable": [pa.int64()], "float": [pa.float64()],
                "ts": [pa.timestamp("us")]}[keyshape]
    dup_rate = rng.choice([0, 0, 0.01, 0.2])
    batch = []
    used = set()
    for _ in range(n):
        key = make_key()
        if keyed and key in used and rng.random() > dup_rate:
            continue
        used.add(key)
        batch.append(list(key) + [gen_value(rng, k) for k in kinds])
    stream = []
    nk = len(keycols)
    p_del, p_mod, p_eqv = rng.choice([(0, 0, 0), (0.01, 0.01, 0.1), (0.1, 0.2, 0.3)])
    for row in batch:
        r = rng.random()
        if r < p_del:
            continue
        row = list(row)
        if rng.random() < p_mod:
            c = rng.randrange(len(kinds))
            row[nk + c] = mutate(rng, kinds[c], row[nk + c])
        if rng.random() < p_eqv:
            c = rng.randrange(len(kinds))
            row[nk + c] = equivalent(rng, kinds[c], row[nk + c])
        stream.append(row)
        if rng.random() < dup_rate / 2:
            stream.append(list(row))  # at-least-once replay
    for _ in range(rng.choice([0, 0, 3, n // 10])):
        stream.append(list(make_key()) + [gen_value(rng, k) for k in kinds])
    rng.shuffle(stream)
    rng.shuffle(batch)
    # The stream side may widen int32 columns to int64.
    widen = keyshape != "none" and rng.random() < 0.3
    strings = rng.choice([pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
    # Sometimes a filter, so that row groups may be pruned by their statistics.
    where = None
    if rng.random() < 0.3:
        c = rng.randrange(len(kinds))
        if kinds[c] in ("int", "big", "float", "f32", "str", "date"):
            where = (c, gen_value(rng, kinds[c]))
            if where[1] is None or (isinstance(where[1], float) and (math.isnan(where[1]) or where[1] == 0)):
                where = None
    # Sometimes a tolerance on one numeric (absolute, relative or both) or temporal column
    # (a duration); keyed diffs only.
    tolerance = None
    numeric = [c for c, k in enumerate(kinds) if k in ("int", "big", "float", "dec")]
    temporal = [c for c, k in enumerate(kinds) if k in ("ts", "date")]
    if keyed and numeric and rng.random() < 0.3:
        tolerance = (rng.choice(numeric), rng.choice(
            ["abs:1", "abs:0.5", "abs:100", "rel:0.5", "rel:0.01", "rel:1", "rel:0",
             "abs:1,rel:0.1", "abs:0.25,rel:0.001"]))
    elif keyed and temporal and rng.random() < 0.3:
        tolerance = (rng.choice(temporal), rng.choice(["abs:500ms", "abs:30s", "abs:2h", "abs:1d", "abs:40000d"]))
    # Sometimes the stream carries integer and decimal columns as doubles (JSON numbers), drawn
    # from a generator of its own so that every other seed's case stays as it was.
    floated = set()
    if random.Random(seed * 7919 + 1).random() < 0.25:
        floated = {c for c, k in enumerate(kinds) if k in ("int", "big", "dec")
                   and (tolerance is None or tolerance[0] != c) and (where is None or where[0] != c)}
    return dict(where=where, tolerance=tolerance, kinds=kinds, cols=cols, keycols=keycols, keytypes=keytypes, batch=batch,
                stream=stream, widen=widen, keyed=keyed, rng=rng, strings=strings, floated=floated)


def exact_text(v):
    """An integer or decimal as dualrun reads it against a float: its digits, no trailing zeros."""
    if v is None:
        return None
    if isinstance(v, int):
        return str(v)
    t = format(v, "f")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t in ("-0", "") else t


def float_text(f):
    """A double as dualrun reads it against an integer or decimal: an integral one by its exact
    value, another by the shortest text that reads back as it (docs/semantics.md)."""
    if f is None:
        return None
    if f == 0:
        return "0"
    if f.is_integer():
        return str(int(f))
    return format(decimal.Decimal(repr(f)), "f")


def as_read(sc, row, side):
    """A row with its floated columns as the numbers they read as (text), for the model."""
    nk = len(sc["keycols"])
    out = list(row)
    for c in sc.get("floated", ()):  # the change-log fuzzer's cases have none
        v = row[nk + c]
        out[nk + c] = exact_text(v) if side == "batch" else float_text(None if v is None else float(v))
    return out


def write(rows, names, types, path, rng):
    os.makedirs(path)
    files = rng.choice([1, 1, 3, 40])
    chunks = [rows[i::files] for i in range(files)]
    schema = pa.schema([pa.field(n, t) for n, t in zip(names, types)])
    for i, chunk in enumerate(chunks):
        cols = list(zip(*chunk)) if chunk else [[] for _ in names]
        table = pa.table([pa.array(list(c), type=t) for c, t in zip(cols, types)], schema=schema)
        # Big cases (--rows) keep to 100 row groups a file: each row group of a dictionary
        # column repeats the whole dictionary (7-row groups of 300,000 rows wrote 14 GB).
        size = rng.choice([7, 1000, 100000])
        if len(chunk) > 20000:
            size = max(size, len(chunk) // 100)
        pq.write_table(table, f"{path}/part-{i:03}.parquet", row_group_size=size)


def kept(sc, row):
    """DataFusion's `col > literal`: NULL is not kept; floats in IEEE total order, where a NaN
    is above every number and a NaN with its sign bit set below every number."""
    if sc["where"] is None:
        return True
    c, t = sc["where"]
    v = row[len(sc["keycols"]) + c]
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return math.copysign(1.0, v) > 0
    if isinstance(v, str):
        return v.encode() > t.encode()
    return v > t


def sql(sc):
    if sc["where"] is None:
        return "SELECT * FROM t"
    c, t = sc["where"]
    kind = sc["kinds"][c]
    if kind == "str":
        lit = "'" + t.replace("'", "''") + "'"
    elif kind == "date":
        lit = f"DATE '{t.isoformat()}'"
    elif isinstance(t, float) and math.isinf(t):
        lit = f"CAST('{'-' if t < 0 else ''}Infinity' AS DOUBLE)"
    else:
        lit = repr(t)
    return f"SELECT * FROM t WHERE c{c} > {lit}"


def same(sc, column, b, s):
    """Equal, or within the column's tolerance: |b - s| <= abs; NaN and infinities never within."""
    if canon(b) == canon(s):
        return True
    if sc["tolerance"] is None or sc["tolerance"][0] != column or b is None or s is None:
        return False
    if any(isinstance(v, float) and (math.isnan(v) or math.isinf(v)) for v in (b, s)):
        return False
    spec = dict(part.split(":") for part in sc["tolerance"][1].split(","))
    if isinstance(b, (datetime.date, datetime.datetime)):
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
        amount = spec["abs"].rstrip("msdh")
        unit = spec["abs"][len(amount):]
        return abs(b - s) <= datetime.timedelta(seconds=int(amount) * units[unit])
    b, s = decimal.Decimal(b), decimal.Decimal(s)
    exact = abs(b - s) <= decimal.Decimal(spec.get("abs", "0")) + decimal.Decimal(spec.get("rel", "0")) * max(abs(b), abs(s))
    if "rel" in spec:
        # A relative bound is computed in doubles (docs/semantics.md): where rounding could put
        # the pair on the other side, the case proves nothing and is skipped.
        bound = float(spec.get("abs", "0")) + float(spec["rel"]) * max(abs(float(b)), abs(float(s)))
        if (float(abs(b - s)) <= bound) != exact:
            sc["ambiguous"] = True
    return exact


def oracle(sc):
    nk = len(sc["keycols"])
    b = [as_read(sc, r, "batch") for r in sc["batch"] if kept(sc, r)]
    s = [as_read(sc, r, "stream") for r in sc["stream"] if kept(sc, r)]
    if not sc["keyed"]:
        from collections import Counter
        cb = Counter(tuple(canon(v) for v in r) for r in b)
        cs = Counter(tuple(canon(v) for v in r) for r in s)
        matched = sum(min(cb[k], cs[k]) for k in cb)
        return dict(matched=matched, mismatched=0, missing_in_stream=len(b) - matched,
                    extra_in_stream=len(s) - matched,
                    duplicate_keys_batch=sum(1 for v in cb.values() if v > 1),
                    duplicate_keys_stream=sum(1 for v in cs.values() if v > 1))
    gb, gs = {}, {}
    for rows, g in ((b, gb), (s, gs)):
        for r in rows:
            g.setdefault(tuple(canon(v) for v in r[:nk]), []).append(r[nk:])
    out = dict(matched=0, mismatched=0, missing_in_stream=0, extra_in_stream=0,
               duplicate_keys_batch=sum(1 for v in gb.values() if len(v) > 1),
               duplicate_keys_stream=sum(1 for v in gs.values() if len(v) > 1))
    for k in set(gb) | set(gs):
        rb = sorted(gb.get(k, []), key=lambda r: [order_key(v) for v in r])
        rs = sorted(gs.get(k, []), key=lambda r: [order_key(v) for v in r])
        for x, y in zip(rb, rs):
            if all(same(sc, c, p, q) for c, (p, q) in enumerate(zip(x, y))):
                out["matched"] += 1
            else:
                out["mismatched"] += 1
        out["missing_in_stream"] += max(0, len(rb) - len(rs))
        out["extra_in_stream"] += max(0, len(rs) - len(rb))
    return out


def run(sc, seed, variant):
    d = f"{WORK}/{seed}"
    shutil.rmtree(d, ignore_errors=True)
    names = sc["keycols"] + sc["cols"]
    btypes = sc["keytypes"] + [ARROW[k] for k in sc["kinds"]]
    stypes = [pa.int64() if (sc["widen"] and t == pa.int32()) else
              sc["strings"] if t == pa.string() else t for t in btypes]
    nk = len(sc["keycols"])
    stream = sc["stream"]
    if sc["floated"]:
        stypes = [pa.float64() if i - nk in sc["floated"] else t for i, t in enumerate(stypes)]
        stream = [[float(v) if i - nk in sc["floated"] and v is not None else v for i, v in enumerate(r)]
                  for r in stream]
    write(sc["batch"], names, btypes, f"{d}/b", sc["rng"])
    write(stream, names, stypes, f"{d}/s", sc["rng"])
    results = {}
    for v in variant:
        if v == "compare":
            cmd = [BIN, "compare", "--batch", f"t={d}/b/", "--stream", f"t={d}/s/", "--sql",
                   sql(sc), "--format", "json", "--allow-empty"]
            if sc["keyed"]:
                cmd += ["--key", ",".join(sc["keycols"])]
            if sc["tolerance"]:
                cmd += ["--tolerance", f"c{sc['tolerance'][0]}={sc['tolerance'][1]}"]
        else:
            key = f'key = {json.dumps(sc["keycols"])}' if sc["keyed"] else ""
            if sc["tolerance"]:
                key += f'\ntolerance = {{ c{sc["tolerance"][0]} = "{sc["tolerance"][1]}" }}'
            extra = {"buckets": "[engine]\nbuckets = 3\n", "tiny": "",
                     "limited": f"[engine]\nmemory_limit = \"{MEMORY_LIMIT}\"\n"}[v]
            with open(f"{d}/c.toml", "w") as f:
                f.write(f'[tables.t]\nbatch = "{d}/b/"\nstream = "{d}/s/"\n\n[[checks]]\nname = "c"\n'
                        f'sql = {json.dumps(sql(sc))}\n{key}\nallow_empty = true\n\n{extra}')
            cmd = [BIN, "run", "--config", f"{d}/c.toml", "--format", "json", "--no-history"]
        env = dict(os.environ)
        if v == "tiny":
            env["DATAFUSION_EXECUTION_BATCH_SIZE"] = "3"
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        try:
            rep = json.loads(p.stdout)
            c = rep["checks"][0]
            results[v] = (c["status"], c.get("counts"), c.get("error"))
        except Exception as e:
            results[v] = ("crash", p.returncode, p.stderr[-400:])
    return results


def fuzz_arguments(doc, variants, work):
    """The command line every fuzzer here takes: the binary, the seeds, the variants, where
    failing cases are kept."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dualrun", required=True, help="the dualrun binary")
    parser.add_argument("--seeds", default="0:100", type=lambda text: range(*map(int, text.split(":"))),
                        help="FIRST:END, the seeds to run")
    parser.add_argument("--variants", default=variants, type=lambda text: text.split(","),
                        help=f"comma-separated (default {variants})")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), work))
    return parser


def main():
    parser = fuzz_arguments(__doc__, "compare,buckets,tiny", "dualrun-fuzz")
    parser.add_argument("--memory-limit", default="64MiB", help="the limited variant's limit")
    parser.add_argument("--rows", type=int, help="rows per case (e.g. 300000 with limited, to spill)")
    args = parser.parse_args()
    global BIN, WORK, MEMORY_LIMIT
    BIN, WORK, MEMORY_LIMIT = args.dualrun, args.work, args.memory_limit
    SEEDS = args.seeds

    fails = skipped = 0
    for seed in SEEDS:
        sc = scenario(seed, args.rows)
        want = oracle(sc)
        if sc.get("ambiguous"):
            skipped += 1
            continue
        got = run(sc, seed, args.variants)
        failed = False
        for v, (status, counts, err) in got.items():
            if counts != want:
                fails += 1
                failed = True
                print(f"seed {seed} {v}: status={status} err={err}\n  got  {counts}\n  want {want}\n"
                      f"  key={sc['keycols']} kinds={sc['kinds']} widen={sc['widen']} floated={sorted(sc['floated'])} rows={len(sc['batch'])}/{len(sc['stream'])} sql={sql(sc)} tolerance={sc['tolerance']}",
                      flush=True)
        # A failing seed's files stay to replay, even when another variant agreed.
        if not failed:
            shutil.rmtree(f"{WORK}/{seed}", ignore_errors=True)
    print(f"{fails} disagreements in {len(SEEDS) - skipped} cases x {len(args.variants)} variants"
          f" ({skipped} skipped: a relative bound within a rounding of a pair)")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
