"""A chisel-v3 server for edge-agent's tests on an SSH implementation other than Go's: Python's
asyncssh, with websockets for the WebSocket side (versions pinned in requirements.txt).

main.go is built on Debian's x/crypto, which predates strict KEX and aes256-gcm@openssh.com;
Portainer 2.21+ embeds a newer one that negotiates both. asyncssh speaks them too, so this
server tests our client's strict KEX (sequence numbers reset at every NEWKEYS, nothing but the
exchange in the first one, KEXINIT first) and AES-256-GCM against an independent implementation.
It behaves as main.go (see its top comment) for what those tests need:

  - HTTP on 127.0.0.1: a WebSocket upgrade asking for protocol chisel-v3 is accepted, and
    answered without a Sec-WebSocket-Protocol header; /health answers "OK", anything else 404.
  - SSH over binary WebSocket messages (bridged to asyncssh through a socket pair), an ECDSA
    P-256 host key, password authentication.
  - The first global request must be "config"; each reverse remote's "R:<LocalHost>:<LocalPort>"
    must match -allow, else the reply is false with "server: access to '...' denied". The
    reverse port is then listened on (127.0.0.1) and every connection to it becomes a "chisel"
    channel opened by the server, closed on both sides at the first end (no half-close).
  - Global requests "ping" are answered true "pong".

Flags: -user, -pass, -allow, -rekey (asyncssh's rekey_bytes: bytes it sends between key
exchanges), -ciphers, and -ignore to break strict KEX on purpose. Test controls and events on
stdout as main.go's, plus after each key exchange "negotiated" (the first) or "rekeyed" (later
ones) "kex=<name> cipher_cs=<name> cipher_sc=<name> strict=<True|False>".

Run: python3 asyncssh_server.py [flags], with the packages of requirements.txt.

asyncssh has no public hook for chisel's parts, so a few private ones are used, each marked
"asyncssh private" below: the version line, custom global requests, a channel of type
"chisel", the key exchange method and strict flag (get_extra_info has only the ciphers), and
the start of a key exchange for -ignore.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import re
import socket
import sys

import asyncssh
import websockets
from asyncssh.connection import SSHServerConnection
from asyncssh.constants import MSG_IGNORE, MSG_REQUEST_FAILURE
from asyncssh.packet import String
from asyncssh.stream import SSHTCPStreamSession
from websockets.asyncio.server import serve

flags = argparse.ArgumentParser()
flags.add_argument('-user', default='user', help='tunnel user')
flags.add_argument('-pass', dest='password', default='pass', help='tunnel password')
flags.add_argument('-allow', default=r'^R:0\.0\.0\.0:[0-9]+$',
                   help="regexp the user's remotes must match")
flags.add_argument('-rekey', type=int, default=0,
                   help='re-key after sending this many bytes (0: library default)')
flags.add_argument('-ciphers', default='',
                   help='comma-separated SSH ciphers to offer (default: the library\'s)')
flags.add_argument('-ignore', choices=['before-kexinit', 'after-kexinit'],
                   help='send an SSH_MSG_IGNORE there in the first key exchange, as a Terrapin '
                   'attacker would insert one: a strict KEX client must hang up')
args = flags.parse_args()
allowed = re.compile(args.allow)
conns = set()


def say(line):
    print(line, flush=True)


class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        ok = username == args.user and password == args.password
        say(f'auth {"ok" if ok else "failed"} {username}')
        return ok


# asyncssh private: it refuses a version line not starting "SSH-2.0-", but chisel's client
# says "SSH-chisel-v3-client" (Go accepts any "SSH-" line). Show asyncssh a "SSH-2.0-" line,
# then put the real one back: the exchange hash covers it.
recv_version = SSHServerConnection._recv_version


def _recv_version(self):
    line = self._inpbuf.split(b'\n', 1)[0].rstrip(b'\r')
    chisel = b'\n' in self._inpbuf and line.startswith(b'SSH-') and \
        not line.startswith((b'SSH-2.0-', b'SSH-1.99-'))
    if chisel:
        self._inpbuf = b'SSH-2.0-' + self._inpbuf[4:]
    done = recv_version(self)
    if chisel:
        self._client_version = line
        self.set_extra_info(client_version=line.decode())
    return done


# asyncssh private: the key exchange method and the strict flag are only in its state; read
# them as each exchange ends (before send_newkeys drops _kex). A missing one prints "?", which
# the tests refuse.
send_newkeys = SSHServerConnection.send_newkeys


def _send_newkeys(self, k, h):
    kex = getattr(getattr(self, '_kex', None), 'algorithm', b'?').decode()
    first = not self._session_id
    send_newkeys(self, k, h)
    say(f'{"negotiated" if first else "rekeyed"} kex={kex} '
        f'cipher_cs={self.get_extra_info("recv_cipher")} '
        f'cipher_sc={self.get_extra_info("send_cipher")} '
        f'strict={getattr(self, "_strict_kex", "?")}')


# asyncssh private: _send_kexinit starts an exchange; -ignore wraps the first one.
send_kexinit = SSHServerConnection._send_kexinit


def _send_kexinit(self):
    first = not self._session_id
    if first and args.ignore == 'before-kexinit':
        self.send_packet(MSG_IGNORE, String(b''))
    send_kexinit(self)
    if first and args.ignore == 'after-kexinit':
        self.send_packet(MSG_IGNORE, String(b''))


# asyncssh private: global requests are dispatched to _process_<name>_global_request(packet),
# the packet positioned after want_reply, and answered with _report_global_response (whose
# failure carries no text, so a refusal is sent by hand: Go puts its reason there).
def _process_config_global_request(self, packet):
    self.chisel_configured = True
    asyncio.ensure_future(configure(self, packet.get_remaining_payload()))


def _process_ping_global_request(self, packet):
    if not getattr(self, 'chisel_configured', False):
        refuse(self, 'expecting config request')
        return
    say('client ping')
    self._report_global_response(b'pong')


def refuse(conn, msg):
    say(f'config refused {msg}')
    conn._global_request_queue.pop(0)
    conn.send_packet(MSG_REQUEST_FAILURE, b'server: ' + msg.encode())
    conn.close()


SSHServerConnection._recv_version = _recv_version
SSHServerConnection.send_newkeys = _send_newkeys
SSHServerConnection._send_kexinit = _send_kexinit
SSHServerConnection._process_config_global_request = _process_config_global_request
SSHServerConnection._process_ping_global_request = _process_ping_global_request


async def configure(conn, payload):
    try:
        remotes = json.loads(payload)['Remotes']
    except (ValueError, KeyError, TypeError):
        refuse(conn, 'invalid config')
        return
    conn.listeners = []
    for rem in remotes:
        addr = f'R:{rem.get("LocalHost")}:{rem.get("LocalPort")}'
        if not rem.get('Reverse') or not allowed.search(addr):
            refuse(conn, f"access to '{addr}' denied")
            return
        remote = f'{rem.get("RemoteHost")}:{rem.get("RemotePort")}'.encode()
        try:
            conn.listeners.append(await asyncio.start_server(
                lambda r, w, remote=remote: accept(conn, remote, r, w),
                '127.0.0.1', int(rem['LocalPort'])))
        except (OSError, ValueError):
            refuse(conn, f'Server cannot listen on {addr}')
            return
    conn._report_global_response(True)
    say(f'config ok {payload.decode()}')


async def accept(conn, remote, tcp_reader, tcp_writer):
    # asyncssh private: _open_forward opens a channel of any type (its public calls name theirs).
    chan = conn.create_tcp_channel()
    try:
        session = await chan._open_forward(SSHTCPStreamSession, b'chisel', remote)
    except (OSError, asyncssh.Error) as e:
        say(f'channel refused {e}')
        tcp_writer.close()
        return
    await pipe(tcp_reader, tcp_writer, asyncssh.SSHReader(session, chan),
               asyncssh.SSHWriter(session, chan))


async def pipe(*ends):
    """chisel's cio.Pipe: copy both ways, close both at the first end."""
    async def copy(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncssh.Error):
            pass

    a_reader, a_writer, b_reader, b_writer = ends
    copies = [asyncio.ensure_future(copy(a_reader, b_writer)),
              asyncio.ensure_future(copy(b_reader, a_writer))]
    await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
    for c in copies:
        c.cancel()
    a_writer.close()
    b_writer.close()


async def serve_ssh(sock, host_key):
    options = {'rekey_bytes': args.rekey} if args.rekey else {}
    if args.ciphers:
        options['encryption_algs'] = args.ciphers.split(',')
    try:
        conn = await asyncssh.run_server(sock, server_factory=Server,
                                         server_host_keys=[host_key], **options)
    except (OSError, asyncssh.Error) as e:
        say(f'handshake failed {e}')
        return
    say(f'client version {conn.get_extra_info("client_version")}')
    conns.add(conn)
    try:
        await conn.wait_closed()
    finally:
        conns.discard(conn)
        for listener in getattr(conn, 'listeners', []):
            listener.close()
        say('session closed')


def process_request(connection, request):
    """chisel's handler: the WebSocket upgrade for chisel-v3, /health, else 404."""
    if request.headers.get('Upgrade', '').lower() == 'websocket':
        if request.headers.get('Sec-WebSocket-Protocol') == 'chisel-v3':
            return None
        say(f'ignored protocol {request.headers.get("Sec-WebSocket-Protocol")!r}')
    if request.path == '/health':
        return connection.respond(200, 'OK\n')
    return connection.respond(404, 'Not found')


async def bridge(ws, host_key):
    """chisel's cnet.NewWebSocketConn: SSH over binary messages, here to a socket pair."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    ssh = asyncio.ensure_future(serve_ssh(theirs, host_key))

    async def to_ssh():
        async for message in ws:
            writer.write(message if isinstance(message, bytes) else message.encode())
            await writer.drain()

    async def to_ws():
        while data := await reader.read(65536):
            await ws.send(data)

    async def quietly(copy):
        try:
            await copy
        except (OSError, websockets.ConnectionClosed):
            pass

    copies = [asyncio.ensure_future(quietly(to_ssh())), asyncio.ensure_future(quietly(to_ws()))]
    await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
    for c in copies:
        c.cancel()
    writer.close()
    await ssh


async def main():
    host_key = asyncssh.generate_private_key('ecdsa-sha2-nistp256')
    fingerprint = base64.b64encode(hashlib.sha256(host_key.public_data).digest()).decode()
    server = await serve(lambda ws: bridge(ws, host_key), '127.0.0.1', 0,
                         process_request=process_request, compression=None,
                         max_size=None, ping_interval=None)
    say(f'fingerprint {fingerprint}')
    say('listening %s:%d' % server.sockets[0].getsockname()[:2])

    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == 'drop':
            for conn in list(conns):
                conn.abort()
            say('dropped')


if __name__ == '__main__':
    asyncio.run(main())
