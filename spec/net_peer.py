"""A TCP peer for spec/net_spec.lua: `python3 spec/net_peer.py MODE HOST`
binds port 0 on HOST, prints the port on a line of its own, then serves
until killed:

  echo    each connection gets back what it sends, until it half-closes
  silent  listens with a backlog of 0 and never accepts: the first connect
          succeeds and nothing answers it; later ones get no answer at all
          (the kernel drops their SYNs while the accept queue is full)
  closed  bound, not listening: a connect is refused (the port stays taken,
          so no other test can start listening on it)
  http    an HTTP server (http.server): / says hello, /headers echoes the
          request head, /nolength answers without a Content-Length, /big
          answers 2 MiB, anything else is a 404
"""
import http.server
import socket
import socketserver
import sys
import threading

mode, host = sys.argv[1], sys.argv[2]
family = socket.AF_INET6 if ":" in host else socket.AF_INET


def announce(port):
    print(port, flush=True)


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)


class Http(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, length=True):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Peer", "net_peer")
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/":
            self.answer(200, b"hello\n")
        elif self.path == "/headers":
            self.answer(200, (self.requestline + "\r\n" + str(self.headers)).encode())
        elif self.path == "/nolength":
            self.answer(200, b"to the end\n", length=False)
        elif self.path == "/big":
            self.answer(200, b"x" * (2 << 20))
        else:
            self.answer(404, b"no such thing\n")


class Server(socketserver.ThreadingTCPServer):
    address_family = family
    daemon_threads = True


if mode in ("echo", "http"):
    server = Server((host, 0), Echo if mode == "echo" else Http)
    announce(server.server_address[1])
    server.serve_forever()
else:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    if mode == "silent":
        sock.listen(0)
    announce(sock.getsockname()[1])
    threading.Event().wait()
