// A chisel-v3 server for edge-agent's tests. It follows what Portainer's embedded chisel 1.10
// server does (chisel server/server_handler.go, share/tunnel, share/cnet/conn_ws.go) and is
// built on the same libraries: golang.org/x/crypto/ssh and gorilla/websocket (from Debian's
// golang-golang-x-crypto-dev and golang-github-gorilla-websocket-dev).
//
//   - HTTP on 127.0.0.1: a WebSocket upgrade asking for protocol chisel-v3 is accepted, and
//     answered without a Sec-WebSocket-Protocol header (gorilla's upgrader names none);
//     /health answers "OK", anything else 404 "Not found".
//   - SSH over binary WebSocket messages: version "SSH-chisel-v3-server", an ECDSA P-256 host
//     key, password authentication.
//   - The first global request must be "config", within 10 s; each reverse remote's
//     "R:<LocalHost>:<LocalPort>" must match -allow, else the reply is false with
//     "server: access to '...' denied". The reverse port is then listened on (on 127.0.0.1
//     here, 0.0.0.0 in chisel) and every connection to it becomes a "chisel" channel.
//   - Global requests "ping" are answered true "pong"; any other is never answered.
//
// With -cert and -key it serves HTTPS, for tunnel addresses written as https:// URLs.
//
// Test controls: a line "drop" on stdin ends every SSH connection (as a server restart would);
// the end of stdin stops the server. Events are printed on stdout, one per line.
//
// With -client URL -fingerprint FP -port N it is instead a reference client for benches: what
// chisel 1.10's client puts on the wire (Go's SSH client over the same wsConn, so one
// WebSocket message per write of the SSH transport), asking for R:0.0.0.0:N and echoing every
// channel. It prints "client ready" once the server accepted the configuration and stops at
// the end of stdin.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o chisel-test-server main.go
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/ssh"
)

var (
	user     = flag.String("user", "user", "tunnel user")
	pass     = flag.String("pass", "pass", "tunnel password")
	allow    = flag.String("allow", `^R:0\.0\.0\.0:[0-9]+$`, "regexp the user's remotes must match")
	rekey    = flag.Uint64("rekey", 0, "SSH RekeyThreshold in bytes (0: library default)")
	pingEach = flag.Duration("ping", 0, "send the client a ping request this often (0: never)")
	pingWait = flag.Duration("ping-timeout", 0, "close the connection when a ping's reply takes longer (0: the -ping interval, as chisel's PING_TIMEOUT default)")
	ciphers  = flag.String("ciphers", "", "comma-separated SSH ciphers to offer (default: the library's)")
	certFile = flag.String("cert", "", "serve HTTPS with this certificate chain (PEM)")
	keyFile  = flag.String("key", "", "and this key (PEM)")
	client   = flag.String("client", "", "be a reference client of the server at this ws:// URL")
	hostFP   = flag.String("fingerprint", "", "client: the server key's SHA256 fingerprint (base64)")
	port     = flag.String("port", "", "client: the reverse port to ask for")
)

type remote struct {
	LocalHost, LocalPort, LocalProto    string
	RemoteHost, RemotePort, RemoteProto string
	Socks, Reverse, Stdio               bool
}

type config struct {
	Version string
	Remotes []remote
}

var (
	out   sync.Mutex
	conns = map[*ssh.ServerConn]bool{}
	mu    sync.Mutex
)

func say(format string, args ...interface{}) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

// wsConn is chisel's cnet.NewWebSocketConn (share/cnet/conn_ws.go): a net.Conn over binary
// WebSocket messages. Its Read is chisel's to the copy: when dst is shorter than the message,
// the unread rest is copied into a freshly allocated buffer, at every short read. Go's SSH
// transport reads through a 4096-byte bufio.Reader, so a large message is copied over and over:
// this is what a client sending large messages costs Portainer's server.
//
// largest (not chisel's) records the largest message read, printed as "largest message N"
// when the session closes, so tests can tell what a client puts in one message.
type wsConn struct {
	*websocket.Conn
	buff    []byte
	largest int
}

func (c *wsConn) Read(dst []byte) (int, error) {
	ldst := len(dst)
	var src []byte
	if len(c.buff) > 0 {
		src = c.buff
		c.buff = nil
	} else if _, msg, err := c.Conn.ReadMessage(); err == nil {
		src = msg
		if len(msg) > c.largest {
			c.largest = len(msg)
		}
	} else {
		return 0, err
	}
	var n int
	if len(src) > ldst {
		n = copy(dst, src[:ldst])
		r := src[ldst:]
		c.buff = make([]byte, len(r))
		copy(c.buff, r)
	} else {
		n = copy(dst, src)
	}
	return n, nil
}

func (c *wsConn) Write(b []byte) (int, error) {
	if err := c.Conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func main() {
	flag.Parse()
	if *client != "" {
		runClient()
		return
	}
	allowed := regexp.MustCompile(*allow)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	signer, err := ssh.NewSignerFromKey(key)
	must(err)
	sum := sha256.Sum256(signer.PublicKey().Marshal())
	fingerprint := base64.StdEncoding.EncodeToString(sum[:])

	sshConfig := &ssh.ServerConfig{
		ServerVersion: "SSH-chisel-v3-server",
		PasswordCallback: func(c ssh.ConnMetadata, p []byte) (*ssh.Permissions, error) {
			if c.User() == *user && string(p) == *pass {
				say("auth ok %s", c.User())
				return nil, nil
			}
			say("auth failed %s", c.User())
			return nil, fmt.Errorf("invalid authentication for username: %s", c.User())
		},
	}
	sshConfig.RekeyThreshold = *rekey
	if *ciphers != "" {
		sshConfig.Ciphers = strings.Split(*ciphers, ",")
	}
	sshConfig.AddHostKey(signer)

	upgrader := websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return true }}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.ToLower(r.Header.Get("Upgrade")) == "websocket" {
			if r.Header.Get("Sec-WebSocket-Protocol") == "chisel-v3" {
				ws, err := upgrader.Upgrade(w, r, nil)
				if err != nil {
					say("upgrade failed %v", err)
					return
				}
				serve(&wsConn{Conn: ws}, sshConfig, allowed)
				return
			}
			say("ignored protocol %q", r.Header.Get("Sec-WebSocket-Protocol"))
		}
		if r.URL.Path == "/health" {
			w.Write([]byte("OK\n"))
			return
		}
		w.WriteHeader(404)
		w.Write([]byte("Not found"))
	})
	if *certFile != "" {
		go http.ServeTLS(listener, handler, *certFile, *keyFile)
	} else {
		go http.Serve(listener, handler)
	}
	say("fingerprint %s", fingerprint)
	say("listening %s", listener.Addr())

	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if lines.Text() == "drop" {
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			say("dropped")
		}
	}
}

func serve(conn *wsConn, sshConfig *ssh.ServerConfig, allowed *regexp.Regexp) {
	sshConn, chans, reqs, err := ssh.NewServerConn(conn, sshConfig)
	if err != nil {
		say("handshake failed %v", err)
		return
	}
	say("client version %s", sshConn.ClientVersion())
	mu.Lock()
	conns[sshConn] = true
	mu.Unlock()
	defer func() {
		mu.Lock()
		delete(conns, sshConn)
		mu.Unlock()
		sshConn.Close()
		say("largest message %d", conn.largest)
		say("session closed")
	}()
	go func() {
		for ch := range chans {
			ch.Reject(ssh.Prohibited, "only reverse tunnels here")
		}
	}()

	var r *ssh.Request
	select {
	case r = <-reqs:
	case <-time.After(10 * time.Second):
		say("config timeout")
		return
	}
	if r == nil {
		return
	}
	fail := func(msg string) {
		say("config refused %s", msg)
		r.Reply(false, []byte("server: "+msg))
	}
	if r.Type != "config" {
		fail("expecting config request")
		return
	}
	var c config
	if json.Unmarshal(r.Payload, &c) != nil {
		fail("invalid config")
		return
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, rem := range c.Remotes {
		addr := "R:" + rem.LocalHost + ":" + rem.LocalPort
		if !rem.Reverse || !allowed.MatchString(addr) {
			fail(fmt.Sprintf("access to '%s' denied", addr))
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+rem.LocalPort)
		if err != nil {
			fail(fmt.Sprintf("Server cannot listen on %s", addr))
			return
		}
		listeners = append(listeners, l)
	}
	r.Reply(true, nil)
	say("config ok %s", string(r.Payload))
	// As chisel: the reverse ports carry channels only once the configuration is accepted.
	for i, l := range listeners {
		rem := c.Remotes[i]
		go accept(l, sshConn, rem.RemoteHost+":"+rem.RemotePort)
	}

	if *pingEach > 0 {
		go keepAlive(sshConn)
	}
	go func() {
		for r := range reqs {
			switch r.Type {
			case "ping":
				say("client ping")
				r.Reply(true, []byte("pong"))
			default:
				say("unanswered request %s", r.Type)
			}
		}
	}()
	sshConn.Wait()
}

// keepAlive pings as chisel's keepAliveLoop does: every -ping, global request "ping" with
// want-reply and no payload; an error, a payload other than "pong" or no reply within
// -ping-timeout closes the connection.
func keepAlive(sshConn *ssh.ServerConn) {
	wait := *pingWait
	if wait == 0 {
		wait = *pingEach
	}
	for {
		time.Sleep(*pingEach)
		type reply struct {
			ok      bool
			payload []byte
			err     error
		}
		replies := make(chan reply, 1)
		go func() {
			ok, payload, err := sshConn.SendRequest("ping", true, nil)
			replies <- reply{ok, payload, err}
		}()
		select {
		case r := <-replies:
			if r.err != nil {
				return
			}
			say("server ping %v %s", r.ok, r.payload)
			if len(r.payload) > 0 && string(r.payload) != "pong" {
				say("strange ping response")
				sshConn.Close()
				return
			}
		case <-time.After(wait):
			say("ping timeout")
			sshConn.Close()
			return
		}
	}
}

func accept(l net.Listener, sshConn *ssh.ServerConn, remote string) {
	for {
		src, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer src.Close()
			dst, reqs, err := sshConn.OpenChannel("chisel", []byte(remote))
			if err != nil {
				say("channel refused %v", err)
				return
			}
			go ssh.DiscardRequests(reqs)
			pipe(src, dst)
		}()
	}
}

// pipe is chisel's cio.Pipe: copy both ways, close both at the first end.
func pipe(src io.ReadWriteCloser, dst io.ReadWriteCloser) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		src.Close()
		dst.Close()
	}
	wg.Add(2)
	go func() {
		io.Copy(src, dst)
		once.Do(closeBoth)
		wg.Done()
	}()
	go func() {
		io.Copy(dst, src)
		once.Do(closeBoth)
		wg.Done()
	}()
	wg.Wait()
}

// runClient is the -client mode: chisel's client handshake (client/client.go: WebSocket with
// protocol chisel-v3, SSH with password, the "config" request), then an echo per channel.
func runClient() {
	dialer := websocket.Dialer{Subprotocols: []string{"chisel-v3"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.Dial(*client, nil)
	must(err)
	sshConfig := &ssh.ClientConfig{
		User:          *user,
		Auth:          []ssh.AuthMethod{ssh.Password(*pass)},
		ClientVersion: "SSH-chisel-v3-client",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			sum := sha256.Sum256(key.Marshal())
			if base64.StdEncoding.EncodeToString(sum[:]) != *hostFP {
				return fmt.Errorf("host key fingerprint mismatch")
			}
			return nil
		},
		Timeout: 10 * time.Second,
	}
	sshConn, chans, reqs, err := ssh.NewClientConn(&wsConn{Conn: ws}, "", sshConfig)
	must(err)
	go ssh.DiscardRequests(reqs)
	payload, err := json.Marshal(config{Version: "0.0.0-src", Remotes: []remote{{
		LocalHost: "0.0.0.0", LocalPort: *port, LocalProto: "tcp",
		RemoteHost: "127.0.0.1", RemotePort: "9001", RemoteProto: "tcp", Reverse: true,
	}}})
	must(err)
	ok, reply, err := sshConn.SendRequest("config", true, payload)
	must(err)
	if !ok {
		must(fmt.Errorf("config refused: %s", reply))
	}
	go func() {
		for ch := range chans {
			if ch.ChannelType() != "chisel" {
				ch.Reject(ssh.UnknownChannelType, "only chisel channels")
				continue
			}
			c, creqs, err := ch.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(creqs)
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	say("client ready")
	io.Copy(io.Discard, os.Stdin)
	sshConn.Close()
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
