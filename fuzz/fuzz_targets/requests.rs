//! Arbitrary bytes as every request the broker validates, and arbitrary text as every id form:
//! validation must answer (Ok or a status), never panic, whatever arrives on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamgate::config::ServeConfig;
use streamgate::grpc::{convert, pb};
use streamgate::model::{EntryId, NewEntryId, RangeBound, StartId};

fuzz_target!(|data: &[u8]| {
    let config = ServeConfig::in_memory();
    let (limits, backoff) = (config.limits.clone(), config.redelivery().backoff);
    if let Ok(request) = pb::ProduceRequest::decode(data) {
        let _ = convert::produce(request, &limits);
    }
    if let Ok(request) = pb::SubscribeRequest::decode(data) {
        let _ = convert::subscription(request, &limits, backoff);
    }
    if let Ok(request) = pb::FetchRequest::decode(data) {
        let _ = convert::fetch(request, None, &limits, backoff);
    }
    if let Ok(request) = pb::ClaimRequest::decode(data) {
        let _ = convert::claim_options(&request, &limits);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<EntryId>();
        let _ = text.parse::<NewEntryId>();
        let _ = text.parse::<StartId>();
        let _ = RangeBound::parse(text, "-");
        let _ = convert::name("stream", text, &limits);
        if let Some((min, max)) = text.split_once(' ') {
            let _ = convert::range("min", min, "max", max);
        }
    }
});
