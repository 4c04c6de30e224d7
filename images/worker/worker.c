/*
 * worker: the lab's fast, buggy C worker.
 *
 * Turns each input line n into "n,n*n". A negative reading is a simulated
 * hardware fault ("ERROR: Corrupted data n"); the bug trigger (999 by default)
 * is a real segfault, the software bug the lab studies.
 *
 * Modes:
 *   stdin/stdout (default)  the exercise's hardcore_worker contract.
 *   --listen HOST:PORT      the same loop over TCP, one response line per
 *                           request line, results and errors alike.
 *
 * It holds an flock on its lock file for its whole life, cleans the file on
 * graceful exit and on fatal signals (async-signal-safe calls only), and beats
 * to a file and/or a UDP peer from its main loop, so that an observer can tell
 * "alive and working" from "alive but stuck" from "gone".
 *
 * Helpers return errors; only main() exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* sysexits.h values, spelled out so the codes are part of this file's contract. */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 64,
    EXIT_SOFTWARE = 70,
    EXIT_OSERR = 71,
    EXIT_IOERR = 74,
    EXIT_LOCKED = 75,
};

/* A valid number has a handful of characters; a line of this length or more
 * cannot be one (short of a megabyte of padding), so it is rejected, always,
 * without keeping it all in memory. */
#define MAX_LINE (1u << 20)
#define READ_CHUNK (64u * 1024u)
#define OUT_FLUSH_AT (60u * 1024u)
#define OUT_CAP (64u * 1024u + 256u)
#define SHOW_MAX 64
/* Largest n whose square fits in int64_t: floor(sqrt(INT64_MAX)). */
#define SQUARE_MAX INT64_C(3037000499)
#define LOCK_RETRY_MS 100

/* ------------------------------------------------------------------------ */
/* Line parser (pure; the fuzz target drives it directly).                  */

enum parse_result { PARSE_OK, PARSE_MALFORMED, PARSE_RANGE };

static bool is_blank(unsigned char c) { return c == ' ' || c == '\t'; }

/*
 * Grammar: blanks* [+-]? digit+ blanks* CR?   (the newline already removed)
 * On PARSE_OK *out holds the value. PARSE_RANGE: well-formed but beyond
 * int64_t. A negative value is PARSE_OK; the caller decides what it means.
 */
static enum parse_result parse_line(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    while (i < len && is_blank((unsigned char)s[i]))
        i++;
    bool neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    size_t digits_at = i;
    uint64_t v = 0;
    bool overflow = false;
    /* Accumulate as a negative-safe magnitude: up to 2^63 for INT64_MIN. */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (!overflow) {
            if (v > (limit - d) / 10u)
                overflow = true;
            else
                v = v * 10u + d;
        }
        i++;
    }
    if (i == digits_at)
        return PARSE_MALFORMED;
    while (i < len && is_blank((unsigned char)s[i]))
        i++;
    if (i != len)
        return PARSE_MALFORMED;
    if (overflow)
        return PARSE_RANGE;
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return PARSE_OK;
}

/* Writes s (len bytes) escaped into dst, at most SHOW_MAX visible chars,
 * "..." appended when cut. Returns the length written (dst needs 4*SHOW_MAX+4). */
static size_t escape_for_log(char *dst, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, shown = 0;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[4];
        size_t n;
        if (c == '\\') {
            tmp[0] = '\\'; tmp[1] = '\\'; n = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[0] = (char)c; n = 1;
        } else if (c == '\t') {
            tmp[0] = '\\'; tmp[1] = 't'; n = 2;
        } else if (c == '\r') {
            tmp[0] = '\\'; tmp[1] = 'r'; n = 2;
        } else {
            tmp[0] = '\\'; tmp[1] = 'x'; tmp[2] = hex[c >> 4]; tmp[3] = hex[c & 15]; n = 4;
        }
        if (shown + n > SHOW_MAX) {
            memcpy(dst + o, "...", 3);
            return o + 3;
        }
        memcpy(dst + o, tmp, n);
        o += n;
        shown += n;
    }
    return o;
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal of u into dst; returns length. Two digits per division: this is
 * the hot path, and snprintf would cost more than everything else. */
static size_t fmt_u64(char *dst, uint64_t u)
{
    char tmp[24];
    size_t n = sizeof tmp;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100u) * 2u;
        u /= 100u;
        tmp[--n] = DIGIT_PAIRS[r + 1];
        tmp[--n] = DIGIT_PAIRS[r];
    }
    if (u >= 10) {
        tmp[--n] = DIGIT_PAIRS[u * 2 + 1];
        tmp[--n] = DIGIT_PAIRS[u * 2];
    } else {
        tmp[--n] = (char)('0' + u);
    }
    memcpy(dst, tmp + n, sizeof tmp - n);
    return sizeof tmp - n;
}

static size_t fmt_i64(char *dst, int64_t v)
{
    if (v >= 0)
        return fmt_u64(dst, (uint64_t)v);
    dst[0] = '-';
    return 1 + fmt_u64(dst + 1, (uint64_t)0 - (uint64_t)v);
}

/* ------------------------------------------------------------------------ */
/* Process-wide state. Signal handlers read only the sig_atomic_t flags and  */
/* the fixed lock path buffer.                                              */

static volatile sig_atomic_t g_stop;
/* The mask that wait_io installs while it waits: SIGTERM and SIGINT are
 * blocked everywhere else, so a stop can only land inside the wait. Checking
 * g_stop and then calling poll() would leave a window in which a stop sets
 * the flag just before an unbounded wait and is never seen. */
static sigset_t g_wait_mask;
static volatile sig_atomic_t g_own_lock;
static char g_lock_path[PATH_MAX];

struct config {
    const char *listen;
    const char *lock_path;
    bool bug_enabled;
    int64_t bug_trigger;
    bool naive;
    bool flush_every_line;
    bool serve_forever;
    long heartbeat_ms;
    const char *heartbeat_file;
    const char *heartbeat_udp;
};

static char g_incarnation[17];

static void logf_(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(const char *level, const char *fmt, ...)
{
    char msg[1024];
    int off = snprintf(msg, sizeof msg, "worker[%ld]: %s: ", (long)getpid(), level);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + off, sizeof msg - (size_t)off - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof msg - 2)
        len = sizeof msg - 2;
    msg[len++] = '\n';
    /* One write per line so concurrent log lines never interleave. */
    ssize_t w = write(STDERR_FILENO, msg, len);
    (void)w;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_fatal(int sig)
{
    /* Async-signal-safe only: unlink, write, sigaction, raise. */
    if (g_own_lock)
        unlink(g_lock_path);
    static const char msg[] = "worker: fatal: fatal signal, lock file removed, dying by the same signal\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    /* Pending until the handler returns; for SIGSEGV the faulting
     * instruction also re-executes under the default action. */
    raise(sig);
}

static int install_signals(bool naive)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return -1;
    if (naive) /* the exercise's naive worker: default actions, no cleanup */
        return sigprocmask(SIG_SETMASK, NULL, &g_wait_mask);
    /* No SA_RESTART: the wait must return EINTR so the loop sees g_stop. */
    sa.sa_handler = on_stop;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    if (sigprocmask(SIG_BLOCK, &stops, &g_wait_mask) != 0)
        return -1;
    sigdelset(&g_wait_mask, SIGTERM);
    sigdelset(&g_wait_mask, SIGINT);
    sa.sa_handler = on_fatal;
    const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        if (sigaction(fatal[i], &sa, NULL) != 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Lock file                                                                */

static void read_lock_owner(int fd, char *dst, size_t cap)
{
    ssize_t n = pread(fd, dst, cap - 1, 0);
    if (n < 0)
        n = 0;
    dst[n] = '\0';
    /* Show the PID only: the first token, and only if it is digits. */
    size_t i = 0;
    while (dst[i] >= '0' && dst[i] <= '9')
        i++;
    if (i == 0)
        snprintf(dst, cap, "unknown");
    else
        dst[i] = '\0';
}

static int write_lock_content(int fd)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%ld %s\n", (long)getpid(), g_incarnation);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -1;
    return 0;
}

/* Returns the locked fd, or -1 with *code set (EXIT_LOCKED or EXIT_OSERR). */
static int take_lock_robust(const char *path, int *code)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        bool existed = false;
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) {
            existed = true;
            fd = open(path, O_RDWR | O_CLOEXEC);
            if (fd < 0 && errno == ENOENT)
                continue; /* unlinked between the two opens: start over */
        }
        if (fd < 0) {
            logf_("error", "cannot open lock file %s: %s", path, strerror(errno));
            *code = EXIT_OSERR;
            return -1;
        }
        /* The monitor's probe holds a shared lock for an instant; only a lock
         * that stays taken for LOCK_RETRY_MS belongs to a live worker. */
        int64_t deadline = now_ms() + LOCK_RETRY_MS;
        int rc;
        while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK &&
               now_ms() < deadline) {
            struct timespec pause = {0, 5 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        if (rc != 0) {
            char owner[64];
            read_lock_owner(fd, owner, sizeof owner);
            if (errno == EWOULDBLOCK) {
                logf_("error", "lock %s is held by live process %s; refusing to start", path, owner);
                *code = EXIT_LOCKED;
            } else {
                logf_("error", "cannot lock %s: %s", path, strerror(errno));
                *code = EXIT_OSERR;
            }
            close(fd);
            return -1;
        }
        /* A holder that exited may have unlinked the path after we opened
         * it: then we hold a lock on an orphan inode, and a third process
         * could lock the new file too. Only the inode at the path counts. */
        struct stat fs, ps;
        if (fstat(fd, &fs) != 0 || stat(path, &ps) != 0 || fs.st_ino != ps.st_ino ||
            fs.st_dev != ps.st_dev) {
            close(fd);
            continue;
        }
        if (existed) {
            char owner[64];
            read_lock_owner(fd, owner, sizeof owner);
            logf_("warn", "recovered stale lock of pid %s", owner);
        }
        if (write_lock_content(fd) != 0) {
            logf_("error", "cannot write lock file %s: %s", path, strerror(errno));
            close(fd);
            *code = EXIT_OSERR;
            return -1;
        }
        return fd;
    }
    logf_("error", "lock file %s keeps changing under us; giving up", path);
    *code = EXIT_OSERR;
    return -1;
}

/* The exercise's naive pidfile: no flock, and any file present means "taken". */
static int take_lock_naive(const char *path, int *code)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == EEXIST) {
            char owner[64];
            int rfd = open(path, O_RDONLY | O_CLOEXEC);
            if (rfd >= 0) {
                read_lock_owner(rfd, owner, sizeof owner);
                close(rfd);
            } else {
                snprintf(owner, sizeof owner, "unknown");
            }
            logf_("error", "lock file %s exists (pid %s); refusing to start (naive mode cannot tell a stale lock)", path, owner);
            *code = EXIT_LOCKED;
        } else {
            logf_("error", "cannot create lock file %s: %s", path, strerror(errno));
            *code = EXIT_OSERR;
        }
        return -1;
    }
    if (write_lock_content(fd) != 0) {
        logf_("error", "cannot write lock file %s: %s", path, strerror(errno));
        close(fd);
        *code = EXIT_OSERR;
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------------------ */
/* Heartbeats: "incarnation pid seq processed unix_ms[ stopped]"            */

/* Name resolution can block for seconds (a partitioned container cannot reach
 * its DNS server), which would freeze the volume heartbeat too, and then a
 * partition would look like a pause. So it runs in a thread of its own. */
struct resolver {
    pthread_mutex_t mu;
    char host[256];
    char port[16];
    bool busy;
    bool have;
    unsigned generation;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static struct resolver g_res = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *resolve_thread(void *arg)
{
    (void)arg;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    int rc = getaddrinfo(g_res.host, g_res.port, &hints, &ai);
    pthread_mutex_lock(&g_res.mu);
    if (rc == 0 && ai) {
        memcpy(&g_res.addr, ai->ai_addr, ai->ai_addrlen);
        g_res.addrlen = ai->ai_addrlen;
        g_res.have = true;
        g_res.generation++;
    }
    g_res.busy = false;
    pthread_mutex_unlock(&g_res.mu);
    if (ai)
        freeaddrinfo(ai);
    return NULL;
}

static void request_resolve(void)
{
    pthread_mutex_lock(&g_res.mu);
    bool start = !g_res.busy;
    if (start)
        g_res.busy = true;
    pthread_mutex_unlock(&g_res.mu);
    if (!start)
        return;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, resolve_thread, NULL) != 0) {
        pthread_mutex_lock(&g_res.mu);
        g_res.busy = false;
        pthread_mutex_unlock(&g_res.mu);
    }
    pthread_attr_destroy(&attr);
}

struct beat {
    long interval_ms;
    int64_t next_at;
    uint64_t seq;
    const char *file;
    char tmp_path[PATH_MAX];
    bool udp;
    int udp_fd;
    int udp_family;
    unsigned used_generation;
    uint64_t send_failures;
    bool failing;
    int64_t last_resolve_at;
    bool file_failing;
};

static int split_host_port(const char *spec, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1])
        return -1;
    size_t hl = (size_t)(colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap)
        return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    return 0;
}

static int beat_init(struct beat *b, const struct config *cfg)
{
    memset(b, 0, sizeof *b);
    b->interval_ms = cfg->heartbeat_ms;
    b->udp_fd = -1;
    b->file = cfg->heartbeat_file;
    if (b->file) {
        int n = snprintf(b->tmp_path, sizeof b->tmp_path, "%s.tmp.%ld", b->file, (long)getpid());
        if (n < 0 || (size_t)n >= sizeof b->tmp_path)
            return -1;
    }
    if (cfg->heartbeat_udp) {
        if (split_host_port(cfg->heartbeat_udp, g_res.host, sizeof g_res.host, g_res.port,
                            sizeof g_res.port) != 0)
            return -1;
        b->udp = true;
        request_resolve();
    }
    b->next_at = now_ms();
    return 0;
}

static bool beat_enabled(const struct beat *b) { return b->file || b->udp; }

static void beat_send_udp(struct beat *b, const char *msg, size_t len, int64_t now)
{
    pthread_mutex_lock(&g_res.mu);
    bool have = g_res.have;
    unsigned gen = g_res.generation;
    struct sockaddr_storage addr = g_res.addr;
    socklen_t alen = g_res.addrlen;
    pthread_mutex_unlock(&g_res.mu);
    if (!have) {
        if (now - b->last_resolve_at >= 1000) {
            b->last_resolve_at = now;
            request_resolve();
        }
        b->send_failures++;
        if (!b->failing) {
            b->failing = true;
            logf_("warn", "heartbeat peer %s:%s not resolved yet; will keep trying", g_res.host, g_res.port);
        }
        return;
    }
    if (b->udp_fd < 0 || gen != b->used_generation || addr.ss_family != b->udp_family) {
        if (b->udp_fd >= 0)
            close(b->udp_fd);
        b->udp_fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        b->udp_family = addr.ss_family;
        b->used_generation = gen;
    }
    ssize_t w = b->udp_fd >= 0 ? sendto(b->udp_fd, msg, len, 0, (struct sockaddr *)&addr, alen) : -1;
    if (w < 0) {
        b->send_failures++;
        if (!b->failing) {
            b->failing = true;
            logf_("warn", "heartbeat to %s:%s failed: %s; counting failures, re-resolving", g_res.host,
                  g_res.port, strerror(errno));
        }
        /* A reconnected network can give the peer a new address. */
        if (now - b->last_resolve_at >= 1000) {
            b->last_resolve_at = now;
            request_resolve();
        }
    } else if (b->failing) {
        b->failing = false;
        logf_("info", "heartbeat to %s:%s resumed after %" PRIu64 " failed sends", g_res.host, g_res.port,
              b->send_failures);
    }
}

/* suffix: "" for a beat, " stopped" for the last one of a clean exit, so a
 * watcher can tell a graceful stop from a crash. */
static void beat_now(struct beat *b, uint64_t processed, const char *suffix)
{
    int64_t now = now_ms();
    char msg[128];
    b->seq++;
    int n = snprintf(msg, sizeof msg, "%s %ld %" PRIu64 " %" PRIu64 " %" PRId64 "%s\n", g_incarnation,
                     (long)getpid(), b->seq, processed, wall_ms(), suffix);
    if (b->file) {
        /* Replace atomically so a reader never sees half a line. */
        int fd = open(b->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        bool ok = fd >= 0 && write(fd, msg, (size_t)n) == n;
        if (fd >= 0)
            close(fd);
        ok = ok && rename(b->tmp_path, b->file) == 0;
        if (!ok && !b->file_failing)
            logf_("warn", "heartbeat file %s not written: %s", b->file, strerror(errno));
        b->file_failing = !ok;
    }
    if (b->udp)
        beat_send_udp(b, msg, (size_t)n, now);
    /* Schedule from the plan, not from now, so beats don't drift; skip
     * missed slots rather than bursting after a stall. */
    b->next_at += b->interval_ms;
    if (b->next_at <= now)
        b->next_at = now + b->interval_ms;
}

static void beat_maybe(struct beat *b, uint64_t processed)
{
    if (beat_enabled(b) && now_ms() >= b->next_at)
        beat_now(b, processed, "");
}

/* Milliseconds a poll may wait before the next beat is due (-1: forever). */
static int beat_wait_ms(const struct beat *b)
{
    if (!beat_enabled(b))
        return -1;
    int64_t d = b->next_at - now_ms();
    return d < 0 ? 0 : (int)d;
}

static void beat_close(struct beat *b)
{
    if (b->udp_fd >= 0)
        close(b->udp_fd);
    if (b->file)
        unlink(b->tmp_path);
}

/* ------------------------------------------------------------------------ */
/* The processing loop                                                      */

struct conn {
    int in_fd;
    int out_fd;
    bool out_nonblock; /* we set O_NONBLOCK: writes must poll */
    char *in;
    size_t in_len, in_cap;
    bool discarding; /* inside an over-long line */
    size_t discard_len;
    char discard_head[SHOW_MAX * 4 + 4];
    size_t discard_head_len;
    char out[OUT_CAP];
    size_t out_len;
    char err[OUT_CAP];
    size_t err_len;
    bool echo_errors; /* listen mode: errors go to the client too */
};

enum io_status { IO_OK, IO_CLOSED, IO_FAILED, IO_STOP };

/* poll() that is the only place a stop request can be delivered. */
static int wait_io(struct pollfd *p, nfds_t n, int timeout_ms)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tp = &ts;
    }
    return ppoll(p, n, tp, &g_wait_mask);
}

/* Writes all of buf to fd; keeps beating while the reader is slow. */
static enum io_status write_all(int fd, const char *buf, size_t len, struct beat *b, uint64_t processed)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int rc = wait_io(&p, 1, beat_wait_ms(b));
            if (rc < 0 && errno != EINTR)
                return IO_FAILED;
            beat_maybe(b, processed);
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return IO_CLOSED;
        return IO_FAILED;
    }
    return IO_OK;
}

static enum io_status flush_out(struct conn *c, struct beat *b, uint64_t processed)
{
    enum io_status st = IO_OK;
    if (c->out_len) {
        st = write_all(c->out_fd, c->out, c->out_len, b, processed);
        c->out_len = 0;
    }
    if (c->err_len) {
        /* stderr is for the logs; a slow log reader is not worth a beat. */
        enum io_status e = write_all(STDERR_FILENO, c->err, c->err_len, b, processed);
        (void)e;
        c->err_len = 0;
    }
    return st;
}

static void emit_error(struct conn *c, const char *line, size_t len)
{
    if (c->echo_errors) {
        memcpy(c->out + c->out_len, line, len);
        c->out_len += len;
    }
    memcpy(c->err + c->err_len, line, len);
    c->err_len += len;
}

struct worker {
    const struct config *cfg;
    struct beat beat;
    uint64_t processed;
};

__attribute__((no_sanitize("undefined"))) static void crash_on_purpose(void)
{
    /* The bug the lab studies: a genuine invalid write, not raise(), so the
     * kernel delivers SIGSEGV exactly as for a real pointer bug. */
    volatile int *volatile p = NULL;
    *p = 999;
}

/* Handles one complete line (without its '\n'). May need to flush first. */
static enum io_status handle_line(struct worker *w, struct conn *c, const char *s, size_t len)
{
    if (c->out_len >= OUT_FLUSH_AT || c->err_len >= OUT_FLUSH_AT) {
        enum io_status st = flush_out(c, &w->beat, w->processed);
        if (st != IO_OK)
            return st;
    }
    int64_t v = 0;
    enum parse_result r = parse_line(s, len, &v);
    if (r == PARSE_OK && w->cfg->bug_enabled && v == w->cfg->bug_trigger)
        crash_on_purpose();
    char buf[SHOW_MAX * 4 + 64];
    size_t n;
    if (r == PARSE_OK && v >= 0 && v <= SQUARE_MAX) {
        char *o = c->out + c->out_len;
        n = fmt_i64(o, v);
        o[n++] = ',';
        n += fmt_i64(o + n, v * v);
        o[n++] = '\n';
        c->out_len += n;
    } else if (r == PARSE_OK && v < 0) {
        n = (size_t)snprintf(buf, sizeof buf, "ERROR: Corrupted data %" PRId64 "\n", v);
        emit_error(c, buf, n);
    } else if (r == PARSE_OK || r == PARSE_RANGE) {
        memcpy(buf, "ERROR: Out of range: ", 21);
        n = 21 + escape_for_log(buf + 21, s, len);
        buf[n++] = '\n';
        emit_error(c, buf, n);
    } else {
        memcpy(buf, "ERROR: Malformed input: ", 24);
        n = 24 + escape_for_log(buf + 24, s, len);
        buf[n++] = '\n';
        emit_error(c, buf, n);
    }
    w->processed++;
    if (w->cfg->flush_every_line)
        return flush_out(c, &w->beat, w->processed);
    return IO_OK;
}

static enum io_status handle_overlong(struct worker *w, struct conn *c)
{
    char buf[SHOW_MAX * 4 + 96];
    int n = snprintf(buf, sizeof buf, "ERROR: Malformed input: line of %zu bytes: %.*s\n", c->discard_len,
                     (int)c->discard_head_len, c->discard_head);
    if (n < 0)
        return IO_FAILED;
    if (c->out_len >= OUT_FLUSH_AT || c->err_len >= OUT_FLUSH_AT) {
        enum io_status st = flush_out(c, &w->beat, w->processed);
        if (st != IO_OK)
            return st;
    }
    emit_error(c, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
    w->processed++;
    c->discarding = false;
    c->discard_len = 0;
    return IO_OK;
}

/* Consumes every complete line in c->in; keeps a partial tail. */
static enum io_status drain_lines(struct worker *w, struct conn *c)
{
    size_t pos = 0;
    while (pos < c->in_len) {
        if (g_stop)
            break;
        char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
        if (c->discarding) {
            size_t take = nl ? (size_t)(nl - (c->in + pos)) : c->in_len - pos;
            c->discard_len += take;
            pos += take;
            if (!nl)
                break;
            pos++;
            enum io_status st = handle_overlong(w, c);
            if (st != IO_OK)
                return st;
            continue;
        }
        if (!nl) {
            if (c->in_len - pos >= MAX_LINE) {
                c->discarding = true;
                c->discard_len = c->in_len - pos;
                c->discard_head_len = escape_for_log(c->discard_head, c->in + pos, c->in_len - pos);
                pos = c->in_len;
            }
            break;
        }
        size_t len = (size_t)(nl - (c->in + pos));
        if (len >= MAX_LINE) {
            /* The same answer whether the line came in one read or many. */
            c->discard_len = len;
            c->discard_head_len = escape_for_log(c->discard_head, c->in + pos, len);
            pos += len + 1;
            enum io_status st = handle_overlong(w, c);
            if (st != IO_OK)
                return st;
            continue;
        }
        /* Fast path for the common line, plain digits: no trigger, no
         * error, room in the buffer. Everything else takes handle_line. */
        if (len > 0 && len <= 9 && (c->in[pos] != '0' || len == 1) && c->out_len < OUT_FLUSH_AT &&
            !w->cfg->flush_every_line) {
            const char *d = c->in + pos;
            uint64_t v = 0;
            size_t k = 0;
            while (k < len && d[k] >= '0' && d[k] <= '9')
                v = v * 10u + (uint64_t)(d[k++] - '0');
            if (k == len && !(w->cfg->bug_enabled && (int64_t)v == w->cfg->bug_trigger)) {
                char *o = c->out + c->out_len;
                memcpy(o, d, len);
                o[len] = ',';
                size_t n = len + 1 + fmt_u64(o + len + 1, v * v);
                o[n++] = '\n';
                c->out_len += n;
                w->processed++;
                pos += len + 1;
                continue;
            }
        }
        enum io_status st = handle_line(w, c, c->in + pos, len);
        if (st != IO_OK)
            return st;
        pos = (size_t)(nl - c->in) + 1;
    }
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return g_stop ? IO_STOP : IO_OK;
}

/* End of input: a last line without '\n' still counts as a line. */
static enum io_status finish_input(struct worker *w, struct conn *c)
{
    enum io_status st = IO_OK;
    if (c->discarding)
        st = handle_overlong(w, c);
    else if (c->in_len)
        st = handle_line(w, c, c->in, c->in_len);
    c->in_len = 0;
    if (st != IO_OK)
        return st;
    return flush_out(c, &w->beat, w->processed);
}

static int ensure_in_room(struct conn *c)
{
    if (c->in_cap - c->in_len >= READ_CHUNK)
        return 0;
    size_t cap = c->in_cap ? c->in_cap * 2 : 4 * READ_CHUNK;
    while (cap - c->in_len < READ_CHUNK)
        cap *= 2;
    char *p = realloc(c->in, cap);
    if (!p)
        return -1;
    c->in = p;
    c->in_cap = cap;
    return 0;
}

static void conn_reset(struct conn *c, int in_fd, int out_fd)
{
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->in_len = 0;
    c->out_len = 0;
    c->discarding = false;
    c->discard_len = 0;
}

/*
 * Serves one input stream until EOF (IO_CLOSED), a stop request (IO_STOP),
 * a failure, or — in listen mode — a newer connection on listen_fd
 * (*replaced then holds it).
 */
static enum io_status serve(struct worker *w, struct conn *c, int listen_fd, int *replaced)
{
    for (;;) {
        enum io_status st = drain_lines(w, c);
        if (st != IO_OK) {
            if (st == IO_STOP)
                flush_out(c, &w->beat, w->processed);
            return st;
        }
        beat_maybe(&w->beat, w->processed);
        if (ensure_in_room(c) != 0) {
            logf_("error", "out of memory for the input buffer");
            return IO_FAILED;
        }
        struct pollfd p[2] = {{.fd = c->in_fd, .events = POLLIN}, {.fd = listen_fd, .events = POLLIN}};
        nfds_t np = listen_fd >= 0 ? 2 : 1;
        int rc;
        if (c->out_len || c->err_len) {
            /* Batch while input keeps coming; answer at once when it pauses. */
            rc = wait_io(p, np, 0);
            if (rc < 0 && errno == EINTR)
                continue; /* a stop landed: drain_lines reports it */
            if (rc == 0) {
                st = flush_out(c, &w->beat, w->processed);
                if (st != IO_OK)
                    return st;
            }
        }
        rc = wait_io(p, np, beat_wait_ms(&w->beat));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            logf_("error", "poll: %s", strerror(errno));
            return IO_FAILED;
        }
        if (rc == 0)
            continue;
        if (np == 2 && (p[1].revents & POLLIN)) {
            int nfd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (nfd >= 0) {
                *replaced = nfd;
                return IO_CLOSED;
            }
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = read(c->in_fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n == 0) {
            st = finish_input(w, c);
            return st == IO_OK ? IO_CLOSED : st;
        }
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        if (errno == ECONNRESET)
            return IO_FAILED;
        logf_("error", "read: %s", strerror(errno));
        return IO_FAILED;
    }
}

/* Returns the listening fd, or minus the exit code. */
static int open_listener(const char *spec)
{
    char host[256], port[16];
    if (split_host_port(spec, host, sizeof host, port, sizeof port) != 0) {
        logf_("error", "--listen wants HOST:PORT, got '%s'", spec);
        return -EXIT_USAGE;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, port, &hints, &ai);
    if (rc != 0) {
        logf_("error", "--listen %s: %s", spec, gai_strerror(rc));
        return -EXIT_USAGE;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 16) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        logf_("error", "cannot listen on %s: %s", spec, strerror(errno));
        fd = -EXIT_OSERR;
    }
    freeaddrinfo(ai);
    return fd;
}

/* Returns the process exit code. */
static int run_listen(struct worker *w, struct conn *c)
{
    int lfd = open_listener(w->cfg->listen);
    if (lfd < 0)
        return -lfd;
    logf_("info", "listening on %s", w->cfg->listen);
    c->echo_errors = true;
    int client = -1;
    int code = EXIT_OK;
    for (;;) {
        if (client < 0) {
            struct pollfd p = {.fd = lfd, .events = POLLIN};
            int rc = wait_io(&p, 1, beat_wait_ms(&w->beat));
            if (g_stop)
                break;
            beat_maybe(&w->beat, w->processed);
            if (rc <= 0)
                continue;
            client = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (client < 0)
                continue;
        }
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        logf_("info", "client connected");
        conn_reset(c, client, client);
        int replaced = -1;
        enum io_status st = serve(w, c, lfd, &replaced);
        close(client);
        client = -1;
        if (st == IO_STOP)
            break;
        if (replaced >= 0) {
            logf_("info", "a new connection replaces the current one");
            client = replaced;
            continue;
        }
        if (st == IO_CLOSED) {
            logf_("info", "client closed its input after %" PRIu64 " lines", w->processed);
            if (!w->cfg->serve_forever)
                break;
            continue;
        }
        /* A reset or failed connection: a client that went away mid-job
         * (timed out and will reconnect). Keep serving. */
        logf_("warn", "client connection lost; waiting for a new one");
    }
    close(lfd);
    return code;
}

static int run_stdio(struct worker *w, struct conn *c)
{
    struct stat st;
    int flags = fcntl(STDOUT_FILENO, F_GETFL);
    /* Non-blocking output keeps beats flowing past a slow reader; only for a
     * pipe or socket, whose description we don't share with a terminal. */
    if (flags >= 0 && fstat(STDOUT_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) &&
        beat_enabled(&w->beat)) {
        if (fcntl(STDOUT_FILENO, F_SETFL, flags | O_NONBLOCK) == 0)
            c->out_nonblock = true;
    }
    conn_reset(c, STDIN_FILENO, STDOUT_FILENO);
    int replaced = -1;
    enum io_status s = serve(w, c, -1, &replaced);
    if (c->out_nonblock)
        fcntl(STDOUT_FILENO, F_SETFL, flags);
    if (s == IO_FAILED) {
        logf_("error", "input or output failed: %s", strerror(errno));
        return EXIT_IOERR;
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: worker [--listen HOST:PORT [--serve-forever]] [--lock PATH] [--mode robust|naive]\n"
          "              [--bug-trigger N|none] [--heartbeat-ms MS] [--heartbeat-file PATH]\n"
          "              [--heartbeat-udp HOST:PORT] [--flush-every-line]\n"
          "Reads numbers, one per line, and writes n,n*n for each (stdin to stdout, or\n"
          "over one TCP connection at a time with --listen).\n",
          f);
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool is_value_option(const char *a)
{
    static const char *const opts[] = {"--listen", "--lock", "--heartbeat-file", "--heartbeat-udp",
                                       "--heartbeat-ms", "--bug-trigger", "--mode"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strcmp(a, opts[i]))
            return true;
    return false;
}

/* Returns 0, or an exit code with the message already printed. */
static int parse_args(int argc, char **argv, struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->lock_path = "cworker.lock";
    cfg->bug_enabled = true;
    cfg->bug_trigger = 999;
    cfg->heartbeat_ms = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        /* --opt=value, as Compose files like to spell it. */
        char name[32];
        const char *eq = strchr(a, '=');
        if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            a = name;
            val = eq + 1;
            takes = false;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--naive")) {
            cfg->naive = true;
            takes = false;
        } else if (!strcmp(a, "--flush-every-line")) {
            cfg->flush_every_line = true;
            takes = false;
        } else if (!strcmp(a, "--serve-forever")) {
            cfg->serve_forever = true;
            takes = false;
        } else if (!takes && !is_value_option(a)) {
            fprintf(stderr, "worker: error: unknown option '%s'; see --help\n", a);
            return EXIT_USAGE;
        } else if (!is_value_option(a)) {
            fprintf(stderr, "worker: error: unknown option '%s'; see --help\n", a);
            return EXIT_USAGE;
        } else if (!val) {
            fprintf(stderr, "worker: error: %s needs a value; see --help\n", a);
            return EXIT_USAGE;
        } else if (!strcmp(a, "--listen")) {
            cfg->listen = val;
        } else if (!strcmp(a, "--lock")) {
            cfg->lock_path = val;
        } else if (!strcmp(a, "--mode")) {
            if (strcmp(val, "robust") && strcmp(val, "naive")) {
                fprintf(stderr, "worker: error: --mode wants robust or naive, got '%s'\n", val);
                return EXIT_USAGE;
            }
            cfg->naive = !strcmp(val, "naive");
        } else if (!strcmp(a, "--heartbeat-file")) {
            cfg->heartbeat_file = val;
        } else if (!strcmp(a, "--heartbeat-udp")) {
            cfg->heartbeat_udp = val;
        } else if (!strcmp(a, "--heartbeat-ms")) {
            if (!parse_long(val, 10, 3600000, &cfg->heartbeat_ms)) {
                fprintf(stderr, "worker: error: --heartbeat-ms wants 10..3600000, got '%s'\n", val);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--bug-trigger")) {
            int64_t t;
            if (!strcmp(val, "none")) {
                cfg->bug_enabled = false;
            } else if (parse_line(val, strlen(val), &t) == PARSE_OK) {
                cfg->bug_trigger = t;
            } else {
                fprintf(stderr, "worker: error: --bug-trigger wants a number or 'none', got '%s'\n", val);
                return EXIT_USAGE;
            }
        }
        if (takes && is_value_option(a))
            i++;
    }
    if (strlen(cfg->lock_path) >= sizeof g_lock_path) {
        fprintf(stderr, "worker: error: --lock path too long\n");
        return EXIT_USAGE;
    }
    return 0;
}

static void make_incarnation(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
    snprintf(g_incarnation, sizeof g_incarnation, "%016" PRIx64, r);
}

int main(int argc, char **argv)
{
    struct config cfg;
    int code = parse_args(argc, argv, &cfg);
    if (code != 0)
        return code < 0 ? EXIT_OK : code;
    make_incarnation();
    if (install_signals(cfg.naive) != 0) {
        logf_("error", "cannot install signal handlers: %s", strerror(errno));
        return EXIT_OSERR;
    }
    strcpy(g_lock_path, cfg.lock_path);
    int lock_fd = cfg.naive ? take_lock_naive(cfg.lock_path, &code) : take_lock_robust(cfg.lock_path, &code);
    if (lock_fd < 0)
        return code;
    g_own_lock = 1;
    logf_("info", "started, incarnation %s, lock %s%s", g_incarnation, cfg.lock_path,
          cfg.naive ? " (naive)" : "");

    static struct worker w;
    static struct conn c;
    w.cfg = &cfg;
    if (beat_init(&w.beat, &cfg) != 0) {
        logf_("error", "--heartbeat-udp wants HOST:PORT, got '%s'", cfg.heartbeat_udp);
        unlink(cfg.lock_path);
        return EXIT_USAGE;
    }
    code = cfg.listen ? run_listen(&w, &c) : run_stdio(&w, &c);
    if (beat_enabled(&w.beat))
        beat_now(&w.beat, w.processed, " stopped");
    beat_close(&w.beat);
    free(c.in);
    if (g_stop)
        logf_("info", "stop requested; finished the current line");
    /* Unlink while still holding the lock, so no one can lock the old inode
     * believing it is the live file. */
    g_own_lock = 0;
    unlink(cfg.lock_path);
    close(lock_fd);
    logf_("info", "exiting with %d after %" PRIu64 " lines", code, w.processed);
    return code;
}
