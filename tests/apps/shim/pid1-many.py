"""As PID 1 of its own PID namespace (nobody reaps for it), make N connections through
the shim, then count the zombies in the namespace: `pid=P ok=K zombies=Z`.

usage: pid1-many.py PORT N NAME"""
import os
import socket
import sys
import time

port, n, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ok = 0
for i in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % name.encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        if b"sni=" + name.encode() in data:
            ok += 1
    except OSError as e:
        print("connection", i, "failed:", e, file=sys.stderr)


def zombies():
    z = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        z += 1
            except OSError:
                pass
    return z


# The connections' processes end with them: give the last ones a moment (bounded).
deadline = time.monotonic() + 5
while zombies() and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
print("pid=%d ok=%d zombies=%d" % (os.getpid(), ok, zombies()))
