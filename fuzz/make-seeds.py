#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the unit tests' inputs (and, for tz_file, one zone of the
host's tz database), in each target's input layout (src/fuzzing.rs). The seeds are committed;
run this again only when a target's layout changes.

usage: fuzz/make-seeds.py        (needs python3-cryptography for a valid signature seed)
"""
import base64
import hashlib
import pathlib
import re
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
SRC = FUZZ.parent / "src"
SEEDS = FUZZ / "seeds"


def rust_strings(path, must_contain):
    """The plain "..." literals of a Rust file that contain `must_contain`, unescaped."""
    text = (SRC / path).read_text()
    found = []
    for m in re.finditer(r'(?<![r#\w])"((?:[^"\\]|\\.)*)"', text, re.S):
        raw = m.group(1)
        raw = re.sub(r"\\\n\s*", "", raw)
        value = re.sub(
            r'\\(u\{[0-9a-fA-F]+\}|.)',
            lambda e: {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}.get(
                e.group(1), chr(int(e.group(1)[2:-1], 16)) if e.group(1).startswith("u{") else "\\" + e.group(1)),
            raw)
        if must_contain in value:
            found.append(value)
    return found


def write(target, seeds):
    folder = SEEDS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for seed in seeds:
        data = seed.encode() if isinstance(seed, str) else bytes(seed)
        (folder / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def ssh_string(data):
    return struct.pack(">I", len(data)) + data


def ssh_script(*payloads):
    """ssh_client's layout: a selector byte (cipher and piece size), then 2-byte length and
    payload for each server message."""
    out = bytearray([0x13])
    for p in payloads:
        out += struct.pack(">H", len(p)) + p
    return out


def kexinit(kex=b"curve25519-sha256,kex-strict-s-v00@openssh.com"):
    lists = [kex, b"ecdsa-sha2-nistp256", b"chacha20-poly1305@openssh.com,aes128-gcm@openssh.com",
             b"chacha20-poly1305@openssh.com,aes256-gcm@openssh.com", b"hmac-sha2-256", b"hmac-sha2-256",
             b"none", b"none", b"", b""]
    return bytes([20]) + bytes(16) + b"".join(ssh_string(v) for v in lists) + b"\0" + bytes(4)


def main():
    SEEDS.mkdir(exist_ok=True)
    spec_key = "aHR0cHM6Ly9wb3J0YWluZXIuZXhhbXBsZS5jb206OTQ0M3xwb3J0YWluZXIuZXhhbXBsZS5jb206ODAwMHx2elFPQlpEY2k0Z1F5d1FwSVFlbDJOM3V2ZU5pQTBQNWl0TzJta1UxZS9zPXwz"
    write("edge_key", [spec_key, spec_key + "=", b64("https://p:9443|p:8000|aa:bb:cc|0"), "not base64!"])
    write("env_file", [
        "# first boot\n\nEDGE_ID=abc\nEDGE_KEY = \"a b\\\"c\"\nAGENT_SECRET='x#y \\n'\n  # indented comment\n; other comment\nEMPTY=\nSPACED = a b  \nQ=\"a\\qb\\$\"\nHASH=#x\nMID=a\"b'\n",
        "KEY=\"v\" # note\nKEY=30s # note\nKEY=a\\b\n# note \\\nKEY=v\nKEY=\"open\\\"\n",
        "A=1\nnonsense\nB=\"open\n1A=x\n=x\nA B=x\nC=2\n",
    ])
    write("duration", ["5m", "1h30m", "1.5h", "300ms", "2s500ms", ".5s", "10us", "10µs", "0", "+1s",
                       "99999999999999999999h", "1.2.3s", "2562047h47m16.854775807s"])
    write("poll_response", [
        '{"status":"REQUIRED","port":51234,"schedules":[{"Id":2,"CollectLogs":false,"CronExpression":"*/5 * * * *","Script":"ZWNobyBoZWxsbwo","Version":1}],"checkin":5,"credentials":"RmQx","stacks":[{"ID":1,"Version":3}]}',
        '{"Status":"ACTIVE","checkin":0.01,"schedules":null,"stacks":null,"Stacks2":1,"edge_configurations":{"1":2}}',
        '{"checkin":1e300}', '{"checkin":-3,"stacks":[{"Id":4,"version":2}]}',
    ])
    compose = "services:\n  web:\n    image: nginx\n"
    write("stack_payload", [
        '{"ID":0,"Name":"web","StackFileContent":"","DirEntries":[{"Name":"docker-compose.yml","Content":"%s","IsFile":true,"Permissions":420},{"Name":".env","Content":"%s","IsFile":true,"Permissions":384},{"Name":"conf","IsFile":false}],"EntryFileName":"docker-compose.yml","Namespace":"default","Version":0,"RollbackTo":null,"RegistryCredentials":null,"EnvVars":null}' % (b64(compose), b64("TAG=1\n")),
        '{"Name":"x","StackFileContent":"services: {}\\n"}',
        '{"Name":"web","EntryFileName":"docker-compose.yml","DirEntries":[{"Name":"../../etc/passwd","Content":"eA==","IsFile":true,"Permissions":2541}]}',
    ])
    chunked = b"5\r\nhello\r\n1;name=value\r\n \r\n10 \r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    write("http_response", [
        b"\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + chunked,
        b"\x06HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"\x00HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        b"\x00HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
        b"\x02HTTP/1.0 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n",
    ])
    write("http_request", [
        b"\x00POST /containers/create?name=a%20b&path=%2Fetc HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked,
        b"\x03GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
        b"\x00PUT /browse/put HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 12\r\n\r\n",
    ])
    write("http_request_round_trip", ["GET\n/_ping\nHost:docker\nConnection:close",
                                      "POST\n/v1.41/images/create?fromImage=a\nX-Registry-Auth:e30=\nContent-Type:application/json"])
    write("chunked_round_trip", [b"\x00hello", b"\x04" + bytes(range(256)), b"\xff" + b"x" * 600])
    # websocket: first byte = piece size - 1; then frames as a server (unmasked) or client sends.
    server_frames = b"\x82\x05hello\x89\x02hi\x01\x03abc\x80\x02de\x88\x02\x03\xe8\x82\x7e\x00\x04abcd"
    write("websocket_client", [b"\x00" + server_frames, b"\x03" + server_frames, b"\x00\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"])
    mask = b"\x01\x02\x03\x04"
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(b"hello"))
    write("websocket_server", [b"\x00\x82\x85" + mask + masked, b"\x01\x89\x80" + mask + b"\x88\x80" + mask])
    write("websocket_round_trip", [b"\x00\x14hello\x02ping\x03pong\x81" + b"y" * 300, b"\x05" + b"\xfc" + b"z" * 4000])
    ok, failure = bytes([81]), bytes([82])
    opens = ssh_string(b"chisel") + struct.pack(">III", 7, 1 << 20, 32768)
    write("ssh_client", [
        ssh_script(bytes([6]) + ssh_string(b"ssh-userauth"), bytes([53]) + ssh_string(b"welcome") + ssh_string(b""),
                   bytes([52]), ok, bytes([90]) + opens, bytes([94]) + struct.pack(">I", 0) + ssh_string(b"GET / HTTP/1.1\r\n\r\n"),
                   bytes([93]) + struct.pack(">II", 0, 4096), bytes([98]) + struct.pack(">I", 0) + ssh_string(b"exit-status") + b"\x01",
                   bytes([80]) + ssh_string(b"ping") + b"\x01", bytes([96]) + struct.pack(">I", 0), bytes([97]) + struct.pack(">I", 0)),
        ssh_script(bytes([6]) + ssh_string(b"ssh-userauth"), bytes([52]), failure + b"bad config"),
        ssh_script(bytes([6]) + ssh_string(b"ssh-userauth"), bytes([52]), ok, kexinit(), bytes([2]) + ssh_string(b"x"),
                   bytes([1]) + struct.pack(">I", 11) + ssh_string(b"bye") + ssh_string(b"")),
    ])
    write("ssh_kexinit", [kexinit(), kexinit(b"curve25519-sha256@libssh.org"), kexinit(b"diffie-hellman-group14-sha1")])
    write("ssh_packet", [b"\x00" + bytes([94]) + b"\n" + bytes([20]) + b"abc\n", b"\x01\x00\x00\x00\x0c\x0a" + bytes(20), b"\x02hello\nworld"])
    write("ssh_wire", [bytes([1]) + ssh_string(b"config") + bytes([3, 1]), bytes([2]) + ssh_string(b"a,b@c") + b"\x00x\x00yz"])
    sig_seeds = ["3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "00" * 64 + "\nAAAA", "zz\n!!", "\n"]
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, utils
        from cryptography.hazmat.primitives import hashes, serialization
        key = ec.derive_private_key(0x0707070707070707070707070707070707070707070707070707070707070707, ec.SECP256R1())
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashlib.md5(b"Portainer-App").digest()
        r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.MD5()))))
        sig = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode().rstrip("=")
        sig_seeds.append(spki.hex() + "\n" + sig)
    except ImportError:
        print("no python3-cryptography: no valid signature seed")
    write("signature", sig_seeds)
    load = sorted((SRC / "compose/load").glob("*.rs"))
    docs = [d for f in load for d in rust_strings(f.relative_to(SRC), "services:") if len(d) < 1500]
    docs += [d for d in rust_strings("compose/yaml.rs", ":\n") if len(d) < 600][:8]
    write("compose", docs[:40] + ["services:\n  web:\n    image: nginx:${TAG}\n    env_file: .env\n\0TAG=1\nA=${TAG}-x\n"])
    write("dotenv", [
        "# comment\n\nexport A=1\nB = two words  # note\nC='lit $A \\n'\nD=\"x\\ty\\\"z\\$A\"\nE=${A}-$FROM_ENV\nFROM_ENV\nMISSING\nF=\"multi\nline\"\nG=a#b\nH=\n",
        "A=${B:-default}\nC=${A:?required}\nD=${UNSET:+alt}\nE=\"${A}${C}\"\n",
    ])
    write("cron", ["* * * * *\n\x01\x02\x03", "*/5 * * * *\n", "1-10/2 * * * *\n\x00\x1b", "0,30 9-17 * * *\n",
                   "0 12 * NOV-DEC Mon-Fri\n", "0 0 13 * 5\n", "30 0 12 * * *\n", "0 0 29 2 *\n",
                   "@every 1h30m\n", "@reboot\n", "@daily\n", "@weekly\n", "@hourly\n", "0 0 * * 7\n"])
    berlin = pathlib.Path("/usr/share/zoneinfo/Europe/Berlin")
    write("tz_file", ["CET-1CEST,M3.5.0,M10.5.0/3", "AEST-10AEDT,M10.1.0,M4.1.0/3", "<+0330>-3:30", "EST5EDT",
                      "IST-2IDT,J80/2,J264/2", "WART4WARST,0/0,365/25"] + ([berlin.read_bytes()] if berlin.is_file() else []))
    body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/a;b.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nline 1\r\n--XyZnot yet\r\n--Xy\r\n--XyZ\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n/dir\r\n--XyZ--\r\nepilogue"
    write("multipart", [b"\x00multipart/form-data; boundary=XyZ\n" + body, b"\x06multipart/form-data; boundary=\"XyZ\"\n" + body,
                        b"\x00multipart/form-data; boundary=XyZ\npreamble\r\n--XyZ\r\n\r\n\r\n--XyZ--"])
    state = ('{"edge_key":"a2V5","edge_id":"7e2b0a2c-4d1b-4c55-9f0e-2f3f5a6b7c8d","endpoint_id":3,"server_key":null,'
             '"stacks":{"1":{"version":3,"name":"web","project":"edge_web","entry_file":"docker-compose.yml",'
             '"files_hash":"0123456789abcdef","status":7,"error":"","sent":7},"2":5},'
             '"jobs":{"4":{"version":1,"expression":"*/5 * * * *"},"5":2}}')
    crc = __import__("zlib").crc32(state.encode())
    write("state_file", [b"\x01" + state.encode(), b"\x00" + f"edge-agent-state 2 {crc:08x} {len(state)}\n{state}".encode(),
                         b"\x00edge-agent-state 3 00000000 2\n{}", b"\x01{\"stacks\":{\"1\":3}}"])


main()
