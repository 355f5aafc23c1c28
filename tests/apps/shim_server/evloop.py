# A single-threaded epoll daemon, as event-loop servers are written: it accepts with
# accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) itself (through ctypes, so the flags are its own),
# and answers each line: INFO (what it sees of the connection, as JSON), else the line in
# upper case. It logs `accepted|data|eof IP:PORT` on stderr: what reached its reads.
# argv: port.
import ctypes, fcntl, json, os, select, socket, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.accept4.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
session = getattr(libc, "autossl_session", None)


def log(*a):
    # One write per line: print() writes its parts separately, and tlsd's lines on the
    # same stderr would land between them.
    sys.stderr.write(" ".join(str(x) for x in a) + "\n")
    sys.stderr.flush()


def desc_of(fd):
    if session is None:
        return {"error": "no autossl_session"}
    buf = ctypes.create_string_buffer(4096)
    n = session(fd, buf, 4096)
    if n < 0:
        return {"errno": ctypes.get_errno()}
    out = {}
    for e in buf.raw[:n].split(b"\0"):
        if b"=" in e:
            k, v = e.split(b"=", 1)
            out[k.decode()] = v.decode()
    return out


L = socket.socket()
L.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
L.bind(("127.0.0.1", int(sys.argv[1])))
L.listen(128)
L.setblocking(False)
ep = select.epoll()
ep.register(L.fileno(), select.EPOLLIN)
conns = {}
sa = ctypes.create_string_buffer(128)
log("ready")
while True:
    for fd, ev in ep.poll(1):
        if fd == L.fileno():
            for _ in range(64):
                ln = ctypes.c_uint32(128)
                c = libc.accept4(L.fileno(), sa, ctypes.byref(ln),
                                 socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                if c < 0:
                    break
                ip = socket.inet_ntoa(sa.raw[4:8])
                port = int.from_bytes(sa.raw[2:4], "big")
                who = "%s:%d" % (ip, port)
                info = {
                    "accepted": who,
                    "nonblock": bool(fcntl.fcntl(c, fcntl.F_GETFL) & os.O_NONBLOCK),
                    "cloexec": bool(fcntl.fcntl(c, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
                }
                # socket(fileno=) asks the kernel (getsockname, SO_DOMAIN) what it is.
                s = socket.socket(fileno=c)
                conns[c] = [s, b"", info, who]
                ep.register(c, select.EPOLLIN)
                log("accepted", who)
            continue
        s, buf, info, who = conns[fd]
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            log("eof", who)
            ep.unregister(fd)
            s.close()
            del conns[fd]
            continue
        log("data", who)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip() == b"INFO":
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                r = dict(info)
                r["peer"] = "%s:%d" % s.getpeername()[:2]
                r["sock"] = "%s:%d" % s.getsockname()[:2]
                r["family"] = int(s.family)
                r["nodelay"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                r["desc"] = desc_of(fd)
                reply = json.dumps(r).encode()
            else:
                reply = line.upper()
            s.setblocking(True)
            s.sendall(reply + b"\n")
            s.setblocking(False)
        conns[fd][1] = buf
