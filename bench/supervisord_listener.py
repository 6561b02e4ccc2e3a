# supervisord_listener.py — a supervisord event listener for the latency
# benchmark: it stamps each event it is sent with time.monotonic() (the
# CLOCK_MONOTONIC that baton.now() reads too) as soon as the header line
# arrives, and appends "<seconds> <eventname> <processname> <pid|->" to
# the file named by its argument, one line each, flushed. The driver
# (bench/run.lua) takes the kill time and reads the file.
# Protocol: supervisor's docs, "Event Listener Notification Protocol".
import sys
import time

out = open(sys.argv[1], "a", buffering=1)
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
while True:
    stdout.write(b"READY\n")
    stdout.flush()
    header = stdin.readline()
    t = time.monotonic()
    if not header:
        break
    h = dict(w.split(b":", 1) for w in header.split())
    payload = stdin.read(int(h[b"len"]))
    first = payload.split(b"\n", 1)[0]  # (PROCESS_COMMUNICATION events carry data after it)
    p = dict(w.split(b":", 1) for w in first.split() if b":" in w)
    out.write("%.9f %s %s %s\n" % (t, h[b"eventname"].decode(), p.get(b"processname", b"-").decode(),
                                  p.get(b"pid", b"-").decode()))
    stdout.write(b"RESULT 2\nOK")
    stdout.flush()
