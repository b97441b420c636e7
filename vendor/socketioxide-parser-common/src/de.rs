use std::io::Cursor;

use bytes::Buf;
use socketioxide_core::{
    Str, Value,
    packet::{Packet, PacketData},
    parser::ParseError,
};

pub fn deserialize_packet(data: Str) -> Result<(Packet, Option<usize>), ParseError> {
    if data.is_empty() {
        return Err(ParseError::InvalidPacketType);
    }
    // It is possible to parse the packet from a byte slice because separators are only ASCII
    let mut reader = Cursor::new(data.as_str());
    let index = reader.get_u8();
    let index = (b'0'..=b'6')
        .contains(&index)
        .then_some(index)
        .ok_or(ParseError::InvalidPacketType)?;

    let attachments: Option<usize> = if index == b'5' || index == b'6' {
        Some(read_attachments(&mut reader).ok_or(ParseError::InvalidAttachments)?)
    } else {
        None
    };

    // Custom nsps will start with a slash
    let ns = if reader.has_remaining().then(|| reader.chunk()[0]) == Some(b'/') {
        read_nsp(&mut reader, &data)
    } else {
        Str::from("/")
    };
    let ack = read_ack(&mut reader)?;

    let data = data.slice(reader.position() as usize..);
    // AegisX patch: every packet type's payload has its required shape, as socket.io-parser's
    // `isPayloadValid` demands; a packet that lacks it is a protocol error.
    if !payload_shape_ok(index, &data) {
        return Err(ParseError::InvalidData);
    }
    fn str(data: Str) -> Value {
        Value::Str(data, None)
    }
    let inner = match index {
        b'0' => PacketData::Connect((!data.is_empty()).then(|| str(data))),
        b'1' => PacketData::Disconnect,
        b'2' => PacketData::Event(str(data), ack),
        b'3' => PacketData::EventAck(str(data), ack.ok_or(ParseError::InvalidPacketType)?),
        b'5' => PacketData::BinaryEvent(str(data), ack),
        b'6' => PacketData::BinaryAck(str(data), ack.ok_or(ParseError::InvalidPacketType)?),
        _ => return Err(ParseError::InvalidPacketType),
    };
    Ok((Packet { inner, ns }, attachments))
}

fn read_attachments(reader: &mut Cursor<&str>) -> Option<usize> {
    let data = *reader.get_ref();
    let start_index = reader.position() as usize;
    loop {
        match reader.has_remaining().then(|| reader.get_u8()) {
            Some(c) if c.is_ascii_digit() => (),
            Some(b'-') if reader.position() as usize > start_index => {
                break data[start_index..reader.position() as usize - 1]
                    .parse()
                    .ok();
            }
            _ => {
                reader.set_position(reader.position() - 1);
                break None;
            }
        }
    }
}

fn read_nsp(reader: &mut Cursor<&str>, data: &Str) -> Str {
    let start_index = reader.position() as usize;
    loop {
        match reader.has_remaining().then(|| reader.get_u8()) {
            Some(b',') => {
                break data.slice(start_index..reader.position() as usize - 1);
            }
            // It maybe possible depending on clients that ns does not end with a comma
            // if it is the end of the packet
            // e.g `1/custom`
            None => {
                break data.slice(start_index..reader.position() as usize);
            }
            Some(_) => (),
        }
    }
}

/// AegisX patch: the ack id, when digits are present, must be a whole id that fits the `i64`
/// the packet carries, directly followed by the JSON payload. Upstream turned an id that did not
/// fit, or digits followed by anything else, into "no ack id" and went on with the rest.
fn read_ack(reader: &mut Cursor<&str>) -> Result<Option<i64>, ParseError> {
    let start_index = reader.position() as usize;
    let data = *reader.get_ref();
    while reader.has_remaining() && reader.chunk()[0].is_ascii_digit() {
        reader.advance(1);
    }
    let end_index = reader.position() as usize;
    if end_index == start_index {
        return Ok(None);
    }
    match reader.has_remaining().then(|| reader.chunk()[0]) {
        Some(b'[' | b'{') => data[start_index..end_index]
            .parse()
            .map(Some)
            .map_err(|_| ParseError::InvalidAckId),
        _ => Err(ParseError::InvalidAckId),
    }
}

/// AegisX patch: CONNECT carries nothing or an object, DISCONNECT nothing, EVENT and ACK
/// (binary or not) a JSON array. Only the first byte is checked here; the rest is parsed when
/// the payload is read.
fn payload_shape_ok(index: u8, data: &str) -> bool {
    match index {
        b'0' => data.is_empty() || data.starts_with('{'),
        b'1' => data.is_empty(),
        b'2' | b'3' | b'5' | b'6' => data.starts_with('['),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use socketioxide_core::parser::ParseError;

    use crate::de::deserialize_packet;

    /// Every `Str` slice done by the parser must land on a char boundary.
    #[test]
    fn multibyte_packets_do_not_panic() {
        for packet in [
            "2/é,[\"é\"]",
            "2/é",
            "2/é,",
            "2é",
            "21é",
            "2/é,1é",
            "2/é,1[\"é\"]",
            "0/é,{\"é\":\"é\"}",
            "51-/é,1[\"é\"]",
            "51é",
            "é",
        ] {
            let _ = deserialize_packet(packet.into());
        }
    }

    #[test]
    fn data_is_empty() {
        let err = deserialize_packet("".into());
        assert!(matches!(err, Err(ParseError::InvalidPacketType)));
    }

    #[test]
    fn invalid_packet_type() {
        let err = deserialize_packet("7azdaz".into());
        assert!(matches!(err, Err(ParseError::InvalidPacketType)));
        let err = deserialize_packet("8".into());
        assert!(matches!(err, Err(ParseError::InvalidPacketType)));
    }

    /// AegisX patch: ack ids outside `i64`, stray digits and missing payloads are refused.
    #[test]
    fn malformed_ack_ids_and_payloads_are_refused() {
        for packet in [
            "2/ws,99999999999999999999[\"e\"]",
            "2/ws,18446744073709551616[\"e\"]",
            "3/ws,9223372036854775808[]",
            "2/ws,12",
            "51-1-",
            "51-/ws,",
            "51-/ws,1",
            "61-/ws,",
            "61-/ws,[]",
            "3/ws,[]",
            "2/ws,",
            "2/ws,{}",
            "1/ws,x",
            "0/ws,[]",
        ] {
            assert!(deserialize_packet(packet.into()).is_err(), "{packet} was accepted");
        }
        for packet in [
            "2/ws,9223372036854775807[\"e\"]",
            "2/ws,[\"e\"]",
            "3/ws,1[]",
            "61-/ws,1[{\"_placeholder\":true,\"num\":0}]",
            "51-/ws,[\"e\",{\"_placeholder\":true,\"num\":0}]",
            "0/ws,",
            "0/ws,{\"token\":\"t\"}",
            "0/ws",
            "1/ws,",
            "1/ws",
        ] {
            assert!(deserialize_packet(packet.into()).is_ok(), "{packet} was refused");
        }
    }

    #[test]
    fn ns_without_comma_end() {
        let (packet, _) = deserialize_packet("0/custom".into()).unwrap();
        assert_eq!(packet.ns, "/custom");
    }
}
