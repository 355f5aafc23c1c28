#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void get(const char *tag, const char *host, struct addrinfo *ai) {
    int s = socket(ai->ai_family, SOCK_STREAM, 0);
    if (connect(s, ai->ai_addr, ai->ai_addrlen) != 0) {
        printf("%s ERR connect: %s\n", tag, strerror(errno));
        close(s);
        return;
    }
    char req[256];
    snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host);
    if (write(s, req, strlen(req)) < 0) { printf("%s ERR write\n", tag); close(s); return; }
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(s, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    buf[n] = 0;
    for (size_t i = 0; i < n; i++) if (buf[i] == '\r' || buf[i] == '\n') buf[i] = ' ';
    printf("%s %s\n", tag, buf);
    close(s);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    /* GAI_WAIT */
    struct gaicb a = { .ar_name = "a.test", .ar_service = argv[1], .ar_request = &hints };
    struct gaicb *list[1] = { &a };
    if (getaddrinfo_a(GAI_WAIT, list, 1, NULL) != 0 || gai_error(&a) != 0) return 3;
    get("0", "a.test", a.ar_result);
    /* GAI_NOWAIT, then gai_suspend and gai_error */
    struct gaicb b = { .ar_name = "b.test", .ar_service = argv[1], .ar_request = &hints };
    list[0] = &b;
    if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL) != 0) return 4;
    for (int i = 0; i < 100 && gai_error(&b) == EAI_INPROGRESS; i++) {
        const struct gaicb *l[1] = { &b };
        struct timespec t = { 0, 100000000 };
        gai_suspend(l, 1, &t);
    }
    if (gai_error(&b) != 0) return 5;
    get("1", "b.test", b.ar_result);
    /* a.test's address again with no new lookup: only its request's Host tells. */
    get("2", "a.test", a.ar_result);
    return 0;
}
