//! `streamgate-bench`: the broker against raw Redis, in one run, on one machine.
//!
//! It starts its own `redis-server` and `streamgate` (the binary next to this one) on free
//! loopback ports unless given `--redis-url` / `--broker`, runs every workload against the
//! broker and, where there is one, the same work done directly with redis-rs at the same
//! concurrency, and prints a table of figures with broker/raw ratios (and JSON with `--json`).
//!
//! Figures move with whatever else the machine does: compare ratios from one run, and take the
//! median of several runs (`--runs`).

mod hops;
mod setup;
mod soak;
mod workloads;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

use workloads::Bench;

/// Benchmark streamgate against raw Redis.
#[derive(Debug, Parser)]
#[command(name = "streamgate-bench", version)]
struct Args {
    /// Use this Redis instead of starting one (it must be empty of `bench-*` keys).
    #[arg(long)]
    redis_url: Option<String>,
    /// Use this broker (host:port) instead of starting one; it must use the same Redis.
    #[arg(long, requires = "redis_url")]
    broker: Option<String>,
    /// Concurrent producers.
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// How long each throughput measurement runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Messages pre-filled for each consume measurement.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Requests each streaming producer keeps outstanding.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// End-to-end latency rates, messages per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    rates: Vec<u64>,
    /// Idle subscription counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    idle: Vec<usize>,
    /// Broker connection pool size (when this run starts the broker).
    #[arg(long, default_value_t = 8)]
    pool_size: u32,
    /// Run everything this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// A seconds-long run of every workload with tiny sizes, to keep this tool from rotting.
    #[arg(long)]
    smoke: bool,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Instead of the benchmark: a soak run of this long (`1h`; see `soak.rs`), printing a
    /// table per `--soak-window` and the totals.
    #[arg(long, value_parser = humantime::parse_duration)]
    soak: Option<Duration>,
    /// The soak's window between two rows.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    soak_window: Duration,
    /// The soak's produce rate, messages per second.
    #[arg(long, default_value_t = 5000)]
    soak_rate: u64,
    /// The soak's streams.
    #[arg(long, default_value_t = 100)]
    soak_streams: usize,
    /// The soak's subscriptions (a tenth reconnect every minute).
    #[arg(long, default_value_t = 1000)]
    soak_subscriptions: usize,
    /// Start the broker with its metrics endpoint and print, for each latency row, where the
    /// time went inside the broker (`streamgate_hop_seconds`). Recording costs a little, so
    /// the throughput rows of such a run are not comparable with one without it.
    #[arg(long, conflicts_with = "broker")]
    hops: bool,
    /// Run only these workload groups (for profiling one thing at a time).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,
}

/// Workload groups, as `--only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Unary Produce at batch 1 and 100, 100 B and 1 KiB.
    Produce,
    /// Single-message Produce against an empty unary call.
    Unary,
    /// ProduceStream.
    Stream,
    /// Group consume + ack.
    Consume,
    /// Fan-out to tail subscribers.
    Fanout,
    /// End-to-end latency.
    Latency,
    /// Idle subscriptions.
    Idle,
    /// Produce to a partitioned topic on a 3-master vs a 1-master Redis Cluster.
    Topic,
}

impl Args {
    fn runs(&self, group: Group) -> bool {
        self.only.is_empty() || self.only.contains(&group)
    }
}

impl Args {
    fn shrink_for_smoke(&mut self) {
        self.duration = Duration::from_millis(300);
        self.messages = 2_000;
        self.rates = vec![500];
        self.idle = vec![20];
        self.producers = 4;
    }
}

/// One measured row: a workload, the broker's figure, raw Redis's, and the target.
struct Row {
    name: String,
    unit: &'static str,
    broker: f64,
    raw: Option<f64>,
    target: &'static str,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.raw.map(|raw| self.broker / raw)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Each latency measurement's median over the runs (percentile by percentile).
fn median_latencies(runs: &[Vec<workloads::Latency>]) -> Vec<workloads::Latency> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let of = |i: usize, pick: fn(&workloads::Latency) -> f64| {
        median(runs.iter().map(|run| pick(&run[i])).collect())
    };
    (0..first.len())
        .map(|i| workloads::Latency {
            achieved_rate: of(i, |l| l.achieved_rate),
            p50_ms: of(i, |l| l.p50_ms),
            p99_ms: of(i, |l| l.p99_ms),
            p999_ms: of(i, |l| l.p999_ms),
            redis_commands_per_message: of(i, |l| l.redis_commands_per_message),
            ..first[i].clone()
        })
        .collect()
}

/// Each idle measurement's Produce p99s as medians over the runs (a p99 of 2,000 calls moves
/// by tens of percent between runs on a shared machine); the rest from the last run.
fn median_idles(runs: &[Vec<workloads::Idle>]) -> Vec<workloads::Idle> {
    let Some(last) = runs.last() else {
        return Vec::new();
    };
    let of = |i: usize, pick: fn(&workloads::Idle) -> f64| {
        median(runs.iter().map(|run| pick(&run[i])).collect())
    };
    (0..last.len())
        .map(|i| workloads::Idle {
            produce_p99_before_ms: of(i, |idle| idle.produce_p99_before_ms),
            produce_p99_ms: of(i, |idle| idle.produce_p99_ms),
            ..last[i]
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.shrink_for_smoke();
    }
    let dir = tempfile::tempdir()?;
    if let Some(duration) = args.soak {
        return soak_run(&args, duration, dir.path()).await;
    }
    let (redis_url, _redis) = match &args.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let (url, guard) = setup::start_redis(dir.path())?;
            (url, Some(guard))
        }
    };
    let mut metrics_addr = None;
    let (addr, broker) = match &args.broker {
        Some(addr) => {
            setup::wait_serving(addr).await?;
            (addr.clone(), None)
        }
        None if args.hops => {
            let (addr, metrics, guard) =
                setup::start_broker_with_metrics(&redis_url, args.pool_size, "1h").await?;
            metrics_addr = Some(metrics);
            (addr, Some(guard))
        }
        None => {
            let (addr, guard) = setup::start_broker(&redis_url, args.pool_size).await?;
            (addr, Some(guard))
        }
    };
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(setup::connect(&addr).await?);
    }
    let redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connect to redis")?;
    let bench = Bench {
        addr,
        channels,
        redis,
        broker_pid: broker.as_ref().and_then(setup::Guard::pid),
        producers: args.producers,
        duration: args.duration,
        messages: args.messages,
        window: args.window,
        metrics: metrics_addr,
    };

    let mut runs: Vec<Vec<Row>> = Vec::new();
    let mut latency_runs = Vec::new();
    let mut idle_runs = Vec::new();
    let epoch = Instant::now();
    for run in 0..args.runs {
        eprintln!("run {} of {}", run + 1, args.runs);
        let (rows, lat, idle) = run_once(&bench, &args, epoch).await?;
        runs.push(rows);
        latency_runs.push(lat);
        idle_runs.push(idle);
    }
    let latencies = median_latencies(&latency_runs);
    let idles = median_idles(&idle_runs);
    let rows: Vec<Row> = (0..runs.first().map_or(0, Vec::len))
        .map(|i| Row {
            name: runs[0][i].name.clone(),
            unit: runs[0][i].unit,
            broker: median(runs.iter().map(|r| r[i].broker).collect()),
            raw: runs[0][i]
                .raw
                .map(|_| median(runs.iter().filter_map(|r| r[i].raw).collect())),
            target: runs[0][i].target,
        })
        .collect();
    print_report(&args, &rows, &latencies, &idles);
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&to_json(&args, &rows, &latencies, &idles))?,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The soak run, on a Redis and broker of its own.
async fn soak_run(args: &Args, duration: Duration, dir: &std::path::Path) -> anyhow::Result<()> {
    let (redis_url, _redis) = setup::start_redis(dir)?;
    let (addr, metrics, broker) = setup::start_broker_with_metrics(&redis_url, 8, "2s").await?;
    let redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connect to redis")?;
    let plan = soak::SoakPlan {
        duration,
        window: args.soak_window.min(duration),
        rate: args.soak_rate,
        streams: args.soak_streams,
        subscriptions: args.soak_subscriptions,
        churn: 0.1,
        churn_every: Duration::from_secs(60).min(duration / 3),
    };
    println!(
        "soak: {duration:?} at {} msg/s over {} streams, {} subscriptions ({}% reconnect every {:?})",
        plan.rate,
        plan.streams,
        plan.subscriptions,
        (plan.churn * 100.0) as u32,
        plan.churn_every
    );
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(setup::connect(&addr).await?);
    }
    soak::run(plan, channels, metrics, broker.pid(), redis).await
}

async fn run_once(
    bench: &Bench,
    args: &Args,
    epoch: Instant,
) -> anyhow::Result<(Vec<Row>, Vec<workloads::Latency>, Vec<workloads::Idle>)> {
    let mut rows = Vec::new();
    let mut push = |name: String, unit, broker, raw, target| {
        eprintln!("  {name}: {broker:.0} {unit}");
        rows.push(Row {
            name,
            unit,
            broker,
            raw,
            target,
        });
    };
    if args.runs(Group::Produce) {
        for (batch, size) in [(1, 100), (1, 1024), (100, 100), (100, 1024)] {
            let raw = workloads::produce_raw(bench, batch, size).await?;
            let broker = workloads::produce_broker(bench, batch, size).await?;
            let target = if (batch, size) == (100, 100) {
                "≥ 0.60 of raw"
            } else {
                ""
            };
            push(
                format!("produce, batch {batch}, {size} B"),
                "msg/s",
                broker,
                Some(raw),
                target,
            );
        }
    }
    if args.runs(Group::Unary) {
        let empty = workloads::empty_unary(bench).await?;
        let single = workloads::produce_broker(bench, 1, 100).await?;
        let name = "produce, batch 1, 100 B vs empty unary call".to_owned();
        push(name, "msg/s", single, Some(empty), "≥ 0.85 of empty call");
    }
    if args.runs(Group::Stream) {
        let raw = workloads::stream_produce_raw(bench).await?;
        let broker = workloads::stream_produce_broker(bench).await?;
        let name = format!("ProduceStream, 1 msg/request, window {}", args.window);
        push(name, "msg/s", broker, Some(raw), "≥ 0.40 of raw");
    }
    if args.runs(Group::Consume) {
        for consumers in [1, 4] {
            let raw = workloads::consume_raw(bench, consumers).await?;
            let broker = workloads::consume_broker(bench, consumers).await?;
            let name = format!("group consume + ack, {consumers} consumer(s)");
            push(name, "msg/s", broker, Some(raw), "≥ 0.70 of raw");
            let session = workloads::consume_session(bench, consumers, false).await?;
            let name = format!("Consume, acks on the stream, {consumers} consumer(s)");
            let target = if consumers == 1 {
                "≥ 0.95 of raw"
            } else {
                ""
            };
            push(name, "msg/s", session, Some(raw), target);
            if consumers == 1 {
                let exact = workloads::consume_session(bench, consumers, true).await?;
                let name = "Consume, exactly_once acks, 1 consumer(s)".to_owned();
                push(name, "msg/s", exact, Some(raw), "");
            }
        }
    }
    if args.runs(Group::Topic) {
        // Both clusters and their brokers live only for this measurement.
        let dir = tempfile::tempdir()?;
        let mut rates = Vec::new();
        for masters in [1u16, 3] {
            let (urls, _nodes) = setup::start_cluster(dir.path(), masters)?;
            let (addr, _broker) = setup::start_cluster_broker(&urls).await?;
            rates.push(
                workloads::topic_produce(&addr, 6, 100, bench.producers, bench.duration).await?,
            );
        }
        push(
            "topic of 6 partitions, produce batch 100: 3 masters (broker) vs 1 master (raw col.)"
                .into(),
            "msg/s",
            rates[1],
            Some(rates[0]),
            "",
        );
    }
    if args.runs(Group::Fanout) {
        let fanout = workloads::fan_out(bench, 10).await?;
        push(
            "fan-out, 1 stream, 10 tail subscribers".into(),
            "deliveries/s",
            fanout,
            None,
            "",
        );
    }
    let mut latencies = Vec::new();
    if args.runs(Group::Latency) {
        for via in [workloads::Via::Unary, workloads::Via::Stream] {
            for rate in &args.rates {
                latencies.push(workloads::latency(bench, *rate, via, epoch).await?);
            }
        }
    }
    let mut idles = Vec::new();
    if args.runs(Group::Idle) {
        let probe_calls = if args.smoke { 50 } else { 2000 };
        for count in &args.idle {
            idles.push(workloads::idle(bench, *count, probe_calls).await?);
        }
    }
    Ok((rows, latencies, idles))
}

fn print_report(
    args: &Args,
    rows: &[Row],
    latencies: &[workloads::Latency],
    idles: &[workloads::Idle],
) {
    println!(
        "\nstreamgate-bench: {} producers, {:?} per measurement, {} messages per consume, median of {} run(s){}\n",
        args.producers,
        args.duration,
        args.messages,
        args.runs,
        if args.smoke {
            " (SMOKE: sizes too small to mean anything)"
        } else {
            ""
        }
    );
    println!("| workload | broker | raw redis-rs | broker/raw | target |");
    println!("|---|---:|---:|---:|---|");
    for row in rows {
        let raw = row
            .raw
            .map(|r| format!("{r:.0} {}", row.unit))
            .unwrap_or_else(|| "—".into());
        let ratio = row
            .ratio()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {} | {:.0} {} | {raw} | {ratio} | {} |",
            row.name, row.broker, row.unit, row.target
        );
    }
    println!(
        "\n| end-to-end latency (send → delivery, group Subscribe + Ack), one message per send | achieved rate | p50 | p99 | p99.9 | Redis commands / message |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for l in latencies {
        let top: Vec<String> = l
            .top_commands
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        println!(
            "| {}, {} msg/s | {:.0} msg/s | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ({}) |",
            l.via.label(),
            l.target_rate,
            l.achieved_rate,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.redis_commands_per_message,
            top.join(", ")
        );
    }
    if latencies.iter().any(|l| !l.hops.is_empty()) {
        println!(
            "\n| where the time went inside the broker (`streamgate_hop_seconds`, bucket bounds) | hop | taken | p50 ≤ | p99 ≤ |"
        );
        println!("|---|---|---:|---:|---:|");
        for l in latencies {
            for hop in &l.hops {
                println!(
                    "| {}, {} msg/s | {} | {} | {} ms | {} ms |",
                    l.via.label(),
                    l.target_rate,
                    hop.hop,
                    hop.count,
                    hop.p50_ms,
                    hop.p99_ms
                );
            }
        }
    }
    println!(
        "\n| idle Subscribe streams (half tail, half group) | broker RSS | RSS per subscription | Redis connections | Produce p99 before | Produce p99 with them open |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for i in idles {
        let rss = i
            .rss
            .map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "—".into());
        let per = i
            .rss_per_subscription
            .map(|b| format!("{:.1} KiB", b / 1024.0))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {} | {rss} | {per} | {} | {:.2} ms | {:.2} ms |",
            i.subscriptions, i.redis_connections, i.produce_p99_before_ms, i.produce_p99_ms
        );
    }
}

fn to_json(
    args: &Args,
    rows: &[Row],
    latencies: &[workloads::Latency],
    idles: &[workloads::Idle],
) -> serde_json::Value {
    json!({
        "settings": {
            "producers": args.producers,
            "duration_ms": args.duration.as_millis() as u64,
            "messages": args.messages,
            "window": args.window,
            "runs": args.runs,
            "smoke": args.smoke,
        },
        "throughput": rows.iter().map(|r| json!({
            "workload": r.name, "unit": r.unit, "broker": r.broker, "raw": r.raw,
            "ratio": r.ratio(), "target": r.target,
        })).collect::<Vec<_>>(),
        "latency": latencies.iter().map(|l| json!({
            "via": l.via.label(), "rate": l.target_rate, "achieved_rate": l.achieved_rate,
            "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "p999_ms": l.p999_ms,
            "redis_commands_per_message": l.redis_commands_per_message,
            "hops": l.hops.iter().map(|h| json!({
                "hop": h.hop, "count": h.count, "p50_ms": h.p50_ms, "p99_ms": h.p99_ms,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "idle": idles.iter().map(|i| json!({
            "subscriptions": i.subscriptions, "rss_bytes": i.rss,
            "rss_per_subscription_bytes": i.rss_per_subscription,
            "redis_connections": i.redis_connections,
            "produce_p99_before_ms": i.produce_p99_before_ms, "produce_p99_ms": i.produce_p99_ms,
        })).collect::<Vec<_>>(),
    })
}
