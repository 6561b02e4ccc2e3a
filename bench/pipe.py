# pipe.py — Python's side of the pipeline capture benchmark: a Popen chain
# head -c SIZE /dev/zero | cat, read with a read(65536) loop, discarded.
# Prints "<bytes> <seconds>".
import subprocess, sys, time
size = sys.argv[1] if len(sys.argv) > 1 else "1G"
t = time.monotonic()
a = subprocess.Popen(["head", "-c", size, "/dev/zero"], stdout=subprocess.PIPE)
b = subprocess.Popen(["cat"], stdin=a.stdout, stdout=subprocess.PIPE)
a.stdout.close()
n = 0
while True:
    chunk = b.stdout.read(65536)
    if not chunk:
        break
    n += len(chunk)
b.wait()
a.wait()
print(n, "%.6f" % (time.monotonic() - t))
