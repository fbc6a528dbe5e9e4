//! `streamgate admin <rpc> name=value...`: any Admin RPC, found in the broker's own descriptors.
//!
//! The request is built as proto3 JSON from the arguments and encoded with prost-reflect; the
//! call goes through tonic's generic client with a pass-through codec; the reply is decoded the
//! same way and printed. A new Admin RPC in the proto is reachable here without a line of code.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, ServiceDescriptor,
};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::AdminArgs;
use super::render::Output;
use crate::grpc::pb;

const SERVICE: &str = "streamgate.v1.Admin";

pub(super) async fn run(
    channel: super::Transport,
    args: AdminArgs,
    out: &mut Output,
) -> anyhow::Result<()> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .context("the built-in descriptors do not decode")?;
    let service = pool
        .get_service_by_name(SERVICE)
        .context("the built-in descriptors lack the Admin service")?;
    let Some(rpc) = args.rpc else {
        print_rpcs(&service);
        return Ok(());
    };
    let method = find_method(&service, &rpc)?;
    let request = build_request(&method.input(), &args.fields)?;
    out.response(call(channel, &method, request.encode_to_vec()).await?);
    Ok(())
}

/// Calls the Admin RPC `name` with an encoded request and returns the reply as proto3 JSON:
/// what typed commands (`streamgate subscription ...`) print, exactly as `admin` would.
pub(super) async fn call_named(
    channel: super::Transport,
    name: &str,
    request: Vec<u8>,
) -> anyhow::Result<Value> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .context("the built-in descriptors do not decode")?;
    let service = pool
        .get_service_by_name(SERVICE)
        .context("the built-in descriptors lack the Admin service")?;
    call(channel, &find_method(&service, name)?, request).await
}

async fn call(
    channel: super::Transport,
    method: &MethodDescriptor,
    request: Vec<u8>,
) -> anyhow::Result<Value> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the broker is not ready")?;
    let path = format!("/{SERVICE}/{}", method.name())
        .parse()
        .context("method path")?;
    let reply = grpc
        .unary(tonic::Request::new(request), path, RawCodec)
        .await?
        .into_inner();
    let reply = DynamicMessage::decode(method.output(), reply.as_slice())
        .context("the broker's reply does not decode")?;
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    reply
        .serialize_with_options(serde_json::value::Serializer, &options)
        .context("the reply does not convert to JSON")
}

/// `list-pending`, `ListPending` and `list_pending` all name `ListPending`.
fn find_method(service: &ServiceDescriptor, rpc: &str) -> anyhow::Result<MethodDescriptor> {
    let wanted = rpc.replace(['-', '_'], "").to_lowercase();
    service
        .methods()
        .find(|m| m.name().to_lowercase() == wanted)
        .with_context(|| {
            let names: Vec<String> = service.methods().map(|m| kebab(m.name())).collect();
            format!("no Admin RPC `{rpc}`; there are: {}", names.join(", "))
        })
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn print_rpcs(service: &ServiceDescriptor) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the listing, not the process with a panic.
    let _ = writeln!(
        stdout,
        "Admin RPCs (streamgate admin <rpc> name=value ...):"
    );
    for method in service.methods() {
        let fields: Vec<String> = method
            .input()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        let _ = writeln!(stdout, "  {:22} {}", kebab(method.name()), fields.join(" "));
    }
}

/// Proto3 JSON for `message` from `name=value` arguments, checked against its fields.
fn build_request(message: &MessageDescriptor, args: &[String]) -> anyhow::Result<DynamicMessage> {
    let mut json: BTreeMap<String, Value> = BTreeMap::new();
    for arg in args {
        let (name, text) = arg
            .split_once('=')
            .with_context(|| format!("`{arg}` is not name=value"))?;
        let field = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
            .with_context(|| {
                let names: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
                format!(
                    "{} has no field `{name}`; it has: {}",
                    message.name(),
                    names.join(", ")
                )
            })?;
        let key = field.json_name().to_owned();
        if field.is_list() {
            let values = json.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = values {
                for part in text.split(',').filter(|p| !p.is_empty()) {
                    items.push(scalar_value(&field, part)?);
                }
            }
        } else {
            json.insert(key, scalar_value(&field, text)?);
        }
    }
    let json = Value::Object(json.into_iter().collect());
    DynamicMessage::deserialize(message.clone(), json)
        .with_context(|| format!("invalid {} request", message.name()))
}

/// One value as proto3 JSON: text as is for strings and enums, JSON for everything else.
fn scalar_value(field: &FieldDescriptor, text: &str) -> anyhow::Result<Value> {
    Ok(match field.kind() {
        Kind::String | Kind::Enum(_) => Value::String(text.to_owned()),
        Kind::Bytes => Value::String(base64_of(text.as_bytes())),
        Kind::Message(_) => serde_json::from_str(text).with_context(|| {
            format!(
                "`{}` takes a JSON object, e.g. {{\"maxLen\": 5}}",
                field.name()
            )
        })?,
        _ => match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) => bail!(
                "`{}` takes a number or true/false, not `{text}`",
                field.name()
            ),
        },
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Passes already-encoded protobuf through tonic unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}
