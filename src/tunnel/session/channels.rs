//! The channels' pumps. The handler holds one end of each channel's [`DuplexStream`]; two tasks
//! join the other end to the connection: [`inbound_pump`] writes the server's data into it and
//! reports it consumed (so the server may send more), [`outbound_pump`] reads the handler's
//! output into data packets within the server's window. Both ask the connection for what they
//! need through [`Command`]s.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Semaphore};

/// Buffered between the handler and the connection, per direction and channel, and the
/// largest data packet we send. 8 KiB costs the server no more per byte than 32 KiB packets
/// (`cargo bench --bench tunnel`) and keeps 50 busy channels within 8 MiB.
pub(super) const CHANNEL_BUFFER: usize = 8 * 1024;

/// What the channel pumps ask of the connection.
pub(super) enum Command {
    Data(u32, Vec<u8>),
    Consumed(u32, u32),
    Close(u32),
}

/// The connection's end of a channel.
pub(super) struct ChannelIo {
    /// Data from the server, for the inbound pump; dropped at the server's EOF.
    pub(super) inbound: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// What we may still send (the server's window).
    pub(super) window: Arc<Semaphore>,
}

/// The permits to add to a window semaphore holding `available` for `bytes` more of the
/// server's window. The client keeps windows within 2^32-1, which a semaphore holds on 64-bit
/// targets; on 32-bit ones it holds 2^29-1 at most (and panics beyond), so a larger window
/// is used up to that (chisel's server grants 2 MiB).
pub(super) fn permits(available: usize, bytes: u32) -> usize {
    (bytes as usize).min(Semaphore::MAX_PERMITS - available)
}

/// Server data → handler, acknowledging what was delivered so the server may send more.
pub(super) async fn inbound_pump(
    id: u32,
    mut data: mpsc::UnboundedReceiver<Vec<u8>>,
    mut writer: WriteHalf<DuplexStream>,
    commands: mpsc::Sender<Command>,
) {
    while let Some(chunk) = data.recv().await {
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
        if commands
            .send(Command::Consumed(id, chunk.len() as u32))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Handler output → server, never more than the server's window allows. Each read gets a
/// buffer of its own, sent on as the data; while the handler has nothing to send, the pump
/// holds no buffer (a waiting read into an empty `Vec` takes at most 64 bytes), so an open but
/// quiet channel costs no 8 KiB.
pub(super) async fn outbound_pump(
    id: u32,
    mut reader: ReadHalf<DuplexStream>,
    window: Arc<Semaphore>,
    max_packet: usize,
    commands: mpsc::Sender<Command>,
) {
    loop {
        // Wait until the server allows at least one byte.
        match window.acquire().await {
            Ok(permit) => drop(permit),
            Err(_) => return,
        }
        // The duplex never holds more than CHANNEL_BUFFER.
        let room = window
            .available_permits()
            .clamp(1, max_packet)
            .min(CHANNEL_BUFFER);
        let mut chunk = Vec::new();
        let first = match (&mut reader).take(room as u64).read_buf(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Then what else the duplex holds, up to `room`, without waiting for more.
        if room > first {
            chunk.reserve_exact(room - first);
            let mut rest = (&mut reader).take((room - first) as u64);
            let mut read = pin!(rest.read_buf(&mut chunk));
            // An error or the end shows at the next read.
            poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Ready(_) | Poll::Pending => Poll::Ready(()),
            })
            .await;
        }
        let n = chunk.len();
        // Only this pump takes permits, so they are there.
        match window.try_acquire_many(n as u32) {
            Ok(permits) => permits.forget(),
            Err(_) => return,
        }
        if commands.send(Command::Data(id, chunk)).await.is_err() {
            return;
        }
    }
    let _ = commands.send(Command::Close(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_permits_stop_at_what_a_semaphore_holds() {
        assert_eq!(permits(0, u32::MAX), u32::MAX as usize);
        let almost = Semaphore::MAX_PERMITS - 10;
        assert_eq!(permits(almost, u32::MAX), 10);
        Semaphore::new(almost).add_permits(permits(almost, u32::MAX));
    }
}
