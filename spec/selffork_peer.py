# selffork_peer.py — a server that upgrades itself the tableflip/unicorn
# way: on SIGUSR2 it forks its successor, which says MAINPID=<its pid> on
# NOTIFY_SOCKET, and the old process exits. Baton must follow the new one.
import os, signal, socket, sys, time

path = os.environ["NOTIFY_SOCKET"]
addr = "\0" + path[1:] if path.startswith("@") else path

def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(addr)
    s.send(msg)
    s.close()

def upgrade(*_):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        notify(b"MAINPID=%d\nREADY=1" % os.getpid())
        os.write(w, b"x")  # (told baton: the old one may go)
        os.close(w)
        return  # the successor carries on
    os.close(w)
    os.read(r, 1)
    os._exit(0)

signal.signal(signal.SIGUSR2, upgrade)
notify(b"READY=1")
while True:
    time.sleep(1000)
