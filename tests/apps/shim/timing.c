#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void on_alarm(int s) { (void)s; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* A listener on 127.0.0.1:port whose queue is full: further SYNs are dropped, as by a
   blackhole. Filled with raw connect system calls, which the library does not see. */
static void blackhole(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 0) != 0) { perror("listen"); exit(3); }
    for (int i = 0; i < 4; i++) {
        int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        syscall(SYS_connect, f, (struct sockaddr *)&a, sizeof a);
    }
    struct timespec t = { 0, 200000000 };
    nanosleep(&t, NULL);
}

/* One blocking connect to 127.0.0.1:port, in one of three ways ("bh-": to a blackhole). */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int port = atoi(argv[1]);
    const char *how = argv[2];
    if (!strncmp(how, "bh-", 3)) {
        blackhole(port);
        how += 3;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    if (!strcmp(how, "alarm")) {
        sigaction(SIGALRM, &sa, NULL);
        alarm(2);
    } else if (!strcmp(how, "restart")) {
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        alarm(1);
    } else if (!strcmp(how, "sndtimeo")) {
        struct timeval tv = { 2, 0 };
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    double t = now();
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    printf("%s r=%d errno=%s after=%.1f\n", how, r, r ? strerror(e) : "0", now() - t);
    return 0;
}
