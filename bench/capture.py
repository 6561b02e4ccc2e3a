# capture.py — Python's side of the capture benchmark: Popen and a read loop
# that discards SIZE bytes of the child's stdout, written by head (8 KiB
# blocks) or dd (1 MiB blocks). Prints "<bytes> <seconds>".
import re, subprocess, sys, time
size = sys.argv[1] if len(sys.argv) > 1 else "1G"
writer = sys.argv[2] if len(sys.argv) > 2 else "head"
if writer == "dd":
    m = re.match(r"^(\d+)G$", size)
    argv = ["dd", "if=/dev/zero", "bs=1M", "count=%d" % ((int(m.group(1)) if m else 1) * 1024), "status=none"]
else:
    argv = ["head", "-c", size, "/dev/zero"]
t = time.monotonic()
p = subprocess.Popen(argv, stdout=subprocess.PIPE)
n = 0
while True:
    b = p.stdout.read(65536)
    if not b:
        break
    n += len(b)
p.wait()
print(n, "%.6f" % (time.monotonic() - t))
