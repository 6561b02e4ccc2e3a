# spawn.py — the Python peer for the spawn benchmark: N sequential
# subprocess.run of a program. Prints "<N> <seconds>".
import subprocess, sys, time
n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
prog = sys.argv[2] if len(sys.argv) > 2 else "/bin/true"
t = time.monotonic()
for _ in range(n):
    subprocess.run([prog], check=True)
print(n, "%.6f" % (time.monotonic() - t))
