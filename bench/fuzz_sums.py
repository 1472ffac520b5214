"""Differential fuzzing of exact float aggregates: random float values (12 to 600 decimal orders
of magnitude, subnormals, values that cancel, -0.0, sometimes NaN and infinities; Float64,
Float32 or integers) grouped by 1 to 1,000 keys, laid out in 1 to 40 files with row groups as
small as 7 rows; dualrun's SUM and AVG per group (on the stream side, through a per-side view)
must equal, to the bit, the correctly rounded exact sum a Python model computes (on the batch
side), as docs/semantics.md ("Exact float SUM and AVG") promises, whatever the layout. Sums
stay below 1e305, short of the double range's top, where the promise has a documented exception.

VAR_POP and STDDEV (sample) per group are checked twice: against the exact variance the model
computes with fractions (within a relative 1e-12: the final steps round a few times; the
variance of values whose squares leave the double range is NaN, and squares among the
subnormals lose bits, as documented), and, to the bit, against dualrun's own answer over the
same rows in one file in another order.

COVAR_SAMP, COVAR_POP, CORR and REGR_SLOPE per group run over pairs of their own (magnitudes within
1e±100, so no square or product leaves the normal range; y a multiple of x plus noise, or not;
some NULLs, NaNs and infinities): against the exact statistics of fractions (within 1e-12),
and, to the bit, against the same pairs in one file.

    .venv/bin/python bench/fuzz_sums.py --dualrun target/release/dualrun --seeds 0:300

The variants run each case as it is, with 3-row batches, and over 7 partitions."""
import json, math, os, random, shutil, struct, subprocess, sys
from fractions import Fraction
import pyarrow as pa

from fuzz_verdicts import fuzz_arguments, write

F32 = struct.Struct("<f")


def value(rng, kind, span):
    r = rng.random()
    if kind == "int":
        return rng.choice([rng.randint(-10**6, 10**6), rng.randint(-2**62, 2**62), 0, -1, 2**63 - 1])
    if r < 0.01:
        v = rng.choice([math.nan, math.inf, -math.inf])
    elif r < 0.05:
        # Not the top of the double range: a sum whose partial totals leave it is documented
        # as order-dependent (an infinity, or the exact sum), which no model can predict.
        v = rng.choice([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e300])
    else:
        v = rng.uniform(1, 10) * 10.0 ** rng.randint(-span, span) * rng.choice([1, -1])
    if kind == "f32" and math.isfinite(v):  # as a float32 column holds it
        try:
            return F32.unpack(F32.pack(v))[0]
        except OverflowError:
            return math.copysign(math.inf, v)
    return v


def scenario(seed):
    rng = random.Random(seed)
    kind = rng.choice(["f64", "f64", "f32", "int"])
    groups = rng.choice([1, 3, 16, 17, 1000])
    n = rng.choice([1, 10, 500, 5000])
    span = rng.choice([6, 12, 40, 300])
    rows = []
    for _ in range(n):
        g = rng.randrange(groups)
        v = value(rng, kind, span)
        rows.append([g, v])
        if rng.random() < 0.1 and isinstance(v, float) and math.isfinite(v):
            rows.append([rng.randrange(groups), -v])  # cancels, in this group or another
    rng.shuffle(rows)
    return dict(rng=rng, kind=kind, rows=rows, pairs=pairs(seed, groups, n))


def pairs(seed, groups, n):
    """Rows (g, x, y) for the covariance checks, from a generator of their own (so the
    SUM/VAR cases of a seed stay as they were)."""
    rng = random.Random(seed * 7919 + 1)
    span = rng.choice([3, 12, 100])
    slope = rng.choice([0.0, 1.0, -2.5, rng.uniform(-1e6, 1e6)])
    noise = rng.choice([0.0, 1e-9, 1.0, 1e6])
    # Mostly none: one NaN makes its whole group's statistics NaN.
    odd = rng.choice([0.0, 0.0, 1e-4, 0.01])

    def number():
        r = rng.random()
        if r < odd:
            return rng.choice([math.nan, math.inf, -math.inf])
        if r < odd + 0.03:
            return None
        if r < odd + 0.05:
            return rng.choice([0.0, -0.0])
        return rng.uniform(1, 10) * 10.0 ** rng.randint(-span, span) * rng.choice([1, -1])

    out = []
    for _ in range(n):
        x = number()
        y = number()
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) \
                and rng.random() < 0.8:
            y = slope * x + noise * rng.uniform(-1, 1)
        out.append([rng.randrange(groups), x, y])
    return out


def exact_sum(values):
    """The correctly rounded exact sum of the finite values; a sum beyond the double range is
    an infinity of its sign, then IEEE addition with the infinite values (NaN with any NaN or
    with infinities of both signs)."""
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return math.nan
    total = sum(Fraction(v) for v in values if math.isfinite(v))
    try:
        finite = float(total)
    except OverflowError:
        finite = math.inf if total > 0 else -math.inf
    infs = {v for v in values if math.isinf(v)}
    if math.isinf(finite):
        infs.add(finite)
    if len(infs) == 2:
        return math.nan
    return infs.pop() if infs else finite


def groups(sc):
    """Each group key with its values, in key order."""
    by = {}
    for g, v in sc["rows"]:
        by.setdefault(g, []).append(v)
    return sorted(by.items())


def model(sc):
    out = []
    for g, values in groups(sc):
        # AVG over integers reads each one as a double first (DataFusion's coercion).
        s = exact_sum([float(v) for v in values])
        out.append([g, s if sc["kind"] != "int" else None, s / len(values)])
    return out


def exact_variance(values, sample):
    """VAR_POP / VAR_SAMP as dualrun documents them: NULL for no value (and for one, sampled),
    0 for one value, NaN with a NaN, an infinity or a square beyond the double range."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0 or (n == 1 and sample):
        return None
    if n == 1:
        return 0.0
    if any(not math.isfinite(v) or math.isinf(v * v) for v in values):
        return math.nan
    exact = [Fraction(v) for v in values]
    total = sum(exact)
    m2 = sum(x * x for x in exact) - total * total / n
    return float(m2 / (n - 1 if sample else n))


def spread_model(sc):
    out = []
    for g, values in groups(sc):
        var_samp = exact_variance(values, True)
        out.append([g, exact_variance(values, False),
                    None if var_samp is None else math.sqrt(var_samp)])
    return out


def exact_co(pairs):
    """COVAR_SAMP, COVAR_POP, CORR and REGR_SLOPE(y, x) of the pairs whose values are both
    non-NULL, as dualrun documents them: NULL without enough pairs; NaN with a NaN or an
    infinity, except that CORR is NULL when only one column's sum is NaN; CORR NULL for a
    constant column, REGR_SLOPE for a constant x."""
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    n = len(pairs)
    finite = all(math.isfinite(v) for pair in pairs for v in pair)
    if finite and n:
        xs = [Fraction(x) for x, _ in pairs]
        ys = [Fraction(y) for _, y in pairs]
        mx, my = sum(xs) / n, sum(ys) / n
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
        sxx = sum((x - mx) ** 2 for x in xs)
        syy = sum((y - my) ** 2 for y in ys)
    samp = None if n < 2 else float(sxy / (n - 1)) if finite else math.nan
    pop = None if n == 0 else float(sxy / n) if finite else math.nan
    x_nan, y_nan = (n > 0 and math.isnan(exact_sum([p[i] for p in pairs])) for i in (0, 1))
    if x_nan and y_nan:
        r = math.nan
    elif n < 2 or x_nan or y_nan:
        r = None
    elif not finite:
        r = math.nan
    elif sxx == 0 or syy == 0:
        r = None
    else:
        r = math.copysign(math.sqrt(float(sxy * sxy / (sxx * syy))), sxy)
    if n < 2:
        slope = None
    elif not finite:
        slope = math.nan
    else:
        slope = None if sxx == 0 else float(sxy / sxx)
    return samp, pop, r, slope


def co_model(sc):
    by = {}
    for g, x, y in sc["pairs"]:
        by.setdefault(g, []).append((x, y))
    return [[g, *exact_co(p)] for g, p in sorted(by.items())]


SPREAD = "SELECT g, VAR_POP(x) AS v, STDDEV(x) AS sd FROM raw GROUP BY g"
CO = ("SELECT g, COVAR_SAMP(x, y) AS c, COVAR_POP(x, y) AS cp, CORR(x, y) AS r, "
      "REGR_SLOPE(y, x) AS k FROM pairs GROUP BY g")


def run(sc, d, variants):
    shutil.rmtree(d, ignore_errors=True)
    rng = sc["rng"]
    raw_type = {"f64": pa.float64(), "f32": pa.float32(), "int": pa.int64()}[sc["kind"]]
    write(sc["rows"], ["g", "x"], [pa.int64(), raw_type], f"{d}/raw", rng)
    write(model(sc), ["g", "s", "a"], [pa.int64(), pa.float64(), pa.float64()], f"{d}/expected", rng)
    write(spread_model(sc), ["g", "v", "sd"], [pa.int64(), pa.float64(), pa.float64()],
          f"{d}/spread", rng)
    # The same rows as one file, in the order they were drawn.
    write(sorted(sc["rows"], key=lambda r: r[0]), ["g", "x"], [pa.int64(), raw_type], f"{d}/one",
          random.Random(0))
    co_types = [pa.int64(), pa.float64(), pa.float64()]
    write(sc["pairs"], ["g", "x", "y"], co_types, f"{d}/pairs", rng)
    write(sorted(sc["pairs"], key=lambda r: r[0]), ["g", "x", "y"], co_types, f"{d}/pairs_one",
          random.Random(0))
    write(co_model(sc), ["g", "c", "cp", "r", "k"], [pa.int64()] + [pa.float64()] * 4, f"{d}/co",
          rng)
    # SUM over integers is DataFusion's integer sum; only AVG is a float aggregate there.
    s = "CAST(NULL AS DOUBLE)" if sc["kind"] == "int" else "SUM(x)"
    results = {}
    checks = {
        "sums": ["--batch", f"expected={d}/expected/", "--stream", f"raw={d}/raw/",
                 "--batch-view", "t=SELECT g, s, a FROM expected",
                 "--stream-view", f"t=SELECT g, {s} AS s, AVG(x) AS a FROM raw GROUP BY g"],
        "spread": ["--batch", f"expected={d}/spread/", "--stream", f"raw={d}/raw/",
                   "--batch-view", "t=SELECT g, v, sd FROM expected",
                   "--stream-view", f"t={SPREAD}",
                   # Squares under ~1e-308 are subnormal and lose bits: an absolute floor.
                   "--tolerance", "v=abs:1e-290,rel:1e-12",
                   "--tolerance", "sd=abs:1e-145,rel:1e-12"],
        "spread layout": ["--batch", f"raw={d}/one/", "--stream", f"raw={d}/raw/",
                          "--batch-view", f"t={SPREAD}", "--stream-view", f"t={SPREAD}"],
        "co": ["--batch", f"expected={d}/co/", "--stream", f"pairs={d}/pairs/",
               "--batch-view", "t=SELECT g, c, cp, r, k FROM expected",
               "--stream-view", f"t={CO}",
               "--tolerance", "c=abs:1e-290,rel:1e-12", "--tolerance", "cp=abs:1e-290,rel:1e-12",
               "--tolerance", "r=abs:1e-12", "--tolerance", "k=abs:1e-290,rel:1e-12"],
        "co layout": ["--batch", f"pairs={d}/pairs_one/", "--stream", f"pairs={d}/pairs/",
                      "--batch-view", f"t={CO}", "--stream-view", f"t={CO}"],
    }
    for v, (check, args) in ((v, c) for v in variants for c in checks.items()):
        cmd = [BIN, "compare", *args, "--sql", "SELECT * FROM t", "--key", "g", "--format", "json"]
        env = dict(os.environ)
        if v == "tiny":
            env["DATAFUSION_EXECUTION_BATCH_SIZE"] = "3"
        elif v == "parts":
            env["DATAFUSION_EXECUTION_TARGET_PARTITIONS"] = "7"
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        try:
            c = json.loads(p.stdout)["checks"][0]
            results[f"{v} {check}"] = (c["status"], c.get("counts"), c.get("samples"),
                                       c.get("error"))
        except Exception:
            results[f"{v} {check}"] = ("crash", p.returncode, None, p.stderr[-400:])
    return results


def main():
    args = fuzz_arguments(__doc__, "run,tiny,parts", "dualrun-fuzz-sums").parse_args()
    global BIN
    BIN = args.dualrun
    variants = args.variants
    fails = 0
    for seed in args.seeds:
        sc = scenario(seed)
        d = f"{args.work}/{seed}"
        ok_all = True
        for v, (status, counts, samples, err) in run(sc, d, variants).items():
            if status != "match":
                ok_all = False
                fails += 1
                print(f"seed {seed} {v}: status={status} err={err}\n  counts {counts}\n"
                      f"  samples {json.dumps(samples)[:600]}\n  kind={sc['kind']} rows={len(sc['rows'])}",
                      flush=True)
        if ok_all:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{fails} disagreements in {len(args.seeds)} cases x {len(variants)} variants")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
