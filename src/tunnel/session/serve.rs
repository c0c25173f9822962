//! A connection once open: one loop reads what the server sends, passes on what the channel
//! pumps queue (as far as the SSH windows allow) and writes what results in one write per turn.
//! It gives up if the server has not accepted the configuration by the setup deadline, pings
//! the server every keepalive interval (a ping still unanswered at the next one ends the
//! connection), and closes the connection cleanly when the tunnel is stopped or nothing used it
//! for the inactivity timeout. What the server sends goes through WebSocket and SSH; SSH's
//! events open, feed and close channels.

use super::channels::{inbound_pump, outbound_pump, permits, ChannelIo, Command, CHANNEL_BUFFER};
use super::{stopped, End, Error, Params, Session};
use crate::tunnel::ssh::{self, Event};
use crate::websocket::{Control, OP_BINARY};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout};

const READ_BUFFER: usize = 32 * 1024;

impl Session {
    pub(super) async fn serve(
        &mut self,
        params: &Params,
        mut command_rx: mpsc::Receiver<Command>,
        stop: &mut watch::Receiver<bool>,
        setup_deadline: tokio::time::Instant,
        connected: &mut Option<impl FnOnce()>,
    ) -> Result<End, Error> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut keepalive = tokio::time::interval(params.keepalive);
        keepalive.reset();
        loop {
            let idle_deadline =
                tokio::time::Instant::from_std(self.activity.last() + params.inactivity);
            tokio::select! {
                _ = stopped(stop) => {
                    self.close().await;
                    return Ok(End::Stopped);
                }
                read = self.stream.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(Error::Closed);
                    }
                    self.received(&buf[..n])?;
                    if let Some(f) = connected.take_if(|_| self.ready) {
                        f();
                    }
                }
                Some(command) = command_rx.recv(), if self.client.can_send_data() => {
                    self.command(command);
                    // Take what else is queued, so one write carries it all.
                    while self.client.can_send_data() {
                        match command_rx.try_recv() {
                            Ok(command) => self.command(command),
                            Err(_) => break,
                        }
                    }
                }
                _ = keepalive.tick(), if self.ready => {
                    if self.awaiting_pong {
                        return Err(Error::KeepaliveLost);
                    }
                    self.awaiting_pong = true;
                    self.client.ping();
                    self.client.tick(Instant::now())?;
                }
                _ = sleep_until(setup_deadline), if !self.ready => {
                    return Err(Error::Timeout("waiting for the tunnel server to accept the connection"));
                }
                _ = sleep_until(idle_deadline), if self.ready => {
                    if self.activity.last().elapsed() >= params.inactivity {
                        self.close().await;
                        return Ok(End::Inactive);
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Feeds bytes from the server through WebSocket and SSH, and acts on the events.
    pub(super) fn received(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut data = Vec::new();
        for control in self.decoder.decode(bytes, &mut data)? {
            match control {
                Control::Ping(payload) => self.encoder.pong(&payload, &mut self.wire)?,
                Control::Close => return Err(Error::Closed),
            }
        }
        if !data.is_empty() {
            self.client.feed(&data)?;
        }
        while let Some(event) = self.client.next_event() {
            self.event(event);
        }
        Ok(())
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Ready => self.ready = true,
            Event::Opened {
                id,
                window,
                max_packet,
            } => {
                self.activity.touch();
                let (ours, theirs) = tokio::io::duplex(CHANNEL_BUFFER);
                let (reader, writer) = tokio::io::split(ours);
                let (inbound, inbound_rx) = mpsc::unbounded_channel();
                let window = Arc::new(Semaphore::new(permits(0, window)));
                tokio::spawn(inbound_pump(id, inbound_rx, writer, self.commands.clone()));
                tokio::spawn(outbound_pump(
                    id,
                    reader,
                    window.clone(),
                    (max_packet as usize).clamp(1, ssh::MAX_PACKET as usize),
                    self.commands.clone(),
                ));
                tokio::spawn((self.handler)(theirs));
                self.channels.insert(
                    id,
                    ChannelIo {
                        inbound: Some(inbound),
                        window,
                    },
                );
            }
            Event::Data { id, data } => {
                self.activity.touch();
                if let Some(tx) = self.channels.get(&id).and_then(|c| c.inbound.as_ref()) {
                    let _ = tx.send(data);
                }
            }
            Event::Window { id, bytes } => {
                if let Some(c) = self.channels.get(&id) {
                    c.window
                        .add_permits(permits(c.window.available_permits(), bytes));
                }
            }
            Event::Eof { id } => {
                if let Some(c) = self.channels.get_mut(&id) {
                    c.inbound = None;
                }
            }
            Event::Closed { id } => {
                if let Some(c) = self.channels.remove(&id) {
                    c.window.close();
                }
            }
            Event::Pong => self.awaiting_pong = false,
            Event::TooManyChannels { max } => log::warn!(
                "tunnel to {}: the server opened more than {max} channels at once (the agent's limit): refusing more until some close",
                self.peer
            ),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Data(id, data) => {
                self.activity.touch();
                self.client.send_data(id, &data);
            }
            Command::Consumed(id, n) => self.client.consumed(id, n),
            Command::Close(id) => self.client.close(id),
        }
    }

    /// Writes what SSH and WebSocket have to send: a WebSocket message per SSH packet, all in
    /// one write.
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        let output = self.client.output();
        for packet in output.packets() {
            self.encoder.frame(OP_BINARY, packet, &mut self.wire)?;
        }
        output.clear();
        if !self.wire.is_empty() {
            self.stream.write_all(&self.wire).await?;
            self.wire.clear();
        }
        Ok(())
    }

    /// A clean end: SSH disconnect, WebSocket close, within a second.
    async fn close(&mut self) {
        self.client.disconnect("edge-agent closes the tunnel");
        let _ = self.encoder.close(&mut self.wire);
        let _ = timeout(Duration::from_secs(1), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
