#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t chld = 0;
static void on_chld(int s) { (void)s; chld++; }

/* This process's children in /proc: all of them, and the zombies. */
static void children(int *all, int *zombies) {
    *all = 0; *zombies = 0;
    DIR *d = opendir("/proc");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[300], buf[512];
        snprintf(p, sizeof p, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *c = strrchr(buf, ')');
        char st; int ppid;
        if (!c || sscanf(c + 1, " %c %d", &st, &ppid) != 2) continue;
        if (ppid != getpid()) continue;
        (*all)++;
        if (st == 'Z') (*zombies)++;
    }
    closedir(d);
}

static int fetch(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { close(s); return 0; }
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    if (write(s, req, strlen(req)) < 0) { close(s); return 0; }
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(s, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    buf[n] = 0;
    close(s);
    return strstr(buf, "proto=TLSv1.3") != NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int port = atoi(argv[1]), count = atoi(argv[2]);
    if (argc > 3 && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    int p[2];
    if (pipe(p) != 0) return 4;
    pid_t mine = fork();
    if (mine == 0) { char c; close(p[1]); while (read(p[0], &c, 1) < 0 && errno == EINTR) {} _exit(7); }
    close(p[0]);
    int ok = 0, seen = 0, maxz = 0, all, z;
    for (int i = 0; i < count; i++) {
        ok += fetch(port);
        children(&all, &z);
        if (z > maxz) maxz = z;
        int st;
        if (waitpid(-1, &st, WNOHANG) != 0) seen++;
    }
    /* The last helpers end with their connections; one more connect (not upgraded: port 1)
       lets the library reap what is left. */
    for (int i = 0; i < 100; i++) {
        children(&all, &z);
        if (all - z <= 1) break;
        struct timespec t = { 0, 50000000 };
        nanosleep(&t, NULL);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(1);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(s, (struct sockaddr *)&a, sizeof a);
    close(s);
    int endall, endz;
    children(&endall, &endz);
    int chld_before = chld;
    if (write(p[1], "x", 1) != 1) return 5;
    int st;
    pid_t w = wait(&st);
    int own = w == mine && WIFEXITED(st) && WEXITSTATUS(st) == 7;
    pid_t w2 = wait(&st);
    int echild = w2 < 0 && errno == ECHILD;
    printf("pid=%d ok=%d seen=%d maxz=%d endz=%d endall=%d chld_before=%d own=%d echild=%d\n",
           getpid(), ok, seen, maxz, endz, endall, chld_before, own, echild);
    return 0;
}
