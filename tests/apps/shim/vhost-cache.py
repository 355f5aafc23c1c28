#!/usr/bin/env python3
"""A client with its own DNS cache, as crawlers and connection pools have: it resolves
names, then connects to addresses it remembers, and prints what answered each request
(`TAG ANSWER` or `TAG ERR ...`, one line each).

usage: vhost-cache PORT SCENARIO
  later      a.test resolved and fetched; b.test resolved (same address); a.test's
             cached address fetched again with Host: a.test
  forgotten  a.test resolved; 600 other names; b.test; a.test's address, Host: a.test
  threads    a.test resolved; 10 threads resolve b.test and 200 other names at once
             while a.test's address is fetched 10 times, Host: a.test
  mismatch   only a.test resolved; its address fetched with Host: b.test
  plain      a.test and b.test resolved; a.test's address sent a non-HTTP line
"""
import socket
import sys
import threading

port = int(sys.argv[1])
scenario = sys.argv[2]


def resolve(name):
    return socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]


# One line per answer, whole: print() writes its parts separately, and the threads'
# lines would interleave.
said = threading.Lock()


def say(tag, text):
    with said:
        sys.stdout.write("%s %s\n" % (tag, text))
        sys.stdout.flush()


def fetch(tag, addr, host=None, raw=None):
    # A numeric address and no lookup: connect() alone, as from a cache.
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(addr)
        if raw is None:
            raw = "GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host, port)
        s.sendall(raw.encode())
        data = b""
        while len(data) < 1 << 16:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        text = " ".join(data.decode("latin-1").split())
        say(tag, text if text else "ERR closed")
    except Exception as e:
        say(tag, "ERR %r" % (e,))


def others(count):
    for i in range(count):
        resolve("n%d.test" % i)


if scenario == "later":
    a = resolve("a.test")
    fetch(0, a, "a.test")
    resolve("b.test")
    fetch(1, a, "a.test")
elif scenario == "forgotten":
    a = resolve("a.test")
    others(600)
    resolve("b.test")
    fetch(0, a, "a.test")
elif scenario == "threads":
    a = resolve("a.test")
    work = [threading.Thread(target=resolve, args=("b.test",))]
    # 200 other names: fewer than the shim remembers, so a.test stays known.
    work += [threading.Thread(target=others, args=(200,)) for _ in range(9)]
    work += [threading.Thread(target=fetch, args=(i, a, "a.test")) for i in range(10)]
    for t in work:
        t.start()
    for t in work:
        t.join()
elif scenario == "mismatch":
    a = resolve("a.test")
    fetch(0, a, "b.test")
elif scenario == "plain":
    a = resolve("a.test")
    resolve("b.test")
    fetch(0, a, raw="PING\r\n")
else:
    sys.exit("unknown scenario " + scenario)
