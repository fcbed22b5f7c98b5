//! Raw ttrpc frames for the tests that need to send what a client library
//! would not (bad frames, a request and then EOF, several calls in a known order).

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use protocols::health::CheckRequest;

/// A frame: header (length, stream id, type, flags 0) and body.
pub fn raw_frame(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[kind, 0]);
    f.extend_from_slice(body);
    f
}

/// A request frame for `service/method` with an encoded payload.
pub fn request_frame(stream_id: u32, service: &str, method: &str, payload: Vec<u8>, timeout: Duration) -> Vec<u8> {
    let mut req = ttrpc::proto::Request::new();
    req.service = service.into();
    req.method = method.into();
    req.payload = payload;
    req.timeout_nano = timeout.as_nanos() as i64;
    raw_frame(stream_id, 1, &protobuf::Message::write_to_bytes(&req).unwrap())
}

pub fn check_frame(stream_id: u32) -> Vec<u8> {
    let payload = protobuf::Message::write_to_bytes(&CheckRequest::new()).unwrap();
    request_frame(stream_id, "grpc.Health", "Check", payload, Duration::ZERO)
}

/// Reads one response frame: its stream id and the decoded response.
pub fn read_response(s: &mut UnixStream) -> (u32, ttrpc::proto::Response) {
    let mut h = [0u8; 10];
    s.read_exact(&mut h).expect("a response frame");
    assert_eq!(h[8], 2, "frame type of a response");
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let stream = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    (stream, protobuf::Message::parse_from_bytes(&body).unwrap())
}
