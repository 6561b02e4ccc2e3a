# capture.py — Python's side of the capture benchmark: Popen and a read loop
# that discards SIZE bytes of the child's stdout. Prints "<bytes> <seconds>".
import subprocess, sys, time
size = sys.argv[1] if len(sys.argv) > 1 else "1G"
t = time.monotonic()
p = subprocess.Popen(["head", "-c", size, "/dev/zero"], stdout=subprocess.PIPE)
n = 0
while True:
    b = p.stdout.read(65536)
    if not b:
        break
    n += len(b)
p.wait()
print(n, "%.6f" % (time.monotonic() - t))
