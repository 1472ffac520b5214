//! The migration gate, night by night: a twelve-night simulation of a team running
//! `dualrun run --param run_date=…` every night while the stream's data lands, diverges, lags and
//! recovers, asserting the streaks and the gate after every night.

use crate::common::{Fmt, Workspace};
use serde_json::Value;

fn day(n: u32) -> String {
    format!("2026-11-{n:02}")
}

const CONFIG: &str = r#"
[tables.orders]
batch = "batch/orders/"
stream = "stream/orders/"

[tables.events]
batch = "batch/events/"
stream = "stream/events/"
watermark = "max(event_time)"
lateness = "1h"

[[checks]]
name = "daily_revenue"
sql = "SELECT dt, sum(amount) AS revenue, count(*) AS orders FROM orders WHERE dt = $run_date GROUP BY dt"
key = ["dt"]

[[checks]]
name = "daily_events"
sql = "SELECT dt, count(*) AS events FROM events WHERE dt = $run_date GROUP BY dt"
key = ["dt"]

[gate]
clean_runs = 7

[history]
url = "HISTORY"

[metrics]
textfile = "dualrun.prom"
"#;

struct Simulation {
    ws: Workspace,
    env: Vec<(&'static str, String)>,
}

impl Simulation {
    fn new(history_url: &str, env: Vec<(&'static str, String)>) -> Simulation {
        let ws = Workspace::new();
        ws.write("dualrun.toml", &CONFIG.replace("HISTORY", history_url));
        // The stream already holds the first event of night 1 (it arrives at 02:00).
        ws.table_file(
            &format!("stream/events/dt={}/early.parquet", day(1)),
            Fmt::Parquet,
            &events_sql(1, &["02:00:00"]),
        );
        Simulation { ws, env }
    }

    /// Both pipelines write day `n`. The stream also delivers the first event of day `n + 1`,
    /// which moves its watermark past day `n`'s window end plus the lateness.
    fn land_day(&self, n: u32, stream_revenue_bug: bool) {
        self.land_day_without_stream_events(n, stream_revenue_bug);
        self.land_stream_events(n);
    }

    /// Both pipelines write day `n`, except the stream's events (they land late).
    fn land_day_without_stream_events(&self, n: u32, stream_revenue_bug: bool) {
        let orders = "SELECT * FROM (VALUES (1, 10.0), (2, 20.5)) AS t(id, amount)";
        let buggy = "SELECT * FROM (VALUES (1, 10.0), (2, 25.5)) AS t(id, amount)";
        self.ws.table_file(
            &format!("batch/orders/dt={}/part-0.parquet", day(n)),
            Fmt::Parquet,
            orders,
        );
        self.ws.table_file(
            &format!("stream/orders/dt={}/mb-0.parquet", day(n)),
            Fmt::Parquet,
            if stream_revenue_bug { buggy } else { orders },
        );
        self.ws.table_file(
            &format!("batch/events/dt={}/part-0.parquet", day(n)),
            Fmt::Parquet,
            &events_sql(n, &["02:00:00", "10:00:00", "23:30:00"]),
        );
    }

    fn land_stream_events(&self, n: u32) {
        self.ws.table_file(
            &format!("stream/events/dt={}/late.parquet", day(n)),
            Fmt::Parquet,
            &events_sql(n, &["10:00:00", "23:30:00"]),
        );
        self.ws.table_file(
            &format!("stream/events/dt={}/early.parquet", day(n + 1)),
            Fmt::Parquet,
            &events_sql(n + 1, &["02:00:00"]),
        );
    }

    fn night(&self, n: u32) -> (i32, Value) {
        let run = self.run(&[
            "run",
            "--config",
            "dualrun.toml",
            "--param",
            &format!("run_date={}", day(n)),
            "--format",
            "json",
        ]);
        let status = run.json()["status"].clone();
        assert!(
            run.code != 2 || status == "error",
            "night {n}: {}",
            run.stderr
        );
        (run.code, run.json())
    }

    fn gate(&self) -> (i32, Value) {
        let run = self.run(&["gate", "--config", "dualrun.toml", "--format", "json"]);
        assert!(
            run.code == 0 || run.code == 1,
            "gate: {}\n{}",
            run.stdout,
            run.stderr
        );
        (run.code, run.json())
    }
}

fn events_sql(n: u32, times: &[&str]) -> String {
    let rows: Vec<String> = times
        .iter()
        .map(|t| format!("('{}-{t}', TIMESTAMP '{} {t}')", n, day(n)))
        .collect();
    format!(
        "SELECT * FROM (VALUES {}) AS t(event_id, event_time)",
        rows.join(", ")
    )
}

fn check<'a>(gate: &'a Value, name: &str) -> &'a Value {
    gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// (clean_streak, open, stage) of a check.
fn state(gate: &Value, name: &str) -> (u64, bool, String) {
    let c = check(gate, name);
    (
        c["clean_streak"].as_u64().unwrap(),
        c["open"].as_bool().unwrap(),
        c["stage"].as_str().unwrap().to_string(),
    )
}

fn simulate(history_url: &str, env: Vec<(&'static str, String)>) {
    let sim = Simulation::new(history_url, env);
    let proving = |n: u64| (n, false, "proving".to_string());
    let proven = |n: u64| (n, true, "proven".to_string());

    // Nights 1–2: the stream's revenue is wrong.
    for n in 1..=2 {
        sim.land_day(n, true);
        let (code, report) = sim.night(n);
        assert_eq!(code, 1, "night {n} diverges");
        assert_eq!(report["gate"]["ready"], false);
        let (_, gate) = sim.gate();
        assert_eq!(
            state(&gate, "daily_revenue"),
            (0, false, "diverging".into()),
            "night {n}"
        );
        assert_eq!(
            state(&gate, "daily_events"),
            proving(u64::from(n)),
            "night {n}"
        );
    }
    // Nights 3–8: fixed; the streak grows but is not long enough.
    for n in 3..=8 {
        if n == 5 {
            // Night 5: the stream lags. Its last events have not landed: not ready, not diverged.
            sim.land_day_without_stream_events(n, false);
            let (code, report) = sim.night(n);
            assert_eq!(code, 3, "night 5 is not ready: {report}");
            assert_eq!(report["checks"][1]["status"], "not_ready");
            assert_eq!(report["checks"][1]["readiness"]["table"], "events");
            assert_eq!(
                report["checks"][1]["readiness"]["window_end"],
                "2026-11-06T00:00:00Z"
            );
            assert_eq!(
                report["checks"][1]["readiness"]["watermark"],
                "2026-11-05T02:00:00Z"
            );
            let (_, gate) = sim.gate();
            // not_ready neither counts nor resets, but the newest night has no verdict: closed.
            assert_eq!(state(&gate, "daily_events"), proving(4));
            assert_eq!(check(&gate, "daily_events")["latest_status"], "not_ready");
            // The stream catches up; the same night runs again and replaces the verdict.
            sim.land_stream_events(n);
        } else {
            sim.land_day(n, false);
        }
        let (code, _) = sim.night(n);
        assert_eq!(code, 0, "night {n} matches");
        let (gate_code, gate) = sim.gate();
        assert_eq!(
            state(&gate, "daily_revenue"),
            proving(u64::from(n) - 2),
            "night {n}"
        );
        let events = u64::from(n);
        if n >= 7 {
            assert_eq!(state(&gate, "daily_events"), proven(events), "night {n}");
        } else {
            assert_eq!(state(&gate, "daily_events"), proving(events), "night {n}");
        }
        assert_eq!(gate_code, 1, "not ready before night 9");
    }
    // Night 9: the seventh clean night in a row opens daily_revenue's gate, and with it batch removal.
    sim.land_day(9, false);
    let (_, report) = sim.night(9);
    assert_eq!(report["gate"]["ready"], true);
    let (gate_code, gate) = sim.gate();
    assert_eq!(gate_code, 0);
    assert_eq!(state(&gate, "daily_revenue"), proven(7));
    assert_eq!(gate["proven"], 2);
    assert_eq!(gate["required"], 2);
    let metrics = std::fs::read_to_string(sim.ws.path("dualrun.prom")).unwrap();
    assert!(metrics.contains("dualrun_gate_ready 1"), "{metrics}");
    assert!(
        metrics.contains("dualrun_gate_clean_streak{check=\"daily_revenue\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dualrun_gate_open{check=\"daily_revenue\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dualrun_gate_required_runs{check=\"daily_revenue\"} 7"),
        "{metrics}"
    );

    // Night 10, run twice: the same params count once.
    sim.land_day(10, false);
    sim.night(10);
    sim.night(10);
    let (_, gate) = sim.gate();
    assert_eq!(state(&gate, "daily_revenue"), proven(8));

    // Night 11: the stream's orders are unreachable: an error neither counts nor resets, but
    // closes the gate until the night has a verdict.
    sim.land_day(11, false);
    std::fs::rename(
        sim.ws.path("stream/orders"),
        sim.ws.path("stream/orders.away"),
    )
    .unwrap();
    let (code, _) = sim.night(11);
    assert_eq!(code, 2);
    let (gate_code, gate) = sim.gate();
    assert_eq!(gate_code, 1);
    assert_eq!(state(&gate, "daily_revenue"), proving(8));
    assert_eq!(check(&gate, "daily_revenue")["latest_status"], "error");
    std::fs::rename(
        sim.ws.path("stream/orders.away"),
        sim.ws.path("stream/orders"),
    )
    .unwrap();
    sim.night(11);
    let (gate_code, gate) = sim.gate();
    assert_eq!(gate_code, 0);
    assert_eq!(state(&gate, "daily_revenue"), proven(9));

    // Night 12: a new divergence closes the gate and resets the streak.
    sim.land_day(12, true);
    let (code, report) = sim.night(12);
    assert_eq!(code, 1);
    assert_eq!(report["gate"]["ready"], false);
    let (gate_code, gate) = sim.gate();
    assert_eq!(gate_code, 1);
    assert_eq!(
        state(&gate, "daily_revenue"),
        (0, false, "diverging".into())
    );
    let last = &check(&gate, "daily_revenue")["last_divergence"];
    assert_eq!(last["params"], "{\"run_date\":\"2026-11-12\"}");
    assert_eq!(state(&gate, "daily_events"), proven(12));

    // The history reads back as a table: one record per check run (night 5 and 10 twice, 11 twice).
    let run = sim.run(&[
        "history",
        "--config",
        "dualrun.toml",
        "--check",
        "daily_revenue",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = run.json();
    assert_eq!(records.as_array().unwrap().len(), 15);
    assert_eq!(records[0]["status"], "diverged");
    assert_eq!(records[0]["run_date"], "2026-11-01");
    assert_eq!(records[0]["matched"], 0);
    assert_eq!(records[0]["mismatched"], 1);

    // Changing the check's SQL restarts its streak: the old runs prove another query.
    let config = std::fs::read_to_string(sim.ws.path("dualrun.toml")).unwrap();
    sim.ws.write(
        "dualrun.toml",
        &config.replace("count(*) AS orders", "count(*) AS order_count"),
    );
    let (_, gate) = sim.gate();
    assert_eq!(state(&gate, "daily_revenue"), (0, false, "no_runs".into()));
}

impl Simulation {
    fn run(&self, args: &[&str]) -> crate::common::Run {
        let run = self.ws.run_with_env(args, &self.env);
        assert!(
            !run.stdout.contains(crate::common::SECRET)
                && !run.stderr.contains(crate::common::SECRET),
            "a secret leaked"
        );
        run
    }
}

#[test]
fn twelve_nights_on_a_local_history() {
    simulate(".dualrun/history/", Vec::new());
}

#[test]
fn twelve_nights_on_an_s3_history() {
    let s3 = crate::common::S3Server::start();
    s3.create_bucket("lake");
    simulate("s3://lake/dualrun/history/", s3.env());
}

/// Nights without data prove nothing: six runs on dates with no rows (and one on a date that is
/// no date) are `empty`, exit 4, and leave the streak where real nights put it; the gate stays
/// closed and says how many nights were empty. A check that allows empty results counts them.
#[test]
fn empty_nights_are_no_evidence_for_the_gate() {
    let ws = Workspace::new();
    ws.write(
        "dualrun.toml",
        r#"
[tables.orders]
batch = "batch/orders/"
stream = "stream/orders/"

[[checks]]
name = "daily_revenue"
sql = "SELECT dt, sum(amount) AS revenue FROM orders WHERE dt = $run_date GROUP BY dt"
key = ["dt"]

[[checks]]
name = "refunds"
sql = "SELECT dt, count(*) AS n FROM orders WHERE dt = $run_date AND amount < 0 GROUP BY dt"
key = ["dt"]
allow_empty = true

[gate]
clean_runs = 3
"#,
    );
    let orders = "SELECT * FROM (VALUES (1, 10.0), (2, 20.5)) AS t(id, amount)";
    for n in 1..=2 {
        for side in ["batch", "stream"] {
            ws.table_file(
                &format!("{side}/orders/dt={}/part-0.parquet", day(n)),
                Fmt::Parquet,
                orders,
            );
        }
    }
    let night = |date: &str| {
        let run = ws.run(&[
            "run",
            "--config",
            "dualrun.toml",
            "--param",
            &format!("run_date={date}"),
            "--format",
            "json",
        ]);
        (run.code, run.json(), run.stderr)
    };
    for n in 1..=2 {
        let (code, report, stderr) = night(&day(n));
        assert_eq!(
            code, 0,
            "night {n} matches (refunds: empty but allowed): {stderr}"
        );
        assert_eq!(report["checks"][0]["status"], "match");
        assert_eq!(report["checks"][1]["status"], "match");
    }
    // Six nights in 2030: no rows on either side.
    for n in 1..=6 {
        let (code, report, _) = night(&format!("2030-01-{n:02}"));
        assert_eq!(code, 4, "an empty night exits 4: {report}");
        assert_eq!(report["status"], "empty");
        assert_eq!(report["checks"][0]["status"], "empty");
        assert_eq!(report["checks"][1]["status"], "match", "allow_empty");
    }
    let gate = ws.run(&["gate", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(gate.code, 1, "batch removal is not ready: {}", gate.stdout);
    let gate = gate.json();
    let revenue = check(&gate, "daily_revenue");
    assert_eq!(revenue["clean_streak"], 2, "{revenue}");
    assert_eq!(revenue["empty_nights"], 6, "{revenue}");
    assert_eq!(revenue["open"], false);
    assert_eq!(revenue["latest_status"], "empty");
    let refunds = check(&gate, "refunds");
    assert_eq!(
        refunds["clean_streak"], 8,
        "allowed empty nights count: {refunds}"
    );
    assert_eq!(refunds["open"], true);
    assert_eq!(gate["ready"], false);

    let text = ws.run(&["gate", "--config", "dualrun.toml"]);
    assert!(text.stdout.contains("empty nights"), "{}", text.stdout);
    assert!(text.stdout.contains("NOT READY"), "{}", text.stdout);

    // A date that is no date is refused before anything runs: no record, no verdict.
    let typo = ws.run(&[
        "run",
        "--config",
        "dualrun.toml",
        "--param",
        "run_date=2026-13-45",
    ]);
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    assert!(
        typo.stderr
            .contains("'run_date' = '2026-13-45' is not a date"),
        "{}",
        typo.stderr
    );
    let history = ws.run(&["history", "--config", "dualrun.toml", "--format", "json"]);
    assert_eq!(
        history.json().as_array().unwrap().len(),
        16,
        "8 nights x 2 checks"
    );

    // A seventh night with data makes three clean nights in a row: the gate opens.
    for side in ["batch", "stream"] {
        ws.table_file(
            &format!("{side}/orders/dt=2030-01-07/part-0.parquet"),
            Fmt::Parquet,
            orders,
        );
    }
    let (code, _, stderr) = night("2030-01-07");
    assert_eq!(code, 0, "{stderr}");
    let gate = ws
        .run(&["gate", "--config", "dualrun.toml", "--format", "json"])
        .json();
    let revenue = check(&gate, "daily_revenue");
    assert_eq!(revenue["clean_streak"], 3, "{revenue}");
    assert_eq!(revenue["open"], true, "three nights with evidence");
}
