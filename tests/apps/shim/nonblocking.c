#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Wait for `ev` (POLLIN/POLLOUT) on s, with poll or with the epoll set ep (registered
   once right after connect, as libuv and asyncio do). */
static int wait_for(int s, int ep, int ev) {
    if (ep < 0) {
        struct pollfd p = { s, (short)ev, 0 };
        int r = poll(&p, 1, 20000);
        return r == 1 ? p.revents : -1;
    }
    struct epoll_event e = { .events = (ev == POLLIN ? EPOLLIN : EPOLLOUT), .data.fd = s };
    if (epoll_ctl(ep, EPOLL_CTL_MOD, s, &e) != 0) return -1;
    struct epoll_event got;
    int r = epoll_wait(ep, &got, 1, 20000);
    if (r != 1) return -1;
    return (got.events & EPOLLIN ? POLLIN : 0) | (got.events & EPOLLOUT ? POLLOUT : 0)
        | (got.events & EPOLLHUP ? POLLHUP : 0) | (got.events & EPOLLERR ? POLLERR : 0);
}

/* A non-blocking client: connect (EINPROGRESS), the socket unwritable until the connect
   is done, readiness, SO_ERROR, then the payload (stdin) sent with ECHO and the answer
   copied to stdout. argv: name port poll|epoll */
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int use_epoll = !strcmp(argv[3], "epoll");
    struct addrinfo h, *ai;
    memset(&h, 0, sizeof h);
    h.ai_family = AF_INET;
    h.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(argv[1], argv[2], &h, &ai) != 0) return 3;
    static char in[4 << 20];
    size_t len = 5, n;
    memcpy(in, "ECHO\n", 5);
    while ((n = fread(in + len, 1, sizeof in - len, stdin)) > 0) len += n;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = connect(s, ai->ai_addr, ai->ai_addrlen);
    if (r == 0 || errno != EINPROGRESS) { fprintf(stderr, "connect: %s\n", strerror(errno)); return 4; }
    int ep = -1;
    if (use_epoll) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = { .events = EPOLLOUT, .data.fd = s };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &e) != 0) return 5;
    }
    /* As a connecting TCP socket: nothing to write to yet, a second connect EALREADY. */
    if (send(s, "x", 1, MSG_NOSIGNAL) != -1 || errno != EAGAIN) { fprintf(stderr, "early send: %s\n", strerror(errno)); return 6; }
    if (connect(s, ai->ai_addr, ai->ai_addrlen) != -1 || errno != EALREADY) { fprintf(stderr, "second connect: %s\n", strerror(errno)); return 7; }
    int ev = wait_for(s, ep, POLLOUT);
    if (ev < 0 || !(ev & POLLOUT)) { fprintf(stderr, "never writable (%d)\n", ev); return 8; }
    int err = -1;
    socklen_t el = sizeof err;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) { fprintf(stderr, "SO_ERROR %d\n", err); return 9; }
    fprintf(stderr, "connected: EINPROGRESS, EAGAIN, EALREADY, writable, SO_ERROR 0\n");
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(s, in + off, len - off, MSG_NOSIGNAL);
        if (w > 0) { off += w; continue; }
        if (w < 0 && errno != EAGAIN) { perror("send"); return 10; }
        if (wait_for(s, ep, POLLOUT) < 0) return 11;
    }
    shutdown(s, SHUT_WR);
    for (;;) {
        static char buf[65536];
        ssize_t got = recv(s, buf, sizeof buf, 0);
        if (got > 0) { fwrite(buf, 1, got, stdout); continue; }
        if (got == 0) break;
        if (errno != EAGAIN) { perror("recv"); return 12; }
        if (wait_for(s, ep, POLLIN) < 0) return 13;
    }
    fflush(stdout);
    return 0;
}
