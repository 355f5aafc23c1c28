import errno, fcntl, os, select, signal, socket, sys
name, port = sys.argv[1], int(sys.argv[2])
chld = [0]
signal.signal(signal.SIGCHLD, lambda *a: chld.__setitem__(0, chld[0] + 1))
def request(s, host=None):
    s.sendall(b"GET / HTTP/1.0\r\n" + (b"Host: %s\r\n" % host.encode() if host else b"") + b"\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data.decode()
        data += d
def show(what, text):
    print(what, " ".join(text.split()))
def nonblocking(fd):
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)

# By name, with a timeout (non-blocking underneath), close-on-exec.
s = socket.create_connection((name, port), timeout=30)
assert not os.get_inheritable(s.fileno()), "FD_CLOEXEC lost"
assert nonblocking(s.fileno()), "O_NONBLOCK lost"
peer = s.getpeername()
assert peer[1] == port and peer[0] in ("127.0.0.1", "::1"), peer
local = s.getsockname()
assert local[0] == peer[0] and local[1] not in (0, port), local
assert s.family in (socket.AF_INET, socket.AF_INET6)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == s.family
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
# The answers have the kernel's sizes (as a TCP socket of the family gives them), its
# errors, and TCP_INFO says established.
ref = socket.socket(s.family, socket.SOCK_STREAM)
for opt, size in ((socket.TCP_INFO, 512), (socket.TCP_MAXSEG, 4), (socket.TCP_CONGESTION, 16)):
    got, want = s.getsockopt(socket.IPPROTO_TCP, opt, size), ref.getsockopt(socket.IPPROTO_TCP, opt, size)
    assert len(got) == len(want), (opt, len(got), len(want))
assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)[0] == 1, "TCP_INFO: not established"
assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16) == ref.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
for bad in ((socket.IPPROTO_TCP, 9999, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, -1)):
    try:
        s.setsockopt(*bad)
        raise SystemExit("setsockopt%r succeeded" % (bad,))
    except OSError as e:
        try:
            ref.setsockopt(*bad)
            raise SystemExit("the kernel took setsockopt%r" % (bad,))
        except OSError as k:
            assert e.errno == k.errno, (bad, e, k)
ref.close()
try:
    s.connect(peer[:2])
    raise SystemExit("a second connect succeeded")
except OSError as e:
    assert e.errno == errno.EISCONN, e
show("named:", request(s))
s.close()

# By address on a blocking, inheritable socket: both flags as they were.
b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
os.set_inheritable(b.fileno(), True)
b.connect(("127.0.0.1", port))
assert os.get_inheritable(b.fileno()), "FD_CLOEXEC appeared"
assert not nonblocking(b.fileno()), "O_NONBLOCK appeared"
assert b.getpeername() == ("127.0.0.1", port), b.getpeername()
show("blocking:", request(b))
b.close()

# Non-blocking connect: EINPROGRESS, as the kernel; a second connect EALREADY while the
# handshake goes on (tlsc has not even started yet); writable once it is done, then
# SO_ERROR 0 and a connect EISCONN.
n = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
n.setblocking(False)
assert n.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
assert n.connect_ex(("127.0.0.1", port)) == errno.EALREADY
assert nonblocking(n.fileno())
assert select.select([], [n], [], 20)[1] == [n], "never writable"
assert n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
assert n.connect_ex(("127.0.0.1", port)) == errno.EISCONN
n.setblocking(True)
show("nonblocking:", request(n))
n.close()

# An AF_INET6 socket to a v4-mapped address (as Java does).
m = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
m.connect(("::ffff:127.0.0.1", port))
assert m.getpeername()[:2] == ("::ffff:127.0.0.1", port), m.getpeername()
show("mapped:", request(m))
m.close()

# gethostbyname_r (CPython's gethostbyname_ex), then a connect by address: the address
# now has two names, and the request's Host tells which.
h = socket.gethostbyname_ex(sys.argv[3])
g = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
g.connect((h[2][0], port))
show("byname:", request(g, sys.argv[3]))
g.close()

# TCP Fast Open: sendto with MSG_FASTOPEN connects (upgraded) and sends.
f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
f.sendto(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % name.encode(), socket.MSG_FASTOPEN, ("127.0.0.1", port))
data = b""
while True:
    d = f.recv(65536)
    if not d:
        break
    data += d
show("fastopen:", data.decode())
f.close()

# UDP to the listed port is untouched.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("127.0.0.1", port))
assert u.getsockname()[0] == "127.0.0.1"
assert u.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM
u.send(b"x")
u.close()

try:
    os.waitpid(-1, os.WNOHANG)
    waited = "a child"
except ChildProcessError:
    waited = "none"
print("sigchld=%d wait=%s" % (chld[0], waited))
