import os, socket, sys, time
name, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((name, port), timeout=30)
# The first bytes are judged (not an HTTP request: they pass), which lets tlsc drop the
# program's stderr; the rest comes later.
s.sendall(b"ECHO\n")
with open(os.path.join(d, "ready.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(d, "ready.tmp"), os.path.join(d, "ready"))
for _ in range(1200):
    if os.path.exists(os.path.join(d, "go")):
        break
    time.sleep(0.05)
s.sendall(b"held")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    x = s.recv(65536)
    if not x:
        break
    data += x
sys.stdout.write(data.decode())
