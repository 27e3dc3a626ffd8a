//! Size-capped encoding and decoding of frames.
//!
//! Spec: §3.3 (one envelope per binary WebSocket message) and §12.2 (frame
//! size). The size cap is applied before any decoding so an oversize frame
//! costs nothing to reject.

use crate::wire::{ClientFrame, ServerFrame};
use bytes::Bytes;
use prost::Message as _;

/// Default largest frame, in bytes (§12.2).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the agreed maximum.
    #[error(
        "frame of {size} bytes exceeds the {max}-byte limit; send smaller frames (see Welcome.limits)"
    )]
    Oversize {
        /// Size of the rejected frame.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes are not a valid confab.v1 envelope (truncated or garbage).
    #[error(
        "frame is not a valid confab.v1 envelope ({reason}); the peer is broken or speaks another protocol"
    )]
    Malformed {
        /// What prost reported.
        reason: String,
    },
    /// The envelope decoded but its body is absent or of a kind this version does not know.
    #[error(
        "frame with request_id {request_id} has no body known to confab.v1; the peer may speak a newer minor version"
    )]
    UnknownBody {
        /// The request id to echo in the error reply.
        request_id: u64,
    },
}

/// What decoding needs to know of an envelope type.
trait Envelope: prost::Message + Default {
    fn request_id(&self) -> u64;
    fn has_body(&self) -> bool;
}

impl Envelope for ClientFrame {
    fn request_id(&self) -> u64 {
        self.request_id
    }
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

impl Envelope for ServerFrame {
    fn request_id(&self) -> u64 {
        self.request_id
    }
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

/// Size check first, then prost, then the body: unknown `oneof` variants
/// decode to no body (prost skips unknown fields), which is reported with
/// the request id so the peer can be told which request it was (§4.4).
fn decode<F: Envelope>(bytes: &[u8], max: usize) -> Result<F, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversize {
            size: bytes.len(),
            max,
        });
    }
    let frame = F::decode(bytes).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })?;
    if !frame.has_body() {
        return Err(DecodeError::UnknownBody {
            request_id: frame.request_id(),
        });
    }
    Ok(frame)
}

/// Decodes a client envelope, rejecting frames over `max` bytes first.
pub fn decode_client_frame(bytes: &[u8], max: usize) -> Result<ClientFrame, DecodeError> {
    decode(bytes, max)
}

/// Decodes a server envelope, rejecting frames over `max` bytes first.
pub fn decode_server_frame(bytes: &[u8], max: usize) -> Result<ServerFrame, DecodeError> {
    decode(bytes, max)
}

/// Encodes a client envelope into one WebSocket message payload.
pub fn encode_client_frame(frame: &ClientFrame) -> Bytes {
    Bytes::from(frame.encode_to_vec())
}

/// Encodes a server envelope into one WebSocket message payload.
///
/// Pushes (request_id 0) encode to identical bytes for every recipient, so a
/// server encodes a fan-out once and shares the [`Bytes`].
pub fn encode_server_frame(frame: &ServerFrame) -> Bytes {
    Bytes::from(frame.encode_to_vec())
}
