//! Frames: `version (u16 LE) ‖ postcard(message)`.

use crate::{ClientMsg, ProtocolError, ServerMsg, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = PROTOCOL_VERSION.to_le_bytes().to_vec();
    // Serialising these plain data types into a Vec cannot fail.
    out.extend(postcard::to_allocvec(msg).unwrap_or_default());
    out
}

fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, ProtocolError> {
    if frame.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            size: frame.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    if frame.len() < 2 {
        return Err(ProtocolError::Malformed(format!(
            "frame of {} bytes is shorter than its version header",
            frame.len()
        )));
    }
    let version = u16::from_le_bytes([frame[0], frame[1]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let (msg, rest) = postcard::take_from_bytes(&frame[2..])
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

pub fn encode_client(msg: &ClientMsg) -> Vec<u8> {
    encode(msg)
}

pub fn decode_client(frame: &[u8]) -> Result<ClientMsg, ProtocolError> {
    decode(frame)
}

pub fn encode_server(msg: &ServerMsg) -> Vec<u8> {
    encode(msg)
}

pub fn decode_server(frame: &[u8]) -> Result<ServerMsg, ProtocolError> {
    decode(frame)
}
