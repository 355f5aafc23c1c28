#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { printf("FAILED: %s (line %d, errno %d)\n", #c, __LINE__, errno); return 1; } } while (0)

int main(int argc, char **argv) {
    int port = atoi(argv[2]);
    struct hostent *h = gethostbyname(argv[1]);
    CHECK(h && h->h_addrtype == AF_INET);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    memcpy(&sin->sin_addr, h->h_addr_list[0], 4);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct timeval rcv = {7, 0}, snd = {9, 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof rcv) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof snd) == 0);
    CHECK(fcntl(fd, F_SETOWN, getpid()) == 0);
    CHECK(fcntl(fd, F_SETSIG, SIGUSR1) == 0);
    /* The length of a sockaddr_storage, as some programs pass. */
    CHECK(connect(fd, (struct sockaddr *)&ss, sizeof ss) == 0);

    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    CHECK(getpeername(fd, (struct sockaddr *)&peer, &len) == 0);
    CHECK(len == sizeof(struct sockaddr_in));
    CHECK(((struct sockaddr_in *)&peer)->sin_port == htons(port));
    /* Truncation: a 4-byte buffer gets 4 bytes and the full length. */
    char small[4];
    len = sizeof small;
    CHECK(getpeername(fd, (struct sockaddr *)small, &len) == 0);
    CHECK(len == sizeof(struct sockaddr_in));
    struct timeval tv;
    len = sizeof tv;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0 && tv.tv_sec == 7);
    len = sizeof tv;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0 && tv.tv_sec == 9);
    CHECK(fcntl(fd, F_GETOWN) == getpid());
    CHECK(fcntl(fd, F_GETSIG) == SIGUSR1);
    struct tcp_info ti;
    len = sizeof ti;
    CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0);
    int one = 1, v = 0;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    len = sizeof v;
    CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v == 1);
    CHECK(connect(fd, (struct sockaddr *)&ss, sizeof ss) == -1 && errno == EISCONN);

    const char *req = "GET / HTTP/1.0\r\n\r\n";
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    char buf[4096];
    ssize_t n, total = 0;
    while ((n = read(fd, buf + total, sizeof buf - 1 - total)) > 0)
        total += n;
    buf[total] = 0;
    close(fd);
    fputs(buf, stdout);
    return 0;
}
