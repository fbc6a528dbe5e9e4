//! The broker's per-hop histograms (`streamgate_hop_seconds{hop}`), read from its metrics
//! endpoint before and after a measurement: where that measurement's time went inside the
//! broker.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

/// The hops in the order a message takes them.
const HOPS: [&str; 5] = ["append", "wake", "read", "deliver", "settle"];

/// Cumulative bucket counts per hop, as the endpoint last showed them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    /// hop → (upper bound in seconds, cumulative count), ascending.
    buckets: BTreeMap<String, Vec<(f64, u64)>>,
}

/// One hop over one measurement: how often it was taken, and its median and 99th percentile
/// as the upper bounds of the buckets they fall in (the histogram's resolution).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HopFigures {
    pub(crate) hop: &'static str,
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Reading {
    /// Reads the endpoint at `addr`.
    pub(crate) fn take(addr: &str) -> anyhow::Result<Self> {
        Ok(Self::parse(&scrape(addr)?))
    }

    fn parse(text: &str) -> Self {
        let mut buckets: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("streamgate_hop_seconds_bucket{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels.split(',').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key.trim() == name).then(|| value.trim_matches('"').to_owned())
                })
            };
            let (Some(hop), Some(le), Ok(count)) =
                (label("hop"), label("le"), value.trim().parse())
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.entry(hop).or_default().push((bound, count));
        }
        for counts in buckets.values_mut() {
            counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Self { buckets }
    }

    /// What happened between `earlier` and this reading, hop by hop (hops not taken are left
    /// out).
    pub(crate) fn since(&self, earlier: &Reading) -> Vec<HopFigures> {
        HOPS.iter()
            .filter_map(|&hop| {
                let now = self.buckets.get(hop)?;
                let before = earlier.buckets.get(hop);
                let counts: Vec<(f64, u64)> = now
                    .iter()
                    .map(|&(bound, count)| {
                        let was = before
                            .and_then(|b| b.iter().find(|(le, _)| *le == bound))
                            .map_or(0, |(_, c)| *c);
                        (bound, count.saturating_sub(was))
                    })
                    .collect();
                let count = counts.last().map_or(0, |(_, c)| *c);
                (count > 0).then(|| HopFigures {
                    hop,
                    count,
                    p50_ms: quantile(&counts, count, 0.5),
                    p99_ms: quantile(&counts, count, 0.99),
                })
            })
            .collect()
    }
}

/// The upper bound (ms) of the first bucket holding the `q` quantile.
fn quantile(cumulative: &[(f64, u64)], total: u64, q: f64) -> f64 {
    let rank = (q * total as f64).ceil() as u64;
    cumulative
        .iter()
        .find(|(_, count)| *count >= rank)
        .map_or(f64::INFINITY, |(bound, _)| bound * 1000.0)
}

/// The broker's Prometheus text.
pub(crate) fn scrape(addr: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map_or(body.clone(), |(_, b)| b.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(append: [u64; 3]) -> String {
        format!(
            "streamgate_hop_seconds_bucket{{hop=\"append\",le=\"0.0001\"}} {}\n\
             streamgate_hop_seconds_bucket{{hop=\"append\",le=\"0.001\"}} {}\n\
             streamgate_hop_seconds_bucket{{hop=\"append\",le=\"+Inf\"}} {}\n\
             streamgate_hop_seconds_count{{hop=\"append\"}} {}\n",
            append[0], append[1], append[2], append[2]
        )
    }

    #[test]
    fn a_measurement_sees_only_its_own_samples() {
        let before = Reading::parse(&text([10, 10, 10]));
        let after = Reading::parse(&text([10, 109, 110]));
        assert_eq!(
            after.since(&before),
            [HopFigures {
                hop: "append",
                count: 100,
                p50_ms: 1.0,
                p99_ms: 1.0,
            }]
        );
        let after = Reading::parse(&text([10, 109, 200]));
        assert_eq!(after.since(&before)[0].p99_ms, f64::INFINITY);
        assert!(after.since(&after).is_empty(), "nothing happened");
    }
}
