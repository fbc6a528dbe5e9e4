//! A session: one call on which a group member both reads (the pump, framed) and settles what
//! it read (acks, nacks, extensions, credit). `Broker.Consume` and Pub/Sub's StreamingPull are
//! both sessions; each says how its wire spells requests and answers ([`SessionWire`]) and
//! nothing else. [`open_session`] starts the pump and the settle loop beside it (on the pumps'
//! tracker, so the drain waits for both) and gives back one stream of what both send.
//!
//! The settle loop waits for one request, takes whatever else has already arrived (up to
//! [`SETTLE_BATCH`]), stops at a request that ends the session, applies what it took in order
//! (consecutive acks in one round trip per stream, [`Settler::apply`]), sends the answers and
//! then the error if there was one, and when it ends, ends the reading too (`finished`): what
//! the member holds is handed back.

use std::fmt::Display;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::frames::{Frame, FrameLimits, framed};
use super::settle::{Refusal, SettleRequest, Settled, Settler};
use super::subscribe::{Pumps, Session};
use crate::delivery::{Credit, ReadMode, ResolvedSpec};
use crate::error::{BrokerError, BrokerResult};
use crate::ops::metrics::{self, Hop};
use crate::store::Store;

/// Most requests already received that are taken together: consecutive acks among them are
/// applied in one round trip per stream.
pub const SETTLE_BATCH: usize = 64;

/// Answers waiting for the client to read them; when full, the session stops taking requests
/// until it reads (a client that stops reading cannot make the broker buffer more).
const ANSWERS_BUFFERED: usize = 64;

/// What one request a client sent on a session asks of it.
pub enum Step<N> {
    /// Settle requests to apply (some perhaps refused already by the transport's checks), with
    /// what the transport keeps to answer them.
    Settle(N, Vec<Result<SettleRequest, Refusal>>),
    /// Nothing to apply (credit granted, say).
    Nothing,
    /// The session ends: the client is done (`None`), or broke the protocol (the error ends
    /// the call, after the requests before it are answered).
    End(Option<BrokerError>),
}

/// How a transport spells a session's requests and answers.
pub trait SessionWire: Send + 'static {
    /// One request, as the client sent it.
    type Request: Send + 'static;
    /// What the transport keeps of a request to answer it (its ids as the client spelled
    /// them, a request id...).
    type Note: Send;
    /// One answer, as the client reads it.
    type Answer: Send + 'static;

    /// What `request` asks.
    fn take(&mut self, request: Self::Request) -> Step<Self::Note>;

    /// The answers to requests taken together, each with what became of its settle requests
    /// (in the order [`Step::Settle`] gave them).
    fn answer(&mut self, settled: Vec<(Self::Note, Vec<Settled>)>) -> Vec<Self::Answer>;
}

/// What a session sends the client, in order within each kind.
#[derive(Debug)]
pub enum Outgoing<A> {
    /// From the pump: messages, or an event (started, heartbeat, the final error).
    Frame(Frame),
    /// An answer to requests the client sent.
    Answer(A),
    /// The client broke the protocol: the call ends with this error.
    Broken(BrokerError),
}

/// How a session reads and settles, beyond what it reads.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Messages per read.
    pub batch_size: usize,
    /// How messages are framed.
    pub frames: FrameLimits,
    /// The credit the client grants, if it does any accounting; its wire grants more.
    pub credit: Option<Credit>,
    /// Acks apply only to what the member holds.
    pub exactly_once: bool,
    /// Most ids one settle request may list.
    pub max_ids: usize,
}

/// Who a session reads as: its group and consumer name (generated, if the client gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMember {
    /// The group.
    pub group: String,
    /// The consumer.
    pub consumer: String,
}

impl SessionMember {
    /// The member `spec` reads as; a session reads only as a group member.
    pub fn of(spec: &ResolvedSpec) -> BrokerResult<Self> {
        match spec.reading() {
            ReadMode::Group { membership, .. } => Ok(Self {
                group: membership.group.clone(),
                consumer: membership.consumer.clone(),
            }),
            ReadMode::Tail(_) => Err(BrokerError::Internal(
                "a session reads as a group member, and this one has no group".into(),
            )),
        }
    }
}

/// Opens a session reading `spec` for `principal`: the pump with the client's credit, and the
/// settle loop taking `inbound` through `wire`. The stream ends when both have ended.
pub fn open_session<S, W, In, E>(
    pumps: &Pumps<S>,
    spec: ResolvedSpec,
    options: SessionOptions,
    principal: &str,
    wire: W,
    inbound: In,
) -> BrokerResult<impl Stream<Item = Outgoing<W::Answer>> + Send + 'static>
where
    S: Store,
    W: SessionWire,
    In: Stream<Item = Result<W::Request, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
{
    let member = SessionMember::of(&spec)?;
    let settler = Settler {
        core: pumps.core.clone(),
        streams: spec.streams().to_vec(),
        group: member.group,
        consumer: member.consumer,
        exactly_once: options.exactly_once,
        max_ids: options.max_ids,
    };
    let session = Session {
        credit: options.credit,
        finished: CancellationToken::new(),
    };
    let finished = session.finished.clone();
    let events = pumps.open_with(spec, options.batch_size, principal, session)?;
    let (out, answers) = mpsc::channel(ANSWERS_BUFFERED);
    pumps.tracker.spawn(settle_loop(
        settler,
        wire,
        inbound,
        out,
        finished,
        pumps.shutdown.clone(),
    ));
    let frames = framed(events, options.frames).map(Outgoing::Frame);
    Ok(frames.merge(ReceiverStream::new(answers)))
}

/// Takes the client's requests until it is done, goes away or the broker stops; then ends the
/// session's reading (`finished`).
async fn settle_loop<S, W, In, E>(
    settler: Settler<S>,
    mut wire: W,
    mut inbound: In,
    out: mpsc::Sender<Outgoing<W::Answer>>,
    finished: CancellationToken,
    shutdown: CancellationToken,
) where
    S: Store,
    W: SessionWire,
    In: Stream<Item = Result<W::Request, E>> + Unpin,
    E: Display + Send + 'static,
{
    let mut open = true;
    while open {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = out.closed() => break,
            request = inbound.next() => request,
        };
        let arrived = Instant::now();
        let mut received = vec![first];
        while received.len() < SETTLE_BATCH {
            match inbound.next().now_or_never() {
                Some(request) => received.push(request),
                None => break,
            }
        }
        let mut notes = Vec::new();
        let mut requests = Vec::new();
        let mut broken = None;
        for request in received {
            let step = match request {
                Some(Ok(request)) => wire.take(request),
                // Half-closed: the client is done.
                None => Step::End(None),
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "the client's side of the session failed");
                    Step::End(None)
                }
            };
            match step {
                Step::Settle(note, settles) => {
                    notes.push((note, settles.len()));
                    requests.extend(settles);
                }
                Step::Nothing => {}
                Step::End(err) => {
                    open = false;
                    broken = err;
                    break;
                }
            }
        }
        // What came before a request that ended the session is applied and answered first.
        let any = !requests.is_empty();
        let mut settled = settler.apply(requests).await.into_iter();
        if any {
            metrics::hop(Hop::Settle, arrived);
        }
        let settled = notes
            .into_iter()
            .map(|(note, n)| (note, settled.by_ref().take(n).collect()))
            .collect();
        let answers = wire.answer(settled).into_iter().map(Outgoing::Answer);
        for item in answers.chain(broken.map(Outgoing::Broken)) {
            if out.send(item).await.is_err() {
                open = false;
                break;
            }
        }
    }
    finished.cancel();
}
