//! Finding a method of any served service by name, and converting its request
//! and response between JSON and protobuf through the generated descriptors.

use anyhow::{anyhow, bail, Context, Result};
use protobuf::reflect::{FileDescriptor, MessageDescriptor};

/// A resolved method: full service name, method name and its message types.
pub struct Method {
    /// e.g. `grpc.AgentService`.
    pub service: String,
    /// e.g. `CreateContainer`.
    pub name: String,
    /// Request message type.
    pub input: MessageDescriptor,
    /// Response message type.
    pub output: MessageDescriptor,
}

fn files() -> Vec<FileDescriptor> {
    vec![
        protocols::agent::file_descriptor().clone(),
        protocols::health::file_descriptor().clone(),
        protocols::pith::file_descriptor().clone(),
    ]
}

/// Every method of every service, in declaration order.
pub fn all() -> Vec<Method> {
    let mut out = Vec::new();
    for f in files() {
        let package = f.proto().package().to_string();
        for s in f.services() {
            let service = format!("{package}.{}", s.proto().name());
            for m in s.methods() {
                out.push(Method {
                    service: service.clone(),
                    name: m.proto().name().to_string(),
                    input: m.input_type(),
                    output: m.output_type(),
                });
            }
        }
    }
    out
}

/// Resolves `CreateContainer`, `AgentService/CreateContainer` or
/// `grpc.AgentService/CreateContainer`. A bare name must be unambiguous.
pub fn find(spec: &str) -> Result<Method> {
    let (svc, name) = match spec.rsplit_once('/') {
        Some((s, n)) => (Some(s), n),
        None => (None, spec),
    };
    let mut hits: Vec<Method> = all()
        .into_iter()
        .filter(|m| m.name.eq_ignore_ascii_case(name))
        .filter(|m| match svc {
            None => true,
            Some(s) => m.service == s || m.service.rsplit('.').next() == Some(s),
        })
        .collect();
    match hits.len() {
        0 => bail!("no method {spec:?}; `pithctl methods` lists them"),
        1 => Ok(hits.remove(0)),
        _ => bail!(
            "method name {spec:?} is ambiguous: {}",
            hits.iter()
                .map(|m| format!("{}/{}", m.service, m.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Encodes a JSON request (proto3 JSON mapping; `{}` for an empty message).
pub fn encode_json(d: &MessageDescriptor, json: &str) -> Result<Vec<u8>> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let msg = protobuf_json_mapping::parse_dyn_from_str(d, json)
        .map_err(|e| anyhow!("request is not a valid {} in JSON: {e}", d.full_name()))?;
    msg.write_to_bytes_dyn()
        .with_context(|| format!("encode {}", d.full_name()))
}

/// Decodes a response payload and prints it as JSON.
pub fn decode_to_json(d: &MessageDescriptor, bytes: &[u8]) -> Result<String> {
    let mut msg = d.new_instance();
    msg.merge_from_bytes_dyn(bytes)
        .with_context(|| format!("decode {} from the agent", d.full_name()))?;
    let opts = protobuf_json_mapping::PrintOptions {
        always_output_default_values: true,
        ..Default::default()
    };
    protobuf_json_mapping::print_to_string_with_options(&*msg, &opts)
        .map_err(|e| anyhow!("print {} as JSON: {e}", d.full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_in_every_form() {
        for spec in [
            "CreateContainer",
            "AgentService/CreateContainer",
            "grpc.AgentService/CreateContainer",
        ] {
            let m = find(spec).unwrap();
            assert_eq!(
                (m.service.as_str(), m.name.as_str()),
                ("grpc.AgentService", "CreateContainer")
            );
            assert_eq!(m.input.full_name(), "grpc.CreateContainerRequest");
        }
        assert_eq!(find("check").unwrap().service, "grpc.Health");
        assert_eq!(find("Hello").unwrap().service, "pith.Negotiation");
        assert!(find("NoSuchMethod").is_err());
    }

    #[test]
    fn json_round_trip() {
        let m = find("Hello").unwrap();
        let bytes = encode_json(&m.input, r#"{"hostName":"t","minLevel":1,"maxLevel":2}"#).unwrap();
        let back = decode_to_json(&m.input, &bytes).unwrap();
        assert!(
            back.contains("\"hostName\": \"t\"") || back.contains("\"hostName\":\"t\""),
            "{back}"
        );
        assert!(encode_json(&m.input, "{\"bogus\":1}").is_err());
        assert!(encode_json(&m.input, "").is_ok());
    }
}
