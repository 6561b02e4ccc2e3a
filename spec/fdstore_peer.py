# fdstore_peer.py — a service that parks state with baton (systemd's fd
# store: FDSTORE=1, FDNAME=, the fd over SCM_RIGHTS) and finds it again in
# its next process as LISTEN_FDS / LISTEN_FDNAMES. Prints what it found.
import os, socket, sys

path = os.environ["NOTIFY_SOCKET"]
addr = "\0" + path[1:] if path.startswith("@") else path
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(addr)
n = int(os.environ.get("LISTEN_FDS", "0"))
names = os.environ.get("LISTEN_FDNAMES", "")
if n == 0:
    fd = os.memfd_create("state")
    os.write(fd, b"counter=1")
    name = os.environ.get("FDNAME", "state").encode()
    socket.send_fds(s, [b"FDSTORE=1\nFDNAME=" + name], [fd])
    print("parked", flush=True)
else:
    os.lseek(3, 0, os.SEEK_SET)
    print("found", names, os.read(3, 100).decode(), flush=True)
s.send(b"READY=1")
import time
while True:
    time.sleep(1000)
