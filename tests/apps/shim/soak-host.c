#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *name, *port;
static long warmup, total, threads;
static double limit;
static atomic_long next_i, done_ok, failures, sigchld;
static pthread_barrier_t warm_done, sampled;
static pthread_mutex_t first_lock = PTHREAD_MUTEX_INITIALIZER;
static char first[512];
static struct timespec t0;

static double elapsed(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
}

static void fail(long i, const char *what, int err) {
    atomic_fetch_add(&failures, 1);
    pthread_mutex_lock(&first_lock);
    if (!first[0])
        snprintf(first, sizeof first, "connection %ld: %s (errno %d %s)", i, what, err,
                 err ? strerror(err) : "-");
    pthread_mutex_unlock(&first_lock);
}

static void one(long i) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0 || !res) {
        fail(i, gai_strerror(rc), 0);
        return;
    }
    int nonblocking = i % 2;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        fail(i, "socket", errno);
        freeaddrinfo(res);
        return;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int r = connect(fd, res->ai_addr, res->ai_addrlen);
    if (nonblocking && r != 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int soerr = -1;
        socklen_t sl = sizeof soerr;
        if (poll(&p, 1, 30000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0)
            errno = soerr;
        else
            errno = ETIMEDOUT;
        r = soerr == 0 ? 0 : -1;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    } else if (nonblocking) {
        r = -1;
        if (errno == 0)
            errno = EINVAL;
    }
    if (r != 0) {
        fail(i, nonblocking ? "non-blocking connect" : "connect", errno);
        freeaddrinfo(res);
        close(fd);
        return;
    }
    freeaddrinfo(res);
    char req[64], want[128], got[256];
    int len = snprintf(req, sizeof req, "n=%ld\n", i);
    snprintf(want, sizeof want, "n=%ld proto=TLSv1.3\n", i);
    if (write(fd, req, len) != len) {
        fail(i, "write", errno);
        close(fd);
        return;
    }
    size_t have = 0;
    ssize_t n;
    while (have < sizeof got - 1 && (n = read(fd, got + have, sizeof got - 1 - have)) > 0)
        have += n;
    int err = errno;
    got[have] = 0;
    if (n < 0) {
        fail(i, "read", err);
    } else if (strcmp(got, want) != 0) {
        char what[300];
        snprintf(what, sizeof what, "reply %.200s", got);
        fail(i, what, 0);
    } else {
        atomic_fetch_add(&done_ok, 1);
    }
    if (close(fd) != 0)
        fail(i, "close", errno);
}

static void run_until(long end) {
    for (;;) {
        long i = atomic_fetch_add(&next_i, 1);
        if (i >= end) {
            atomic_fetch_sub(&next_i, 1);
            return;
        }
        if (elapsed() > limit) {
            fail(i, "time limit reached", 0);
            continue;
        }
        one(i);
    }
}

static void *worker(void *arg) {
    (void)arg;
    run_until(warmup);
    pthread_barrier_wait(&warm_done);
    pthread_barrier_wait(&sampled);
    run_until(total);
    return NULL;
}

static long fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    fclose(f);
    return v;
}

static long children(void) {
    long n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[300];
        snprintf(p, sizeof p, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        long pid;
        while (fscanf(f, "%ld", &pid) == 1)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

static void on_chld(int s) {
    (void)s;
    atomic_fetch_add(&sigchld, 1);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: host NAME PORT WARMUP TOTAL THREADS SECONDS\n");
        return 2;
    }
    name = argv[1];
    port = argv[2];
    warmup = atol(argv[3]);
    total = atol(argv[4]);
    threads = atol(argv[5]);
    limit = atof(argv[6]);
    if (warmup > total || threads < 1 || threads > 64)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_barrier_init(&warm_done, NULL, threads + 1);
    pthread_barrier_init(&sampled, NULL, threads + 1);
    pthread_t t[64];
    for (long k = 0; k < threads; k++)
        if (pthread_create(&t[k], NULL, worker, NULL) != 0)
            return 3;
    pthread_barrier_wait(&warm_done);
    long fd0 = fds(), rss0 = rss_kib();
    double w = elapsed();
    pthread_barrier_wait(&sampled);
    for (long k = 0; k < threads; k++)
        pthread_join(t[k], NULL);
    double s = elapsed() - w;
    long fd1 = fds(), rss1 = rss_kib(), kids = children();
    errno = 0;
    pid_t p = waitpid(-1, NULL, WNOHANG);
    const char *wait = p < 0 && errno == ECHILD ? "none" : "a-child";
    printf("ok=%ld failures=%ld fds=%ld,%ld rss=%ld,%ld children=%ld sigchld=%ld wait=%s "
           "soak_seconds=%.1f\n",
           (long)atomic_load(&done_ok), (long)atomic_load(&failures), fd0, fd1, rss0, rss1,
           kids, (long)atomic_load(&sigchld), wait, s);
    if (first[0])
        printf("first failure: %s\n", first);
    return 0;
}
