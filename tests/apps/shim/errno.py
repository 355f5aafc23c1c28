import errno, socket, sys, time
t = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60).close()
    print("connected")
except OSError as e:
    print("errno=%s after=%.1f" % (errno.errorcode.get(e.errno, e.errno), time.monotonic() - t))
