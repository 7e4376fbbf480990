//! Decoding one request frame into a typed request, without I/O.
//!
//! The listener's dispatch (`server::handle`) and the fuzz target `kafka_request` both call
//! these two functions, so what the fuzzer exercises is exactly what a client's bytes meet:
//! [`prefix`] reads the fixed part of the header and checks the API and version against what
//! we advertise; [`decode`] runs the allocation guard (`bounds`) and then the codec.
//! Neither panics on any input; both return why a frame was refused.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeGroupsRequest,
    FetchRequest, FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::Decodable;

pub use crate::legacy::LegacyProduce;
use crate::server::advertised;
use crate::{bounds, legacy};

/// Produce versions below this are advertised but refused (see `legacy`).
pub(crate) const PRODUCE_VERSION_MIN_SERVED: i16 = 3;
/// The request header of Produce v0–v2 (non-flexible, with a client id).
const LEGACY_REQUEST_HEADER_VERSION: i16 = 1;
/// api key, api version, correlation id: the part of a request header every version shares.
pub(crate) const REQUEST_HEADER_FIXED_BYTES: usize = 8;

/// The fixed start of a request header, checked against what we advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub key: ApiKey,
    pub version: i16,
    pub correlation: i32,
}

/// Why [`prefix`] refused a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// Shorter than the fixed header; holds the frame's length.
    Short(usize),
    /// An API key we do not serve (or no API key at all); holds its name for the log.
    Unserved(String),
    /// A served API in a version we do not advertise. ApiVersions still gets an answer
    /// (KIP-511), hence the correlation id.
    Version { key: ApiKey, version: i16, correlation: i32 },
}

/// A decoded request body. Produce v0–v2 has its own hand-decoded form; ApiVersions' body is
/// not decoded because its answer does not depend on it.
#[derive(Debug)]
pub enum Request {
    ApiVersions,
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    Produce(Box<ProduceRequest>),
    LegacyProduce(LegacyProduce),
    Fetch(Box<FetchRequest>),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(Box<OffsetCommitRequest>),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
}

/// Reads the API key, version and correlation id of a request frame (header and body,
/// without the length) and checks them against the advertised ranges.
pub fn prefix(frame: &[u8]) -> Result<Prefix, PrefixError> {
    let Some(&[k0, k1, v0, v1, c0, c1, c2, c3]) = frame.first_chunk::<REQUEST_HEADER_FIXED_BYTES>() else {
        return Err(PrefixError::Short(frame.len()));
    };
    let key_raw = i16::from_be_bytes([k0, k1]);
    let version = i16::from_be_bytes([v0, v1]);
    let correlation = i32::from_be_bytes([c0, c1, c2, c3]);
    let key = ApiKey::try_from(key_raw).ok();
    let Some((key, (min, max))) = key.and_then(|k| advertised(k).map(|r| (k, r))) else {
        return Err(PrefixError::Unserved(
            key.map_or_else(|| format!("api key {key_raw}"), |k| format!("{k:?}")),
        ));
    };
    if version < min || version > max {
        return Err(PrefixError::Version { key, version, correlation });
    }
    Ok(Prefix { key, version, correlation })
}

/// Decodes the header and body of a frame whose [`Prefix`] was accepted. The error says what
/// was malformed; the listener closes the connection on it, as Kafka's broker does.
pub fn decode(p: Prefix, frame: Bytes) -> Result<(RequestHeader, Request), String> {
    let Prefix { key, version, .. } = p;
    let mut body = frame;
    let legacy_produce = key == ApiKey::Produce && version < PRODUCE_VERSION_MIN_SERVED;
    let header_version =
        if legacy_produce { LEGACY_REQUEST_HEADER_VERSION } else { key.request_header_version(version) };
    let header =
        RequestHeader::decode(&mut body, header_version).map_err(|e| format!("bad request header: {e}"))?;
    if legacy_produce {
        return Ok((header, Request::LegacyProduce(legacy::decode_produce(body)?)));
    }
    bounds::check(key, version, &body)?;
    macro_rules! decode {
        ($variant:ident, $t:ty) => {
            Request::$variant(<$t>::decode(&mut body, version).map_err(|e| e.to_string())?.into())
        };
    }
    let request = match key {
        ApiKey::ApiVersions => Request::ApiVersions,
        ApiKey::SaslHandshake => decode!(SaslHandshake, SaslHandshakeRequest),
        ApiKey::SaslAuthenticate => decode!(SaslAuthenticate, SaslAuthenticateRequest),
        ApiKey::Metadata => decode!(Metadata, MetadataRequest),
        ApiKey::CreateTopics => decode!(CreateTopics, CreateTopicsRequest),
        ApiKey::DeleteTopics => decode!(DeleteTopics, DeleteTopicsRequest),
        ApiKey::Produce => decode!(Produce, ProduceRequest),
        ApiKey::Fetch => decode!(Fetch, FetchRequest),
        ApiKey::ListOffsets => decode!(ListOffsets, ListOffsetsRequest),
        ApiKey::InitProducerId => decode!(InitProducerId, InitProducerIdRequest),
        ApiKey::FindCoordinator => decode!(FindCoordinator, FindCoordinatorRequest),
        ApiKey::JoinGroup => decode!(JoinGroup, JoinGroupRequest),
        ApiKey::SyncGroup => decode!(SyncGroup, SyncGroupRequest),
        ApiKey::Heartbeat => decode!(Heartbeat, HeartbeatRequest),
        ApiKey::LeaveGroup => decode!(LeaveGroup, LeaveGroupRequest),
        ApiKey::OffsetCommit => decode!(OffsetCommit, OffsetCommitRequest),
        ApiKey::OffsetFetch => decode!(OffsetFetch, OffsetFetchRequest),
        ApiKey::ListGroups => decode!(ListGroups, ListGroupsRequest),
        ApiKey::DescribeGroups => decode!(DescribeGroups, DescribeGroupsRequest),
        ApiKey::DeleteGroups => decode!(DeleteGroups, DeleteGroupsRequest),
        // `prefix` passes only advertised keys, and every advertised key is decoded above; a
        // key added to `APIS` without a decoder lands here and is refused, not served.
        other => return Err(format!("{other:?} is advertised but has no decoder")),
    };
    Ok((header, request))
}

/// [`prefix`] then [`decode`]: the whole of what the listener does with a frame's bytes
/// before it reaches a handler. Used by the fuzz target.
pub fn decode_frame(frame: Bytes) -> Result<(RequestHeader, Request), String> {
    let p = prefix(&frame).map_err(|e| format!("{e:?}"))?;
    decode(p, frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame shorter than the fixed header, an unknown API key, an unadvertised version and
    /// a truncated body are each refused with a reason, never a panic.
    #[test]
    fn refuses_short_unknown_unadvertised_and_truncated_frames() {
        assert_eq!(prefix(&[0, 3, 0]), Err(PrefixError::Short(3)));
        assert!(matches!(prefix(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]), Err(PrefixError::Unserved(_))));
        // Metadata (key 3) v99.
        assert_eq!(
            prefix(&[0, 3, 0, 99, 0, 0, 0, 7]),
            Err(PrefixError::Version { key: ApiKey::Metadata, version: 99, correlation: 7 })
        );
        // Metadata v1 with a header cut before the client id's length.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0]);
        assert!(decode_frame(frame).is_err());
    }

    /// An encoded Metadata request decodes to the same request.
    #[test]
    fn decodes_what_a_client_encodes() {
        use bytes::BytesMut;
        use kafka_protocol::protocol::Encodable;
        let version = 9;
        let mut out = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(version)
            .with_correlation_id(42);
        header.encode(&mut out, ApiKey::Metadata.request_header_version(version)).unwrap();
        let req = MetadataRequest::default().with_allow_auto_topic_creation(false);
        req.encode(&mut out, version).unwrap();
        let (h, r) = decode_frame(out.freeze()).unwrap();
        assert_eq!(h.correlation_id, 42);
        let Request::Metadata(m) = r else { panic!("decoded {r:?}") };
        assert_eq!(m, req);
    }
}
