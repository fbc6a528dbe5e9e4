//! The gRPC layer: generated code, conversions, and the services (Broker and Admin in a folder
//! each, Google's Pub/Sub in [`pubsub`]).
//!
//! Each handler has the same rhythm: take the request, validate and convert it
//! ([`convert`]), call the core (or the subscription pump it feeds), convert the answer. Errors become
//! statuses through `From<BrokerError> for Status` in [`crate::error`], nowhere else.

pub mod admin;
pub mod broker;
pub mod convert;
pub mod deadline;
pub mod pubsub;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::calls::Pumps;
use crate::config::Limits;
use crate::delivery::DeliveryCore;

/// Code generated from `proto/streamgate/v1/*.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("streamgate.v1");

    /// The encoded descriptors of our protos, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("streamgate_descriptor");
}

/// What every transport serves through: the core, the pumps its sessions start on, the limits
/// a call is held to, and the token cancelled at shutdown (waiting calls answer at once,
/// sessions end). The server builds one and gives each transport a clone, so a new transport
/// takes the same four things.
#[derive(Clone)]
pub struct Serving<S> {
    /// The delivery core.
    pub core: DeliveryCore<S>,
    /// Where subscriptions and sessions start, and what the drain awaits.
    pub pumps: Pumps<S>,
    /// The limits every call is held to.
    pub limits: Arc<Limits>,
    /// Cancelled at shutdown.
    pub stopping: CancellationToken,
}
