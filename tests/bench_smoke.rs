//! Keeps `streamgate-bench` from rotting: its smoke mode (seconds, tiny sizes) must run every
//! workload and report a figure for each. No figure is judged here: speed is measured by the
//! benchmark itself, in a release build, never asserted in a test.

use std::process::Command;

#[test]
fn the_benchmark_runs_every_workload_in_smoke_mode() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate-bench"))
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run streamgate-bench (redis-server must be installed: scripts/test.sh does it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| workload | broker | raw redis-rs | broker/raw | target |"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let throughput = report["throughput"].as_array().expect("throughput rows");
    assert_eq!(throughput.len(), 13, "{throughput:?}");
    for row in throughput {
        assert!(row["broker"].as_f64().unwrap() > 0.0, "{row}");
        if let Some(raw) = row["raw"].as_f64() {
            assert!(raw > 0.0, "{row}");
        }
    }
    let latency = &report["latency"][0];
    assert!(latency["p50_ms"].as_f64().unwrap() > 0.0, "{latency}");
    assert!(
        latency["p99_ms"].as_f64().unwrap() >= latency["p50_ms"].as_f64().unwrap(),
        "{latency}"
    );
    let idle = &report["idle"][0];
    assert_eq!(idle["subscriptions"], 20);
    assert!(idle["redis_connections"].as_u64().unwrap() >= 1, "{idle}");
}

/// The soak run's smoke: a minute at a small scale, with churn, nacks and dead letters; every
/// figure of its table and totals is printed, and nothing is lost (the run fails otherwise).
#[test]
fn the_soak_run_prints_every_figure_in_a_minute() {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate-bench"))
        .args([
            "--soak",
            "60s",
            "--soak-window",
            "20s",
            "--soak-rate",
            "400",
            "--soak-streams",
            "10",
            "--soak-subscriptions",
            "50",
        ])
        .output()
        .expect("run streamgate-bench --soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "broker RSS MiB",
        "tasks",
        "subscriptions open",
        "wake-up registrations",
        "swept groups",
        "Redis clients",
        "of them the broker's",
        "connections opened",
        "metric series",
        "p99 e2e ms",
    ] {
        assert!(stdout.contains(figure), "{figure} missing:\n{stdout}");
    }
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("minute"))
        .collect();
    assert!(rows.len() >= 3, "a row per window:\n{stdout}");
    for row in &rows {
        // Every cell a number, none of them the -1 of a figure that could not be read.
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 13, "{row}");
        for cell in cells {
            let value: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell} in {row}"));
            assert!(value >= 0.0, "{row}");
        }
    }
    let totals = stdout
        .lines()
        .find(|l| l.starts_with("sent "))
        .expect("totals");
    for word in [
        "delivered",
        "acknowledged",
        "dead-lettered",
        "lost 0",
        "left pending",
    ] {
        assert!(totals.contains(word), "{word}: {totals}");
    }
}
