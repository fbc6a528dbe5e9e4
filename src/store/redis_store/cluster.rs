//! Redis Cluster: hash slots, grouping commands by slot (a multi-key command must stay in one),
//! the commands that run over the keys of one slot (a pipelined append, XREAD, XREADGROUP: on a
//! single Redis, every key is in one), and listing keys across every master.

use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value, cmd};
use tracing::Instrument;

use super::errors::{Ctx, classify};
use super::replies::{into_items, parse_stream_batches, push_trim, to_id, to_text, to_u64};
use super::{Conn, RedisStore};
use crate::model::{Append, Entry, EntryId, NewEntryId};
use crate::store::{GroupCursor, GroupEntry, StoreError, StoreResult, StreamPage};

/// How often the watcher polls a cluster for writes made outside this broker.
pub(super) const CLUSTER_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A Redis Cluster client and its one shared connection, made on first use (the broker starts
/// even while the cluster is down).
#[derive(Clone)]
pub(super) struct ClusterHandle {
    pub(super) client: redis::cluster::ClusterClient,
    pub(super) conn: Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>,
}

/// The Redis Cluster hash slot of a key (CRC16 of its hash tag, or of the whole key).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// Whether all these keys share one slot (and may go in one multi-key command on a cluster).
pub(super) fn one_slot<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    let Some(first) = keys.next() else {
        return true;
    };
    let slot = key_slot(first);
    keys.all(|k| key_slot(k) == slot)
}

/// Groups items by the slot of their key, keeping their order within each group.
pub(super) fn by_slot<T>(items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut groups: Vec<(u16, Vec<T>)> = Vec::new();
    for item in items {
        let slot = key_slot(key(&item));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

impl RedisStore {
    /// On a cluster, SCAN on every master to the end of its keyspace: the keys of a listing
    /// live on several nodes, each with its own cursor.
    pub(super) async fn list_cluster_streams(
        &self,
        pattern: &str,
        page_size: u32,
    ) -> StoreResult<StreamPage> {
        let Conn::Cluster(mut conn) = self.connection().await? else {
            return Err(StoreError::Unexpected("not a cluster".into()));
        };
        let fail = |err: RedisError| classify(&err, Ctx::stream(pattern));
        let nodes: String = cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        let masters: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let address = parts.nth(1)?;
                let flags = parts.next()?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let (host, port) = address.split('@').next()?.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect();
        let mut streams = Vec::new();
        for (host, port) in masters {
            let mut cursor = 0u64;
            loop {
                let mut scan = cmd("SCAN");
                scan.arg(cursor)
                    .arg("TYPE")
                    .arg("stream")
                    .arg("COUNT")
                    .arg(page_size.max(100));
                if !pattern.is_empty() {
                    scan.arg("MATCH").arg(pattern);
                }
                let route = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    },
                );
                let reply = conn.route_command(scan, route).await.map_err(fail)?;
                let mut parts = into_items(reply)?.into_iter();
                let next = parts.next().as_ref().and_then(to_u64).unwrap_or(0);
                streams.extend(
                    into_items(parts.next().unwrap_or(Value::Nil))?
                        .iter()
                        .filter_map(to_text),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        streams.sort();
        streams.dedup();
        Ok(StreamPage {
            streams,
            next_cursor: 0,
        })
    }
}

impl RedisStore {
    /// Appends requests whose streams share one slot (all of them, on a single Redis) in one
    /// pipelined round trip.
    pub(super) async fn append_pipelined(
        &self,
        requests: &[Append],
    ) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let mut pipe = redis::pipe();
        for request in requests {
            for message in &request.messages {
                let mut xadd = cmd("XADD");
                xadd.arg(&request.stream);
                if request.require_existing_stream {
                    xadd.arg("NOMKSTREAM");
                }
                if let Some(policy) = &request.trim {
                    push_trim(&mut xadd, policy);
                }
                match message.id {
                    // The common case, without formatting an id per message.
                    NewEntryId::Auto => xadd.arg("*"),
                    other => xadd.arg(other.to_string()),
                };
                for field in &message.fields {
                    xadd.arg(&field.name).arg(field.value.as_ref());
                }
                pipe.add_command(xadd);
            }
        }
        let first_stream = requests
            .first()
            .map(|r| r.stream.as_str())
            .unwrap_or_default();
        let replies: Vec<Value> = async {
            let mut conn = self.connection().await?;
            // Per-command results, so that each failure is classified on its own terms.
            pipe.ignore_errors()
                .query_async(&mut conn)
                .await
                .map_err(|err| self.failed(&conn, &err, Ctx::stream(first_stream), "XADD"))
        }
        .instrument(tracing::info_span!(
            "redis",
            command = "XADD",
            pipelined = requests.len()
        ))
        .await?;
        let mut replies = replies.into_iter();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let ctx = Ctx::stream(&request.stream);
            let answer = replies
                .by_ref()
                .take(request.messages.len())
                .map(|reply| match reply {
                    Value::ServerError(err) => Err(self.refine(classify(&err.into(), ctx), "XADD")),
                    Value::Nil => Err(StoreError::NoSuchStream {
                        stream: request.stream.clone(),
                    }),
                    other => to_id(&other),
                })
                .collect::<StoreResult<Vec<_>>>();
            if let Ok(ids) = &answer {
                self.wakeups.appended(&request.stream, ids);
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}

impl RedisStore {
    /// XREAD over streams of one slot.
    pub(super) async fn read_one_slot(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let mut xread = cmd("XREAD");
        xread.arg("COUNT").arg(count).arg("STREAMS");
        for (stream, _) in streams {
            xread.arg(stream);
        }
        for (_, after) in streams {
            xread.arg(after.to_string());
        }
        let first = streams.first().map(|(s, _)| s.as_str()).unwrap_or_default();
        let reply: Value = self.query(&xread, Ctx::stream(first)).await?;
        parse_stream_batches(reply)?
            .into_iter()
            .map(|(stream, entries)| {
                let entries = entries
                    .into_iter()
                    .filter_map(|e| {
                        Some(Entry {
                            id: e.id,
                            fields: e.fields?,
                        })
                    })
                    .collect();
                Ok((stream, entries))
            })
            .collect()
    }

    /// XREADGROUP over streams of one slot.
    pub(super) async fn read_group_one_slot(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let mut xread = cmd("XREADGROUP");
        xread
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if no_ack {
            xread.arg("NOACK");
        }
        xread.arg("STREAMS");
        for (stream, _) in streams {
            xread.arg(stream);
        }
        for (_, cursor) in streams {
            match cursor {
                GroupCursor::New => xread.arg(">"),
                GroupCursor::PendingAfter(id) => xread.arg(id.to_string()),
            };
        }
        // NOGROUP names the first stream whose group is missing; the reply does not say which,
        // so name them all when there are several.
        let names = streams
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join("`, `");
        let reply: Value = self.query(&xread, Ctx::group(&names, group)).await?;
        parse_stream_batches(reply)
    }
}
