# http_server.py — a small HTTP server that takes its listening socket from
# systemd's socket activation (LISTEN_FDS, fd 3), for the hot-upgrade demo
# and specs (the socket stays baton's: every generation gets the same one);
# says READY=1 on NOTIFY_SOCKET, answers GET with its generation ($GEN),
# and drains on TERM: it stops accepting, finishes what it serves, exits 0.
# FAIL=start exits at once; FAIL=never never says it is ready; FAIL=after
# dies AFTER seconds (default 0.3) after READY=1; READY_AFTER=S makes it
# take S seconds to start (neither serving nor ready meanwhile).
import os, signal, socket, sys, threading
from http.server import HTTPServer, BaseHTTPRequestHandler
from socketserver import ThreadingMixIn

if os.environ.get("FAIL") == "start":
    sys.exit(3)
if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
    sys.exit("no socket from LISTEN_FDS/LISTEN_PID")

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = (os.environ.get("GEN", "?") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = False
    block_on_close = True

srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)

def drain(*_):
    threading.Thread(target=srv.shutdown).start()
signal.signal(signal.SIGTERM, drain)

path = os.environ.get("NOTIFY_SOCKET")

def notify(msg):
    if not path:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect("\0" + path[1:] if path.startswith("@") else path)
    s.send(msg)
    s.close()

def reload(*_):  # an in-place reload, announced as systemd's notify-reload wants
    notify(b"RELOADING=1")
    threading.Timer(0.05, lambda: notify(b"READY=1")).start()
signal.signal(signal.SIGHUP, reload)

if os.environ.get("READY_AFTER"):  # a slow start: nothing served, nothing said
    threading.Event().wait(float(os.environ["READY_AFTER"]))
if os.environ.get("FAIL") != "never":
    notify(b"READY=1")
if os.environ.get("FAIL") == "after":  # ready, then dies a moment later (between requests: what
    def die():                         # it accepted it answers; the test is baton's rollback)
        srv.shutdown()
        srv.server_close()  # (joins the threads still answering)
        os._exit(1)
    threading.Timer(float(os.environ.get("AFTER", "0.3")), die).start()
srv.serve_forever()
sys.exit(0)
