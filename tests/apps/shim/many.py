import os, signal, socket, sys, threading
name, port, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chld = [0]
signal.signal(signal.SIGCHLD, lambda *a: chld.__setitem__(0, chld[0] + 1))
def fds():
    return sorted(os.listdir("/proc/self/fd"), key=int)
def one():
    s = socket.create_connection((name, port), timeout=60)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    return b"proto=TLSv1.3" in data
before = fds()
seq = sum(1 for _ in range(n) if one())
res = []
def worker():
    try:
        res.append(one())
    except Exception as e:
        res.append(repr(e))
ts = [threading.Thread(target=worker) for _ in range(t)]
for x in ts: x.start()
for x in ts: x.join(120)
par = sum(1 for r in res if r is True)
after = fds()
children = []
for task in os.listdir("/proc/self/task"):
    children += open("/proc/self/task/%s/children" % task).read().split()
try:
    os.waitpid(-1, os.WNOHANG)
    waited = "a child"
except ChildProcessError:
    waited = "none"
print("seq=%d/%d par=%d/%d fds_same=%s children=%d sigchld=%d wait=%s errors=%r" % (
    seq, n, par, t, before == after, len(children), chld[0], waited,
    [r for r in res if r is not True][:3]))
