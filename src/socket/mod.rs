//! The Socket.IO adapter: namespace `/ws`, connect middleware (auth, connection cap), one handler
//! module per event family. Handlers decode, call a domain service, and answer; deliveries to
//! other sockets go through the bus and the fan-out.

pub mod connect;
pub mod deadlines;
#[cfg(test)]
mod decoder_props;
pub mod guard;
pub mod interest;
pub mod messages;
pub mod presence;
pub mod reaper;
pub mod reply;
pub mod rooms;
pub mod session;
pub mod token;

use std::time::Duration;

use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{ParserConfig, SocketIo, TransportType};

use crate::settings::Settings;
use crate::state::AppState;

/// The only namespace served.
pub const NAMESPACE: &str = "/ws";

/// Bytes of the per-websocket read buffer (the library's default is 4 KiB).
const WS_READ_BUFFER: usize = 256;

/// Builds the Socket.IO layer with the gateway's limits in place of the library's defaults.
pub fn build(settings: &Settings, state: AppState) -> (SocketIoLayer, SocketIo) {
    let parser = ParserConfig::common()
        .max_incoming_binaries(settings.max_binary_attachments)
        .max_incoming_binary_buf_size(settings.max_payload_bytes)
        .packet_completion_timeout(Duration::from_secs(settings.attachment_timeout_secs));
    let (layer, io) = SocketIo::builder()
        .with_parser(parser)
        .transports([TransportType::Polling, TransportType::Websocket])
        .ping_interval(Duration::from_millis(settings.ping_interval_ms))
        .ping_timeout(Duration::from_millis(settings.ping_timeout_ms))
        .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
        .max_payload(settings.max_polling_payload_bytes)
        .ws_max_message_size(settings.max_payload_bytes)
        .ws_max_frame_size(settings.max_payload_bytes)
        .max_buffer_size(settings.socket_buffer_packets)
        // Every websocket holds this read buffer while idle, grown to the largest frame it
        // read (tungstenite keeps the capacity): usually the CONNECT with its token, ~0.5 KiB.
        .ws_read_buffer_size(WS_READ_BUFFER)
        .with_state(state)
        .build_layer();
    io.ns(NAMESPACE, connect::on_connect.with(connect::authenticate));
    (layer, io)
}
