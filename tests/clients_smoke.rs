//! Keeps the client-language comparison (`bench/clients/run.sh`) from rotting: a seconds-long
//! run against streamgate, NATS JetStream and RabbitMQ must print a figure for every row. No
//! figure is judged here: speed is measured by the comparison itself, never asserted in a test.
//! The script installs what it needs (its Python packages into `bench/clients/.venv`; nats-server
//! and rabbitmq-server from Debian's packages when missing).

use std::process::Command;

#[test]
fn the_client_comparison_runs_every_workload_on_every_system() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/bench/clients/run.sh"))
        .arg(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "--messages",
            "500",
            "--runs",
            "1",
            "--latency-seconds",
            "0.5",
        ])
        .output()
        .expect("run bench/clients/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the comparison failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("| publish") || l.starts_with("| consume") || l.starts_with("| Node")
        })
        .collect();
    assert_eq!(rows.len(), 7, "{stdout}");
    // The shared rows (publish twice, consume with 1 and 4 consumer processes) have a rate for
    // each of the three systems and both ratios.
    for row in &rows[..4] {
        assert_eq!(row.matches("/s (").count(), 3, "{row}");
        assert!(!row.trim_end().ends_with("| — |"), "{row}");
    }
    // End-to-end latency at both rates, for every system.
    let latency: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("msg/s: p50 / p99"))
        .collect();
    assert_eq!(latency.len(), 2, "{stdout}");
    for row in latency {
        assert_eq!(row.matches(" ms at ").count(), 3, "{row}");
    }
}
