//! The generator's hot path: reading a Message push without decoding it.
//!
//! At 100k deliveries/s every push the generator decodes is work done on the
//! same core budget it measures with. A full `decode_server_frame` of a
//! push builds a `ServerFrame` and five `String`s (room, message id, sender,
//! client message id, text) only for the generator to look at three fields:
//! the room, the seq, and the send-time tag at the start of the text.
//! [`skim`] walks the protobuf fields in place and borrows those three;
//! every other frame (acks, errors, replies) takes the full decode.

use prost::encoding::decode_varint;

/// `ServerFrame.message` (`proto/confab/v1/frames.proto`).
const SERVER_FRAME_MESSAGE: u64 = 19;
/// `Message.room`, `Message.seq`, `Message.text` (`messages.proto`).
const MESSAGE_ROOM: u64 = 1;
const MESSAGE_SEQ: u64 = 2;
const MESSAGE_TEXT: u64 = 6;

/// The fields of a Message push the generator needs, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push<'a> {
    /// Room name.
    pub room: &'a str,
    /// The room's seq of the message.
    pub seq: u64,
    /// The message text (not checked for UTF-8: only its ASCII tag is read).
    pub text: &'a [u8],
}

/// One protobuf field: its number and, for length-delimited fields, the
/// bytes; varints carry their value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads the next field off `buf`; `None` for anything malformed or for
/// groups, which confab.v1 does not use.
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Field<'a>)> {
    let key = decode_varint(buf).ok()?;
    let number = key >> 3;
    let field = match key & 7 {
        0 => Field::Varint(decode_varint(buf).ok()?),
        1 => {
            *buf = buf.get(8..)?;
            Field::Fixed
        }
        2 => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            let (bytes, rest) = buf.split_at_checked(len)?;
            *buf = rest;
            Field::Bytes(bytes)
        }
        5 => {
            *buf = buf.get(4..)?;
            Field::Fixed
        }
        _ => return None,
    };
    Some((number, field))
}

/// The room, seq and text of `frame` if it is a Message push, `None` for
/// any other frame (or a malformed one: the full decoder then judges it).
///
/// Proto3 semantics are kept where they matter: fields may come in any
/// order, unknown fields are skipped, and a field seen twice keeps its last
/// value.
pub fn skim(frame: &[u8]) -> Option<Push<'_>> {
    let mut buf = frame;
    let mut message = None;
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            (SERVER_FRAME_MESSAGE, Field::Bytes(bytes)) => message = Some(bytes),
            // Another body after the message replaces it (oneof).
            (10..=23, _) => message = None,
            _ => {}
        }
    }
    let mut buf = message?;
    let mut push = Push {
        room: "",
        seq: 0,
        text: &[],
    };
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            (MESSAGE_ROOM, Field::Bytes(bytes)) => push.room = std::str::from_utf8(bytes).ok()?,
            (MESSAGE_SEQ, Field::Varint(seq)) => push.seq = seq,
            (MESSAGE_TEXT, Field::Bytes(bytes)) => push.text = bytes,
            _ => {}
        }
    }
    Some(push)
}

#[cfg(test)]
mod tests {
    use confab_protocol::codec::encode_server_frame;
    use confab_protocol::wire::{self, ServerFrame, server_frame::Body};

    use super::*;

    fn frame(body: Body) -> Vec<u8> {
        encode_server_frame(&ServerFrame {
            request_id: 0,
            body: Some(body),
        })
        .to_vec()
    }

    #[test]
    fn reads_a_push_like_the_full_decoder() {
        let message = wire::Message {
            room: "fo-3".into(),
            seq: 300_000,
            message_id: "01J0000000000000000000000".into(),
            sender: "fo-3-17".into(),
            client_msg_id: "b17-4-99".into(),
            text: "1:123456:xxxxxxxx".into(),
            kind: wire::MessageKind::Text as i32,
            server_ts_ms: 1_700_000_000_000,
            redacted: false,
            relation: None,
        };
        let bytes = frame(Body::Message(message));
        assert_eq!(
            skim(&bytes),
            Some(Push {
                room: "fo-3",
                seq: 300_000,
                text: b"1:123456:xxxxxxxx",
            })
        );
    }

    #[test]
    fn other_frames_are_left_to_the_full_decoder() {
        let ack = frame(Body::SendAck(wire::SendAck {
            room: "r".into(),
            seq: 4,
            ..Default::default()
        }));
        assert_eq!(skim(&ack), None);
        let welcome = frame(Body::Welcome(wire::Welcome::default()));
        assert_eq!(skim(&welcome), None);
    }

    #[test]
    fn malformed_frames_are_not_pushes() {
        let bytes = frame(Body::Message(wire::Message {
            room: "r".into(),
            seq: 1,
            text: "0:1:".into(),
            ..Default::default()
        }));
        for cut in 1..bytes.len() {
            assert_eq!(skim(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(skim(&[0x0b]), None, "groups are not confab.v1");
    }
}
