import os, socket, sys
name, port = sys.argv[1], int(sys.argv[2])
def request(s):
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return " ".join(data.decode().split())
        data += d
# The child resolves, the parent connects to the address it was told (as lynx does).
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    ip = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    os.write(w, ip.encode())
    os._exit(0)
os.close(w)
ip = os.read(r, 100).decode()
os.waitpid(pid, 0)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((ip, port))
print("parent:", request(s))
s.close()
# The parent resolved (above, through its child's table entry) and a child connects.
pid = os.fork()
if pid == 0:
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.connect((ip, port))
    print("child:", request(c), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
