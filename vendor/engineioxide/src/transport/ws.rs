//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::sync::Arc;

use futures_util::{
    SinkExt, StreamExt, TryStreamExt,
    stream::{SplitSink, SplitStream},
};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use super::flush_buf::FlushBuf;
use crate::{
    DisconnectReason, Socket, body::ResponseBody, config::EngineIoConfig, engine::EngineIo,
    errors::Error, handler::EngineIoHandler, socket::InternalRx, transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    tokio::spawn(async move {
        let conn = hyper::upgrade::on(req)
            .await
            .map(hyper_util::rt::TokioIo::new);

        let res = match conn {
            Ok(conn) => on_init(engine.clone(), conn, protocol, sid, parts).await,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return;
            }
        };

        match res {
            Ok(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed")
            }
            Err(Error::MultipleWebsocketRequests) => {}
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
            }
        }
    });

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Then spawns the connection's writer and reader tasks and returns (AegisX patch: it used to
/// run the reader itself, until the connection closed)
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
pub async fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        // AegisX patch: frames go straight to `FlushBuf`, which gathers them until the writer
        // flushes and then frees its buffer (tungstenite's own kept its largest size for good).
        .write_buffer_size(0)
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let conn = FlushBuf::new(conn);
    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    let (socket, ws) = if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => return Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => return Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, FlushBuf<S>>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                (socket, ws)
            }
        }
    } else {
        let req_data = session_head(req_data);
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        engine.start_heartbeat(&socket);
        (socket, ws)
    };
    let (tx, rx) = ws.split();

    // Pipe between websocket and internal socket channel.
    tokio::spawn(forward_to_socket::<H, FlushBuf<S>>(socket.clone(), tx));

    // AegisX patch: the reader is a task of its own rather than the tail of this future. The
    // connection lives as long as the reader, and this future (the upgrade, the handshake, the
    // request parts, the websocket config) is several times the reader's size: about 3 KiB held
    // per idle socket for nothing.
    tokio::spawn(read_loop(engine, rx, socket));
    Ok(())
}

/// AegisX patch: what a websocket session keeps of its request for its whole life (handlers
/// read it through socketioxide's `req_parts()`): the request without the headers and the
/// upgrade handle that only the handshake uses. The session's copy shares its values with the
/// request, so the upgrade headers alone kept a header map and a shared buffer per socket
/// (about 700 bytes with the few headers a client sends); a request with no other header keeps
/// an empty map, which allocates nothing.
fn session_head(mut parts: Parts) -> Parts {
    use http::header::{
        CONNECTION, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_VERSION, UPGRADE,
    };
    const HANDSHAKE: [http::HeaderName; 6] = [
        CONNECTION,
        UPGRADE,
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_EXTENSIONS,
        SEC_WEBSOCKET_PROTOCOL,
    ];
    let mut headers = http::HeaderMap::new();
    let mut name = None;
    for (next, value) in std::mem::take(&mut parts.headers) {
        // `None`: one more value of the previous name.
        if next.is_some() {
            name = next;
        }
        if let Some(n) = name.as_ref().filter(|n| !HANDSHAKE.contains(n)) {
            headers.append(n.clone(), value);
        }
    }
    parts.headers = headers;
    parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts
}

/// Reads the websocket until it closes, then closes the session.
async fn read_loop<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    rx: SplitStream<WebSocketStream<S>>,
    socket: Arc<Socket<H::Data>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match forward_to_handler(&engine, rx, &socket)
        .with_cancellation_token(&socket.cancellation_token)
        .await
    {
        Some(Err(ref e)) => {
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        Some(Ok(())) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
        None => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket is closing");
        }
    }
}

/// Forwards all packets received from a websocket to a EngineIo [`Socket`]
async fn forward_to_handler<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    mut rx: SplitStream<WebSocketStream<S>>,
    socket: &Arc<Socket<H::Data>>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some(msg) = rx.try_next().await? {
        match msg {
            Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
                Packet::Close => {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("[sid={}] closing session", socket.id);
                    engine.close_session(socket.id, DisconnectReason::TransportClose);
                    break;
                }
                Packet::Pong | Packet::Ping => {
                    // A permit already stored means the client is already known to be alive.
                    socket.heartbeat.notify_one();
                    Ok::<(), Error>(())
                }
                Packet::Message(msg) => {
                    engine.handler.on_message(msg, socket.clone());
                    Ok(())
                }
                p => return Err(Error::BadPacket(p)),
            },
            Message::Binary(mut data) => {
                if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                    // The first byte is the message type, which we don't need.
                    data = data.split_off(1);
                }
                engine.handler.on_binary(data, socket.clone());
                Ok(())
            }
            Message::Close(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("websocket closed, closing session");
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                break;
            }
            _ => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = ?socket.id, "unexpected ws message");
                Ok(())
            }
        }?;
        // AegisX patch: a handler asked for a pause before the next frame (`ReadHold`). Boxed:
        // the timer is made only when holding, and the reader's idle future stays small.
        if let Some(until) = socket.read_hold.take() {
            Box::pin(tokio::time::sleep_until(until)).await;
        }
    }
    Ok(())
}

/// Forwards all packets waiting to be sent to the websocket
///
/// The websocket stream is flushed only when the internal channel is drained
///
/// AegisX patch: the writer lives as long as the connection, so its idle state is memory every
/// socket carries. Upstream awaited everything inside one `select!` nested in another, which
/// kept the packet iterators and the sink futures of the write path (and a second copy of the
/// inner future) in the idle state: 1,696 bytes in a release build. Waiting, writing and closing
/// are now separate awaits whose futures overlap, and no packet is held across an await
/// (`write_packets`): 656 bytes.
async fn forward_to_socket<H: EngineIoHandler, S>(
    socket: Arc<Socket<H::Data>>,
    mut tx: SplitSink<WebSocketStream<S>, Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A polling request that was in progress during the upgrade may still hold the lock.
    let lock = socket.internal_rx.lock();
    let Some(mut internal_rx) = lock
        .with_cancellation_token(&socket.cancellation_token)
        .await
    else {
        #[cfg(feature = "tracing")]
        tracing::debug!(sid = %socket.id, "session closed before starting the ws writer");
        return;
    };
    let InternalRx { buffered_rx, .. } = &mut *internal_rx;

    // AegisX patch: a writer blocked on a client that stopped reading would hold `internal_rx`
    // (so the session's close, and its disconnect handler, would wait for it) and the connection
    // until the client read again. Once the session is closed, the writer gets `CLOSE_GRACE` in
    // all to deliver what is queued, none if the client overflowed its buffer; then the
    // connection is dropped.
    let mut grace_ends = None;
    // Forward buffered packets until the channel is closed or the session is cancelled.
    loop {
        let written = match next_batch(&socket, buffered_rx).await {
            Next::Stop => break,
            Next::Packets(packets) => {
                let write = async {
                    write_packets(&socket, &mut tx, packets).await;
                    while let Ok(packets) = buffered_rx.try_recv() {
                        write_packets(&socket, &mut tx, packets).await;
                    }
                    #[cfg(feature = "tracing")]
                    tracing::trace!(sid = %socket.id, "ws flush");
                    tx.flush().await.ok();
                };
                unless_abandoned(&socket, &mut grace_ends, write).await
            }
            Next::Volatile => {
                let write = async {
                    if let Some(packets) = socket.volatile.take() {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(sid = ?socket.id, "ws volatile flush: {} packets", packets.len());
                        write_packets(&socket, &mut tx, packets).await;
                    }
                    tx.flush().await.ok();
                };
                unless_abandoned(&socket, &mut grace_ends, write).await
            }
        };
        if !written {
            return;
        }
    }

    #[cfg(feature = "tracing")]
    tracing::trace!(sid = %socket.id, "ws closing flush");
    let closing = async {
        tx.flush().await.ok();
        tx.close().await.ok();
    };
    unless_abandoned(&socket, &mut grace_ends, closing).await;
}

/// What wakes an idle websocket writer.
enum Next {
    Packets(Box<engineioxide_core::PacketBuf>),
    Volatile,
    Stop,
}

/// Waits for queued packets (first), the session's cancellation or a volatile packet.
async fn next_batch<D: Default + Send + Sync + 'static>(
    socket: &Socket<D>,
    rx: &mut tokio::sync::mpsc::Receiver<crate::socket::ChanItem>,
) -> Next {
    tokio::select! {
        biased;
        items = rx.recv() => items.map_or(Next::Stop, Next::Packets),
        _ = socket.cancellation_token.cancelled() => Next::Stop,
        () = socket.volatile.notify.notified() => Next::Volatile,
    }
}

/// Feeds packets to the websocket sink, without flushing.
///
/// The sink's readiness is awaited before a packet is taken and made a message, so no packet or
/// message is held across an await: this future stays a few words, not two packets' worth.
async fn write_packets<D: Default + Send + Sync + 'static, S>(
    socket: &Socket<D>,
    tx: &mut SplitSink<WebSocketStream<S>, Message>,
    mut packets: Box<engineioxide_core::PacketBuf>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut items = packets.drain(..);
    while items.len() > 0 {
        let ready = std::future::poll_fn(|cx| tx.poll_ready_unpin(cx)).await;
        let Some(item) = items.next() else { break };
        let message = match item {
            Packet::Binary(bin) | Packet::BinaryV3(bin) => {
                if socket.protocol == ProtocolVersion::V3 {
                    // v3 protocol requires packet type as the first byte.
                    // This requires a new buffer. This is OK as it is only for the V3 protocol.
                    let mut buff = Vec::with_capacity(bin.len() + 1);
                    buff.push(0x04);
                    buff.extend(bin);
                    Message::Binary(buff.into())
                } else {
                    Message::Binary(bin)
                }
            }
            // A Noop Packet maybe sent by the server to upgrade from a polling connection
            // In the case that the packet was not poll in time it will remain in the buffer and therefore
            // it should be discarded here
            Packet::Noop => continue,
            item => {
                let packet: String = item.try_into().unwrap();
                Message::Text(packet.into())
            }
        };
        if let Err(_e) = ready.and_then(|()| tx.start_send_unpin(message)) {
            #[cfg(feature = "tracing")]
            tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
        }
    }
}

/// How long a closed session's websocket writer may still take to deliver what is queued.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `work` unless the writer of a closed session should stop waiting for its client first
/// (then `false`). `grace_ends` is set when the close is first seen, so the grace is counted
/// once for the whole close, however many writes it spans.
async fn unless_abandoned<D: Default + Send + Sync + 'static>(
    socket: &Socket<D>,
    grace_ends: &mut Option<tokio::time::Instant>,
    work: impl Future<Output = ()>,
) -> bool {
    let abandon = async {
        socket.cancellation_token.cancelled().await;
        if !socket.is_overflowed() {
            let ends = *grace_ends.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
            // Boxed: the timer is only needed once closing.
            Box::pin(tokio::time::sleep_until(ends)).await;
        }
    };
    tokio::select! {
        biased;
        () = work => true,
        () = abandon => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws writer abandoned a client that does not read");
            false
        }
    }
}
/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .internal_tx
        .send(Box::new(smallvec![Packet::Noop]))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::Request;
    use tokio::io::DuplexStream;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[derive(Debug)]
    struct StubHandler;
    impl EngineIoHandler for StubHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    fn socket() -> Arc<Socket<()>> {
        Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(|_, _| ()),
            false,
        ))
    }

    async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(1024);
        (
            WebSocketStream::from_raw_socket(server, Role::Server, None).await,
            WebSocketStream::from_raw_socket(client, Role::Client, None).await,
        )
    }

    #[test]
    fn a_session_keeps_its_request_without_the_upgrade_headers() {
        let upgrade = |extra: &[(&str, &str)]| {
            let mut b = Request::builder()
                .uri("/socket.io/?EIO=4&transport=websocket")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13");
            for (k, v) in extra {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let bare = session_head(upgrade(&[]));
        assert!(bare.headers.is_empty());
        assert_eq!(bare.headers.capacity(), 0, "an empty map allocates nothing");
        assert_eq!(bare.uri, "/socket.io/?EIO=4&transport=websocket");

        let kept = session_head(upgrade(&[
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]));
        assert_eq!(kept.headers.len(), 3);
        assert_eq!(kept.headers["authorization"], "Bearer t");
        let forwarded: Vec<_> = kept.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["10.0.0.1", "10.0.0.2"]);
        assert!(kept.headers.get("sec-websocket-key").is_none());
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn writer_waits_for_the_lock_of_a_polling_request() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let (tx, _rx) = server.split();

        let polling = socket.internal_rx.lock().await;
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(socket.clone(), tx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "the writer should wait for the lock");

        drop(polling);
        socket.emit(Str::from("hello")).unwrap();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the writer should send the packet")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4hello"));
    }

    #[tokio::test]
    async fn writer_waiting_for_the_lock_stops_with_the_session() {
        let socket = socket();
        let (server, _client) = ws_pair().await;
        let (tx, _rx) = server.split();

        let _polling = socket.internal_rx.lock().await;
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(socket.clone(), tx));
        tokio::time::sleep(Duration::from_millis(20)).await;

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("the writer should stop")
            .unwrap();
    }
}
