import errno, os, select, socket, sys
port = int(sys.argv[1])
def request(s):
    s.setblocking(True)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return " ".join(data.decode().split())
        data += d
def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    assert s.connect_ex(("localhost", port)) == errno.EINPROGRESS
    return s
n = connect()
pid = os.fork()
if pid == 0:
    # Once the parent's outcome is there (its socket is writable), a connect of our own:
    # our copy of the table must not take our parent's report.
    assert select.select([], [n], [], 20)[1] == [n]
    c = connect()
    assert select.select([], [c], [], 20)[1] == [c]
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    print("child:", request(c), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
assert select.select([], [n], [], 20)[1] == [n]
assert n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
print("parent:", request(n))
