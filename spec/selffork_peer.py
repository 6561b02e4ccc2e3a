# selffork_peer.py — a server that upgrades itself the tableflip/unicorn
# way: on SIGUSR2 it forks its successor, which says MAINPID=<its pid> on
# NOTIFY_SOCKET, and the old process exits. Baton must follow the new one.
# MODE (environment) bends it for the specs: "setsid" (the successor leaves
# the process group), "outside" (it names process OUTSIDE, not of its tree,
# and exits), "diefirst" (the successor names itself, then dies before the
# old process exits), "startfork" (it forks its successor at once, while
# starting, as a daemon does; the successor says only MAINPID=, then
# creates READY_FILE: readiness by a check, not by READY=1).
import os, signal, socket, sys, time

path = os.environ["NOTIFY_SOCKET"]
addr = "\0" + path[1:] if path.startswith("@") else path

def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(addr)
    s.send(msg)
    s.close()

MODE = os.environ.get("MODE", "")

def upgrade(*_):
    if MODE == "outside":
        notify(b"MAINPID=%d" % int(os.environ["OUTSIDE"]))
        os._exit(0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if MODE == "setsid":
            os.setsid()
        notify(b"MAINPID=%d\nREADY=1" % os.getpid())
        os.write(w, b"x")  # (told baton: the old one may go)
        os.close(w)
        if MODE == "diefirst":
            os._exit(7)
        return  # the successor carries on
    os.close(w)
    os.read(r, 1)
    if MODE == "diefirst":
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # (dead, a zombie, before the old one exits)
    os._exit(0)

signal.signal(signal.SIGUSR2, upgrade)
if MODE == "startfork":
    r, w = os.pipe()
    if os.fork() != 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    parent = os.getppid()
    notify(b"MAINPID=%d" % os.getpid())
    os.write(w, b"x")
    os.close(w)
    while os.getppid() == parent:  # (until the old one is gone: reparented to baton, the subreaper)
        time.sleep(0.01)
    open(os.environ["READY_FILE"], "w").close()
else:
    notify(b"READY=1")
while True:
    time.sleep(1000)
