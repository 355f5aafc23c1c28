# A forking server (socketserver.ForkingTCPServer: accept in the parent, the handler in a
# child per connection). The handler reads one line, answers with what it sees
# (getpeername, getsockname, the session through autossl_session, its pid) and the line,
# half-closes (shutdown SHUT_WR), then reads what the client still sends and logs it on
# stderr as `after IP:PORT <bytes>`. argv: port.
import ctypes, json, os, socket, socketserver, sys

libc = ctypes.CDLL(None, use_errno=True)


class H(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                return
            line += b
        buf = ctypes.create_string_buffer(4096)
        n = libc.autossl_session(s.fileno(), buf, 4096)
        desc = buf.raw[:n].split(b"\0") if n > 0 else []
        r = {
            "peer": "%s:%d" % s.getpeername()[:2],
            "sock": "%s:%d" % s.getsockname()[:2],
            "pid": os.getpid(),
            "parent": os.getppid(),
            "desc": [e.decode() for e in desc if e],
            "line": line.decode().strip(),
        }
        s.sendall(json.dumps(r).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while len(rest) < 1 << 20:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        sys.stderr.write("after %s:%d %s\n" % (self.client_address[0],
                                              self.client_address[1], rest.decode()))
        sys.stderr.flush()


socketserver.ForkingTCPServer.allow_reuse_address = True
srv = socketserver.ForkingTCPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", file=sys.stderr, flush=True)
srv.serve_forever()
