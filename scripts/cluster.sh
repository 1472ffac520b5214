#!/usr/bin/env bash
# A real Ballista cluster on loopback: one ballista-scheduler and two ballista-executors (the
# same major version as the ballista crate dualrun links, installed with `cargo install` when
# missing), then either
#   demo   the demo's nightly job against the cluster, its verdicts checked against embedded
#   bench  the 5M-row benchmark, embedded and through the cluster, in one run
# The cluster is stopped when the script ends, whatever happens.
set -euo pipefail
mode=${1:-demo}
cd "$(dirname "$0")/.."
BALLISTA_VERSION=55.0.0
PORT=${BALLISTA_PORT:-50050}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh build
for tool in ballista-scheduler ballista-executor; do
  if ! "$tool" --version 2>/dev/null | grep -q "$BALLISTA_VERSION"; then
    echo "cluster: installing $tool $BALLISTA_VERSION (cargo install; takes a while once)" >&2
    cargo install --locked --quiet "$tool@$BALLISTA_VERSION"
  fi
done
echo "cluster: building dualrun with the ballista feature" >&2
cargo build --release --quiet --features ballista --bin dualrun --example datafusion_diff
dualrun=$CARGO_TARGET_DIR/release/dualrun

work=$(mktemp -d -t dualrun-cluster.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

wait_port() {  # wait_port PORT NAME LOG
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "cluster: $2 did not open port $1; its log:" >&2
  tail -20 "$3" >&2
  exit 1
}

ballista-scheduler --bind-host 127.0.0.1 --external-host 127.0.0.1 --bind-port "$PORT" \
  >"$work/scheduler.log" 2>&1 &
pids+=($!)
wait_port "$PORT" scheduler "$work/scheduler.log"
for i in 1 2; do
  base=$((PORT + 10 * i))
  mkdir -p "$work/executor-$i"
  ballista-executor --bind-host 127.0.0.1 --external-host 127.0.0.1 \
    --scheduler-host 127.0.0.1 --scheduler-port "$PORT" --scheduler-connect-timeout-seconds 20 \
    --bind-port "$base" --bind-grpc-port $((base + 1)) --bind-health-port $((base + 2)) \
    --vcores 1 --work-dir "$work/executor-$i" >"$work/executor-$i.log" 2>&1 &
  pids+=($!)
  wait_port "$base" "executor $i" "$work/executor-$i.log"
done
engine="ballista://127.0.0.1:$PORT"
echo "cluster: scheduler on 127.0.0.1:$PORT, two executors (1 vcore each)" >&2

case "$mode" in
  demo)
    status=0
    "$dualrun" run --config dualrun.toml --engine "$engine" || status=$?
    "$dualrun" run --config dualrun.toml --engine "$engine" --format json --output "$work/cluster.json" || true
    "$dualrun" run --config dualrun.toml --format json --output "$work/embedded.json" || true
    python3 - "$work/embedded.json" "$work/cluster.json" <<'PY'
import json, sys
embedded, cluster = (json.load(open(p)) for p in sys.argv[1:3])
def verdicts(report):
    return [(c["name"], c["status"], c["rows"], c["counts"],
             [(col["name"], col["mismatched"]) for col in c["columns"]], c["error"])
            for c in report["checks"]]
e, c = verdicts(embedded), verdicts(cluster)
for a, b in zip(e, c):
    print(f"  {a[0]:<22} embedded {a[1]:<9} cluster {b[1]:<9} {'same' if a == b else 'DIFFERENT'}")
if e != c or len(e) != len(c):
    sys.exit("cluster-demo: the cluster's verdicts differ from embedded DataFusion's")
print("cluster-demo: same verdicts, counts and per-column counts on the cluster as embedded")
PY
    if [ "$status" -ne 1 ]; then
      echo "cluster-demo: unexpected exit code $status (expected 1: diverged)" >&2
      exit 1
    fi
    ;;
  bench)
    scripts/setup.sh bench
    .venv/bin/python bench/run.py --dualrun "$dualrun" --repeat "${REPEAT:-3}" --stages unsorted
    .venv/bin/python bench/run.py --dualrun "$dualrun" --repeat "${REPEAT:-3}" --stages unsorted \
      --extra-args "--engine $engine"
    # The client's RSS above is only dualrun's; the work ran in the executors.
    for i in 1 2; do
      pid=${pids[$i]}
      echo "executor $i peak RSS: $(awk '/VmHWM/ {printf "%d MiB", $2 / 1024}' "/proc/$pid/status")"
    done
    ;;
  *)
    echo "usage: scripts/cluster.sh demo|bench" >&2
    exit 2
    ;;
esac
