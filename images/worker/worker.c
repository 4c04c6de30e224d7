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
 *   --idle                  no input at all: hold the lock and beat until
 *                           stopped (exercise 2's worker, with
 *                           --heartbeat-stdout).
 *
 * The exercises' programs are thin builds of this file (images/exercises/):
 * each defines WORKER_DEFAULT_ARGS, the options that make it the exercise's
 * program when run without arguments, as the exercise sheet runs it.
 * --record PATH keeps a flight record (lines handled, signals, restarts) for
 * the grader's stand-in worker; it changes nothing the worker does. PATH
 * "@NAME" sends each record to the abstract unix socket NAME instead of a
 * file: the grader's driver listens there, and a build with
 * WORKER_RECORD_TOKEN defined marks every record with that token, so that a
 * program under test, which shares the stand-in's user, can neither forge
 * nor erase the record (docs/grading.md, threat model).
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
#include <ctype.h>
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
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
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
/* How long a dying worker tries to hand over the lines it owes; a reader that
 * stopped reading must not keep a crashed worker, and so its lock, alive. */
#define FATAL_FLUSH_MS 500
/* Listen mode logs the first bad line of a burst, then one summary per window. */
#define BAD_LOG_MS 1000

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
/* Process-wide state. Signal handlers read only sig_atomic_t values, the   */
/* fixed lock path buffer and the static output batches.                    */

/*
 * One output stream's batch. Output is batched for speed, so at any moment
 * answers already computed may sit here; a fatal-signal handler still sends
 * them. len is the main loop's own count. done is the same count published for
 * the handler, and moves only once a whole line is in buf, so a dying worker
 * never sends half a line. sent is how much of done a write already took.
 */
struct outbuf {
    char buf[OUT_CAP];
    size_t len;
    volatile sig_atomic_t done;
    volatile sig_atomic_t sent;
    /* Set around write(): the handler cannot know how much of an interrupted
     * write went out, and sending it again would corrupt the stream. */
    volatile sig_atomic_t writing;
    volatile sig_atomic_t fd; /* -1: no stream to deliver to */
};

_Static_assert(OUT_CAP <= SIG_ATOMIC_MAX, "batch offsets must fit a sig_atomic_t");

struct conn {
    int in_fd;
    bool out_nonblock; /* we set O_NONBLOCK: writes must poll */
    char *in;
    size_t in_len, in_cap;
    bool discarding; /* inside an over-long line */
    size_t discard_len;
    char discard_head[SHOW_MAX * 4 + 4];
    size_t discard_head_len;
    struct outbuf out;
    struct outbuf err;
    bool echo_errors; /* listen mode: errors go to the client, not line by line to stderr */
};

/* Static, so the fatal-signal handler can reach the batches. */
static struct conn g_conn;

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
    bool bug_oom; /* the bug allocates until the OOM killer acts, instead of segfaulting */
    bool naive;
    bool plain_lock;
    bool idle;
    bool flush_every_line;
    bool serve_forever;
    long heartbeat_ms;
    const char *heartbeat_file;
    const char *heartbeat_udp;
    bool heartbeat_stdout;
    const char *record;
    /* scenario-crash-loop: segfault once this incarnation has answered this
     * many lines (0: never), and wait this long before taking the lock. */
    long crash_every;
    long start_delay_ms;
    /* The bitflip fault's setting: the file SIGUSR1 reads p from. */
    const char *bitflip_control;
};

/* The flight recorder's file (--record), or -1. Written from signal handlers
 * too, so it is a plain descriptor and every record is one write(). */
static volatile sig_atomic_t g_record_fd = -1;
/* Whether it is a socket: sent with MSG_NOSIGNAL, so a listener gone early
 * never turns a record into a SIGPIPE. */
static volatile sig_atomic_t g_record_sock = 0;
#ifdef WORKER_RECORD_TOKEN
static const char g_record_token[] = WORKER_RECORD_TOKEN " ";
#else
static const char g_record_token[] = "";
#endif

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
/* Flight recorder: "MS PID EVENT[ DETAIL]" per line, MS on the monotonic   */
/* clock (the grader's clock inside the same kernel). Appended with one     */
/* write per event, so a worker that dies still leaves every record it made,*/
/* and several incarnations share one file without tearing lines.           */

/* Async-signal-safe: clock_gettime, memcpy, strlen and write only. */
static void record_event(const char *event, const char *detail, size_t detail_len)
{
    int fd = g_record_fd;
    if (fd < 0)
        return;
    char buf[96 + sizeof g_record_token + SHOW_MAX * 4];
    size_t ev = strlen(event);
    if (detail_len > sizeof buf - 64 - sizeof g_record_token - ev)
        detail_len = sizeof buf - 64 - sizeof g_record_token - ev;
    size_t n = sizeof g_record_token - 1;
    memcpy(buf, g_record_token, n);
    n += fmt_i64(buf + n, now_ms());
    buf[n++] = ' ';
    n += fmt_i64(buf + n, (int64_t)getpid());
    buf[n++] = ' ';
    memcpy(buf + n, event, ev);
    n += ev;
    if (detail) {
        buf[n++] = ' ';
        memcpy(buf + n, detail, detail_len);
        n += detail_len;
    }
    buf[n++] = '\n';
    ssize_t w = g_record_sock ? send(fd, buf, n, MSG_NOSIGNAL) : write(fd, buf, n);
    (void)w;
}

static void record_text(const char *event, const char *detail)
{
    record_event(event, detail, detail ? strlen(detail) : 0);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "TERM";
    case SIGINT: return "INT";
    case SIGSEGV: return "SEGV";
    case SIGBUS: return "BUS";
    case SIGFPE: return "FPE";
    case SIGILL: return "ILL";
    case SIGABRT: return "ABRT";
    default: return "OTHER";
    }
}

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */

static void on_stop(int sig)
{
    int saved_errno = errno;
    record_text("signal", signal_name(sig));
    g_stop = 1;
    errno = saved_errno;
}

/* Sends the complete lines a batch still owes, by the deadline. */
static void deliver_pending(struct outbuf *o, int64_t deadline)
{
    int fd = o->fd;
    sig_atomic_t off = o->sent, end = o->done;
    /* A signal sent from outside can land inside write(): then the rest of
     * the batch is lost rather than partly sent twice. A fault, the case that
     * matters, never happens there. */
    if (o->writing)
        return;
    while (fd >= 0 && off < end) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0 || !(p.revents & POLLOUT))
            return;
        /* POLLOUT on a pipe promises room for PIPE_BUF bytes: a blocking
         * stdout cannot stall the handler with a write of that size. */
        size_t n = (size_t)(end - off) < PIPE_BUF ? (size_t)(end - off) : PIPE_BUF;
        ssize_t w = write(fd, o->buf + off, n);
        if (w > 0)
            off += (sig_atomic_t)w;
        else if (w < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        else
            return;
    }
}

/* SIGUSR1: the bitflip fault on; SIGUSR2: off. The main loop acts on it. */
static volatile sig_atomic_t g_bitflip_req; /* 0: nothing new; 1: on; 2: off */

static void on_bitflip(int sig)
{
    int saved_errno = errno;
    g_bitflip_req = sig == SIGUSR1 ? 1 : 2;
    errno = saved_errno;
}

static void on_fatal(int sig)
{
    /* Async-signal-safe only: clock_gettime, poll, write, unlink, sigaction,
     * raise. The answers computed before the fault go out first, so that a
     * reader that sees the lock free has everything the worker will send. */
    int saved_errno = errno;
    record_text("signal", signal_name(sig));
    int64_t deadline = now_ms() + FATAL_FLUSH_MS;
    deliver_pending(&g_conn.out, deadline);
    deliver_pending(&g_conn.err, deadline);
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
    errno = saved_errno;
}

static int install_signals(bool naive)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return -1;
    /* The bitflip fault's switch, in both modes: the default action of
     * SIGUSR1 would end the worker. SA_RESTART: a read or write it lands in
     * goes on; a wait returns EINTR, which every wait loop retries. */
    sa.sa_handler = on_bitflip;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGUSR2, &sa, NULL) != 0)
        return -1;
    sa.sa_flags = 0;
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
    /* A second fatal signal must not run the handler again inside the first:
     * it would send the pending lines twice. */
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        sigaddset(&sa.sa_mask, fatal[i]);
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

/* The incarnation after the PID in a lock file ("PID INCARNATION"), if it
 * looks like one (letters, digits, '-', '_', '.'); else "unknown". */
static void read_lock_incarnation(int fd, char *dst, size_t cap)
{
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    const char *p = strchr(buf, ' ');
    size_t i = 0;
    if (p != NULL) {
        for (p++; i + 1 < cap && (isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '_' || p[i] == '.'); i++)
            dst[i] = p[i];
    }
    dst[i] = '\0';
    if (i == 0)
        snprintf(dst, cap, "unknown");
}

/* "PID INCARNATION", or the PID alone (plain), as the exercises' workers
 * write it and their monitors and supervisors read it. */
static int write_lock_content(int fd, bool plain)
{
    char buf[64];
    int n = plain ? snprintf(buf, sizeof buf, "%ld\n", (long)getpid())
                  : snprintf(buf, sizeof buf, "%ld %s\n", (long)getpid(), g_incarnation);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -1;
    return 0;
}

/* Returns the locked fd, or -1 with *code set (EXIT_LOCKED or EXIT_OSERR). */
static int take_lock_robust(const char *path, bool plain, int *code)
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
            char owner[64], inc[64];
            read_lock_owner(fd, owner, sizeof owner);
            read_lock_incarnation(fd, inc, sizeof inc);
            /* The file outlived its holder (SIGKILL runs no handler), but the
             * kernel dropped the holder's flock with it: ours now. */
            logf_("warn", "recovered stale lock of pid %s, incarnation %s: it died holding the lock file, "
                  "and the kernel had released its flock", owner, inc);
        }
        if (write_lock_content(fd, plain) != 0) {
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
static int take_lock_naive(const char *path, bool plain, int *code)
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
    if (write_lock_content(fd, plain) != 0) {
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
    /* Signals are the main thread's: their handlers work on its state, and a
     * fatal one sent while the main thread is already in its handler must
     * not run a second handler here at the same time. The thread inherits
     * this mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&t, &attr, resolve_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
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
    bool to_stdout; /* --heartbeat-stdout: a "Heartbeat ..." line per beat (idle mode only) */
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
    b->to_stdout = cfg->heartbeat_stdout;
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

static bool beat_enabled(const struct beat *b) { return b->file || b->udp || b->to_stdout; }

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
    if (b->to_stdout) {
        /* One write per beat, unbuffered: a reader of the pipe sees each beat
         * when it happens. Only idle mode allows it, so no answer batch is
         * ever half-written on stdout when a beat goes out. */
        char line[sizeof msg + 16];
        memcpy(line, "Heartbeat ", 10);
        memcpy(line + 10, msg, (size_t)n);
        ssize_t w = write(STDOUT_FILENO, line, 10 + (size_t)n);
        (void)w;
    }
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
    int rc = ppoll(p, n, tp, &g_wait_mask);
    /* ppoll delivers a pending stop only when it has to wait: with input
     * always ready (a flood) it returns at once and the stop would stay
     * pending for as long as the flood lasts. Unblocking the mask for a
     * moment delivers it to its handler now. */
    sigset_t pending;
    if (rc > 0 && sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))) {
        sigset_t kept;
        if (sigprocmask(SIG_SETMASK, &g_wait_mask, &kept) == 0)
            (void)sigprocmask(SIG_SETMASK, &kept, NULL);
    }
    return rc;
}

/* Publishes the lines appended so far to the fatal-signal handler. */
static inline void out_commit(struct outbuf *o)
{
    /* The line's bytes must be in buf before the handler sees them counted. */
    atomic_signal_fence(memory_order_release);
    o->done = (sig_atomic_t)o->len;
}

static void out_clear(struct outbuf *o)
{
    o->done = 0; /* first: the handler then sees nothing owed */
    o->sent = 0;
    o->len = 0;
}

/* Writes the whole batch; keeps beating while the reader is slow. */
static enum io_status write_batch(struct outbuf *o, struct beat *b, uint64_t processed)
{
    while ((size_t)o->sent < o->len) {
        size_t off = (size_t)o->sent;
        o->writing = 1;
        ssize_t w = write(o->fd, o->buf + off, o->len - off);
        if (w > 0)
            o->sent = (sig_atomic_t)(off + (size_t)w);
        o->writing = 0;
        if (w > 0)
            continue;
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = o->fd, .events = POLLOUT};
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
    if (c->out.len) {
        st = write_batch(&c->out, b, processed);
        out_clear(&c->out);
    }
    if (c->err.len) {
        /* stderr is for the logs; a slow log reader is not worth a beat. */
        enum io_status e = write_batch(&c->err, b, processed);
        (void)e;
        out_clear(&c->err);
    }
    return st;
}

/*
 * Bad input in listen mode: every line is answered on the socket, but the log
 * gets only the first bad line of a burst and then a summary per BAD_LOG_MS,
 * so a flood of garbage cannot flood the container's log. stdin mode keeps
 * the exercise's contract instead: one stderr line per bad reading.
 */
enum bad_kind { BAD_CORRUPTED, BAD_RANGE, BAD_MALFORMED, BAD_KINDS };

struct badlog {
    int64_t window_end; /* 0: quiet, the next bad line is logged at once */
    uint64_t count[BAD_KINDS];
    char last[SHOW_MAX + 96];
    size_t last_len;
};

/* line: the response line, without its '\n'. */
static void bad_note(struct badlog *l, enum bad_kind k, const char *line, size_t len)
{
    if (len > sizeof l->last)
        len = sizeof l->last;
    if (!l->window_end) {
        logf_("warn", "bad input: %.*s", (int)len, line);
        l->window_end = now_ms() + BAD_LOG_MS;
        return;
    }
    l->count[k]++;
    memcpy(l->last, line, len);
    l->last_len = len;
}

/* Closes a window that is due (or any, at the end of a connection). */
static void bad_tick(struct badlog *l, bool final)
{
    if (!l->window_end)
        return;
    int64_t now = now_ms();
    if (now < l->window_end && !final)
        return;
    uint64_t total = l->count[BAD_CORRUPTED] + l->count[BAD_RANGE] + l->count[BAD_MALFORMED];
    if (total) {
        int64_t span = now - (l->window_end - BAD_LOG_MS);
        logf_("warn",
              "%" PRIu64 " more bad input lines in the last %" PRId64 ".%" PRId64 " s (%" PRIu64 " corrupted, %" PRIu64
              " out of range, %" PRIu64 " malformed); last: %.*s",
              total, span / 1000, span % 1000 / 100, l->count[BAD_CORRUPTED], l->count[BAD_RANGE],
              l->count[BAD_MALFORMED], (int)l->last_len, l->last);
        memset(l->count, 0, sizeof l->count);
    }
    /* A window with nothing in it ends the burst: the next bad line is news. */
    l->window_end = total && !final ? now + BAD_LOG_MS : 0;
}

/* The earlier of two poll timeouts, where -1 means never. */
static int sooner(int a, int b) { return a < 0 ? b : b < 0 ? a : a < b ? a : b; }

/* Milliseconds until a window is due (-1: none open). */
static int bad_wait_ms(const struct badlog *l)
{
    if (!l->window_end)
        return -1;
    int64_t d = l->window_end - now_ms();
    return d < 0 ? 0 : (int)d;
}

struct worker {
    const struct config *cfg;
    struct beat beat;
    uint64_t processed;
    struct badlog bad;
};

/* Where an error line goes: the client in listen mode, stderr otherwise. */
static struct outbuf *err_dst(struct conn *c) { return c->echo_errors ? &c->out : &c->err; }

/* The error line just appended at e->buf + at is complete. */
static void err_done(struct worker *w, struct conn *c, struct outbuf *e, size_t at, enum bad_kind k)
{
    out_commit(e);
    if (c->echo_errors)
        bad_note(&w->bad, k, e->buf + at, e->len - at - 1);
}

__attribute__((no_sanitize("undefined"))) static void crash_on_purpose(void)
{
    /* The bug the lab studies: a genuine invalid write, not raise(), so the
     * kernel delivers SIGSEGV exactly as for a real pointer bug. */
    volatile int *volatile p = NULL;
    *p = 999;
}

/* The other bug: a leak that runs away. The cgroup's memory limit makes the
 * kernel's OOM killer end it with SIGKILL (no handler runs; the engine says
 * OOMKilled). Outside a memory-limited container nothing would stop it, so
 * past OOM_GIVE_UP it aborts instead of eating the host. */
#define OOM_CHUNK ((size_t)1 << 20)
#define OOM_GIVE_UP ((size_t)2 << 30)
static void exhaust_memory(void)
{
    for (size_t total = 0; total < OOM_GIVE_UP; total += OOM_CHUNK) {
        char *p = malloc(OOM_CHUNK);
        if (p == NULL)
            break;
        memset(p, 0xab, OOM_CHUNK); /* touched, so the pages are really taken */
    }
    abort();
}

static void bug(const struct config *cfg)
{
    if (cfg->bug_oom)
        exhaust_memory();
    crash_on_purpose();
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

/* ------------------------------------------------------------------------ */
/* The bitflip fault: silent data corruption, switched from outside.        */

/*
 * A memory error, not a crash: while it is on, each result's square has one
 * random bit (of bits 0..62, so it stays a non-negative number and the line
 * stays well-formed: nothing downstream notices) flipped with probability p.
 * labctl's `bitflip` fault writes p into --bitflip-control (a file in the
 * container's own /tmp) and sends SIGUSR1 with kill inside the container, as
 * it sends sigstop; SIGUSR2 turns it off. No capability, nothing from the
 * host; the state lives in this process, so a restart clears it. Nothing is
 * logged while it is on; when it goes off, and at exit while on, one info
 * line gives the count the lab needs for detection coverage:
 * "bitflip: N result(s) flipped while on (p P)".
 */
#define BITFLIP_P_DEFAULT 0.05

static struct {
    bool on;
    double p;
    uint64_t threshold; /* flip when 32 random bits are below it: p * 2^32 */
    uint64_t rng;       /* xorshift64 state, never 0 */
    uint64_t flipped;   /* since it last went on */
} g_flip;

static uint64_t flip_random(void)
{
    uint64_t x = g_flip.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    g_flip.rng = x;
    return x;
}

/* p from the control file; the default when there is none or it is not 0..1. */
static double bitflip_p(const char *path)
{
    if (!path)
        return BITFLIP_P_DEFAULT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return BITFLIP_P_DEFAULT;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return BITFLIP_P_DEFAULT;
    buf[n] = '\0';
    char *end;
    errno = 0;
    double p = strtod(buf, &end);
    if (errno || end == buf || !(p >= 0.0 && p <= 1.0))
        return BITFLIP_P_DEFAULT;
    return p;
}

static void bitflip_report(void)
{
    logf_("info", "bitflip: %" PRIu64 " result(s) flipped while on (p %.4f)", g_flip.flipped, g_flip.p);
}

/* Acts on the last switch signal, from the main loop. */
static void bitflip_switch(const struct config *cfg)
{
    int req = g_bitflip_req;
    g_bitflip_req = 0;
    if (req == 2 && g_flip.on) {
        bitflip_report();
        g_flip.on = false;
    } else if (req == 1) {
        if (!g_flip.on)
            g_flip.flipped = 0;
        if (!g_flip.rng && getrandom(&g_flip.rng, sizeof g_flip.rng, 0) != (ssize_t)sizeof g_flip.rng)
            g_flip.rng = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
        g_flip.rng |= 1;
        g_flip.p = bitflip_p(cfg->bitflip_control);
        g_flip.threshold = (uint64_t)(g_flip.p * 4294967296.0);
        g_flip.on = true;
    }
}

/* The square as sent: with the fault on, now and then one bit flipped. */
static int64_t bitflip_maybe(int64_t sq)
{
    if (!g_flip.on || (flip_random() >> 32) >= g_flip.threshold)
        return sq;
    g_flip.flipped++;
    return sq ^ (INT64_C(1) << (flip_random() % 63));
}

/* Handles one complete line (without its '\n'). May need to flush first. */
static enum io_status handle_line(struct worker *w, struct conn *c, const char *s, size_t len)
{
    if (g_record_fd >= 0) {
        char shown[SHOW_MAX * 4 + 4];
        record_event("line", shown, escape_for_log(shown, s, len));
    }
    if (c->out.len >= OUT_FLUSH_AT || c->err.len >= OUT_FLUSH_AT) {
        enum io_status st = flush_out(c, &w->beat, w->processed);
        if (st != IO_OK)
            return st;
    }
    if (g_bitflip_req)
        bitflip_switch(w->cfg);
    int64_t v = 0;
    enum parse_result r = parse_line(s, len, &v);
    if (r == PARSE_OK && w->cfg->bug_enabled && v == w->cfg->bug_trigger)
        bug(w->cfg);
    /* Every line is formatted straight into its batch, errors as cheaply as
     * results: no snprintf, no write of its own. The flush above leaves room
     * for the longest line. */
    if (r == PARSE_OK && v >= 0 && v <= SQUARE_MAX) {
        char *o = c->out.buf + c->out.len;
        size_t n = fmt_i64(o, v);
        o[n++] = ',';
        n += fmt_i64(o + n, bitflip_maybe(v * v));
        o[n++] = '\n';
        c->out.len += n;
        out_commit(&c->out);
    } else {
        struct outbuf *e = err_dst(c);
        size_t at = e->len;
        char *o = e->buf + at;
        enum bad_kind k;
        if (r == PARSE_OK && v < 0) {
            o = put(o, "ERROR: Corrupted data ", 22);
            o += fmt_i64(o, v);
            k = BAD_CORRUPTED;
        } else if (r == PARSE_OK || r == PARSE_RANGE) {
            o = put(o, "ERROR: Out of range: ", 21);
            o += escape_for_log(o, s, len);
            k = BAD_RANGE;
        } else {
            o = put(o, "ERROR: Malformed input: ", 24);
            o += escape_for_log(o, s, len);
            k = BAD_MALFORMED;
        }
        *o++ = '\n';
        e->len = (size_t)(o - e->buf);
        err_done(w, c, e, at, k);
    }
    w->processed++;
    if (w->cfg->flush_every_line)
        return flush_out(c, &w->beat, w->processed);
    return IO_OK;
}

static enum io_status handle_overlong(struct worker *w, struct conn *c)
{
    record_event("line", c->discard_head, c->discard_head_len);
    char buf[SHOW_MAX * 4 + 96];
    int n = snprintf(buf, sizeof buf, "ERROR: Malformed input: line of %zu bytes: %.*s\n", c->discard_len,
                     (int)c->discard_head_len, c->discard_head);
    if (n < 0)
        return IO_FAILED;
    if (c->out.len >= OUT_FLUSH_AT || c->err.len >= OUT_FLUSH_AT) {
        enum io_status st = flush_out(c, &w->beat, w->processed);
        if (st != IO_OK)
            return st;
    }
    size_t len = (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1);
    struct outbuf *e = err_dst(c);
    size_t at = e->len;
    memcpy(e->buf + at, buf, len);
    e->len += len;
    err_done(w, c, e, at, BAD_MALFORMED);
    w->processed++;
    c->discarding = false;
    c->discard_len = 0;
    return IO_OK;
}

/* --crash-every: the crash comes between lines, once this incarnation has
 * answered N of them, and after those answers are flushed. It is tied to no
 * item's value, so the line that happens to be next must not look guilty:
 * it was never handled, and the next incarnation answers it first. */
static void crash_if_due(struct worker *w, struct conn *c)
{
    if (!w->cfg->crash_every || w->processed < (uint64_t)w->cfg->crash_every)
        return;
    (void)flush_out(c, &w->beat, w->processed);
    logf_("error", "crashing on purpose after %" PRIu64 " lines (--crash-every)", w->processed);
    crash_on_purpose();
}

/* Consumes every complete line in c->in; keeps a partial tail. */
static enum io_status drain_lines(struct worker *w, struct conn *c)
{
    size_t pos = 0;
    while (pos < c->in_len) {
        if (g_stop)
            break;
        crash_if_due(w, c);
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
        if (g_bitflip_req)
            bitflip_switch(w->cfg);
        /* Fast path for the common line, plain digits: no trigger, no
         * error, room in the buffer. Everything else takes handle_line. */
        if (len > 0 && len <= 9 && (c->in[pos] != '0' || len == 1) && c->out.len < OUT_FLUSH_AT &&
            !w->cfg->flush_every_line && g_record_fd < 0) {
            const char *d = c->in + pos;
            uint64_t v = 0;
            size_t k = 0;
            while (k < len && d[k] >= '0' && d[k] <= '9')
                v = v * 10u + (uint64_t)(d[k++] - '0');
            if (k == len && !(w->cfg->bug_enabled && (int64_t)v == w->cfg->bug_trigger)) {
                char *o = c->out.buf + c->out.len;
                memcpy(o, d, len);
                o[len] = ',';
                size_t n = len + 1 + fmt_u64(o + len + 1, (uint64_t)bitflip_maybe((int64_t)(v * v)));
                o[n++] = '\n';
                c->out.len += n;
                out_commit(&c->out);
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
    out_clear(&c->out);
    c->out.fd = out_fd;
    c->in_len = 0;
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
        bad_tick(&w->bad, false);
        if (ensure_in_room(c) != 0) {
            logf_("error", "out of memory for the input buffer");
            return IO_FAILED;
        }
        struct pollfd p[2] = {{.fd = c->in_fd, .events = POLLIN}, {.fd = listen_fd, .events = POLLIN}};
        nfds_t np = listen_fd >= 0 ? 2 : 1;
        int rc;
        if (c->out.len || c->err.len) {
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
        rc = wait_io(p, np, sooner(beat_wait_ms(&w->beat), bad_wait_ms(&w->bad)));
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
            record_text("eof", NULL);
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
        /* What was not sent is lost with the connection; a dying worker must
         * not send it to whatever reuses the descriptor. */
        out_clear(&c->out);
        c->out.fd = -1;
        close(client);
        client = -1;
        bad_tick(&w->bad, true);
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

/* Idle mode: no input to serve; hold the lock and beat until stopped. */
static int run_idle(struct worker *w)
{
    while (!g_stop) {
        int rc = wait_io(NULL, 0, beat_wait_ms(&w->beat));
        if (rc < 0 && errno != EINTR) {
            logf_("error", "ppoll: %s", strerror(errno));
            return EXIT_OSERR;
        }
        beat_maybe(&w->beat, w->processed);
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: worker [--listen HOST:PORT [--serve-forever] | --idle [--heartbeat-stdout]]\n"
          "              [--lock PATH] [--plain-lock] [--mode robust|naive] [--bug-trigger N|none] [--bug-kind segv|oom]\n"
          "              [--heartbeat-ms MS] [--heartbeat-file PATH] [--heartbeat-udp HOST:PORT]\n"
          "              [--flush-every-line] [--record PATH] [--crash-every N] [--start-delay-ms MS]\n"
          "              [--bitflip-control PATH]\n"
          "Reads numbers, one per line, and writes n,n*n for each (stdin to stdout, or\n"
          "over one TCP connection at a time with --listen). --idle reads nothing and\n"
          "only beats; --plain-lock writes the PID alone into the lock file; --record\n"
          "appends what the worker handled and which signals reached it to PATH (or\n"
          "sends it to the abstract unix socket NAME, for PATH @NAME). SIGUSR1 turns the\n"
          "bitflip fault on (p from --bitflip-control PATH, else 0.05), SIGUSR2 off.\n",
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
                                       "--heartbeat-ms", "--bug-trigger", "--bug-kind", "--mode", "--record",
                                       "--crash-every", "--start-delay-ms", "--bitflip-control"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strcmp(a, opts[i]))
            return true;
    return false;
}

/* Returns 0, or an exit code with the message already printed. */
static int parse_args(int argc, const char *const *argv, struct config *cfg)
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
        } else if (!strcmp(a, "--plain-lock")) {
            cfg->plain_lock = true;
            takes = false;
        } else if (!strcmp(a, "--idle")) {
            cfg->idle = true;
            takes = false;
        } else if (!strcmp(a, "--heartbeat-stdout")) {
            cfg->heartbeat_stdout = true;
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
        } else if (!strcmp(a, "--record")) {
            cfg->record = val;
        } else if (!strcmp(a, "--bitflip-control")) {
            cfg->bitflip_control = val;
        } else if (!strcmp(a, "--heartbeat-ms")) {
            if (!parse_long(val, 10, 3600000, &cfg->heartbeat_ms)) {
                fprintf(stderr, "worker: error: --heartbeat-ms wants 10..3600000, got '%s'\n", val);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--crash-every")) {
            if (!parse_long(val, 0, 1000000000, &cfg->crash_every)) {
                fprintf(stderr, "worker: error: --crash-every wants 0..1000000000, got '%s'\n", val);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--start-delay-ms")) {
            if (!parse_long(val, 0, 600000, &cfg->start_delay_ms)) {
                fprintf(stderr, "worker: error: --start-delay-ms wants 0..600000, got '%s'\n", val);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--bug-kind")) {
            if (!strcmp(val, "oom") || !strcmp(val, "segv")) {
                cfg->bug_oom = !strcmp(val, "oom");
            } else {
                fprintf(stderr, "worker: error: --bug-kind wants segv or oom, got '%s'\n", val);
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
    if (cfg->idle && cfg->listen) {
        fprintf(stderr, "worker: error: --idle and --listen exclude each other\n");
        return EXIT_USAGE;
    }
    /* Otherwise stdout carries the answers, and a beat could land inside a
     * batch that a slow reader took only half of. */
    if (cfg->heartbeat_stdout && !cfg->idle) {
        fprintf(stderr, "worker: error: --heartbeat-stdout needs --idle (stdout carries the answers otherwise)\n");
        return EXIT_USAGE;
    }
    return 0;
}

/* The thin builds' defaults (see the top of this file) go before the command
 * line's own arguments, which can therefore override any of them. */
#ifdef WORKER_DEFAULT_ARGS
static const char *const g_default_args[] = {WORKER_DEFAULT_ARGS, NULL};
#else
static const char *const g_default_args[] = {NULL};
#endif

/* argv with the defaults inserted after argv[0]; *out_argc set. NULL if out of memory. */
static const char **with_defaults(int argc, char **argv, int *out_argc)
{
    size_t nd = 0;
    while (g_default_args[nd])
        nd++;
    size_t n = (size_t)argc + nd;
    const char **all = calloc(n + 1, sizeof *all);
    if (!all)
        return NULL;
    all[0] = argv[0];
    for (size_t i = 0; i < nd; i++)
        all[1 + i] = g_default_args[i];
#ifdef WORKER_RECORD_TOKEN
    /* The grader's stand-in runs as built, whatever its caller passes: an
     * option from the program under test (--record PATH, --mode) could
     * otherwise send the token-marked record where that program reads it,
     * or change what the record is evidence of. */
    if (argc > 1)
        fprintf(stderr, "worker: the grader's stand-in takes no options; %d ignored\n", argc - 1);
    argc = 1;
    n = nd + 1;
#endif
    for (int i = 1; i < argc; i++)
        all[nd + (size_t)i] = argv[i];
    *out_argc = (int)n;
    return all;
}

static void make_incarnation(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
    snprintf(g_incarnation, sizeof g_incarnation, "%016" PRIx64, r);
}

/* Connects to the listener of the abstract unix socket `name`: one
 * SOCK_SEQPACKET message per record, kept whole and in order, with flow
 * control instead of loss when the listener falls behind. */
static int connect_record(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof sa.sun_path - 1) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa.sun_path + 1, name, len); /* sun_path[0] == 0: the abstract namespace */
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Opens the flight record (a file, or "@NAME" for a socket); -1 (with the
 * error logged) if it cannot. */
static int open_record(const char *path)
{
#ifdef WORKER_RECORD_TOKEN
    /* The token is the record's only credential: no process of the same user
     * may read it from this one's memory (it is also exec-only on disk). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        logf_("error", "cannot make the recorder undumpable: %s", strerror(errno));
#endif
    bool sock = path[0] == '@';
    int fd = sock ? connect_record(path + 1) : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        logf_("error", "cannot open record %s: %s", path, strerror(errno));
    g_record_sock = sock;
    return fd;
}

static int run_worker(const struct config *cfg);

/* --start-delay-ms: a slow start (loading state, warming a cache) before the
 * worker takes its lock and listens: the repair time scenario-crash-loop
 * varies. A stop may land in it (the wait mask lets SIGTERM in); true then. */
static bool start_delay(long ms)
{
    if (ms <= 0)
        return false;
    logf_("info", "starting slowly: %ld ms before taking the lock (--start-delay-ms)", ms);
    int64_t end = now_ms() + ms;
    for (int64_t left = ms; left > 0 && !g_stop; left = end - now_ms()) {
        struct timespec ts = {.tv_sec = (time_t)(left / 1000), .tv_nsec = (long)(left % 1000) * 1000000L};
        (void)ppoll(NULL, 0, &ts, &g_wait_mask);
    }
    return g_stop != 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    int nargs;
    const char **args = with_defaults(argc, argv, &nargs);
    if (!args) {
        fputs("worker: error: out of memory\n", stderr);
        return EXIT_OSERR;
    }
    int code = parse_args(nargs, args, &cfg);
    if (code == 0 && cfg.record) {
        int fd = open_record(cfg.record);
        if (fd < 0)
            code = EXIT_OSERR;
        g_record_fd = fd;
        record_text("start", cfg.naive ? "naive" : "robust");
    }
    if (code == 0) {
        code = run_worker(&cfg);
        char num[24];
        num[fmt_i64(num, code)] = '\0';
        record_text("exit", num);
    }
    /* The config points into args, so it goes last. */
    free(args);
    return code < 0 ? EXIT_OK : code;
}

/* The worker's life once its options are known; returns the exit code. */
static int run_worker(const struct config *cfgp)
{
    const struct config cfg = *cfgp;
    int code = 0;
    make_incarnation();
    if (install_signals(cfg.naive) != 0) {
        logf_("error", "cannot install signal handlers: %s", strerror(errno));
        return EXIT_OSERR;
    }
    strcpy(g_lock_path, cfg.lock_path);
    if (start_delay(cfg.start_delay_ms))
        return EXIT_OK;
    int lock_fd = cfg.naive ? take_lock_naive(cfg.lock_path, cfg.plain_lock, &code)
                            : take_lock_robust(cfg.lock_path, cfg.plain_lock, &code);
    if (lock_fd < 0) {
        record_text(code == EXIT_LOCKED ? "lock-refused" : "lock-error", cfg.lock_path);
        return code;
    }
    g_own_lock = 1;
    logf_("info", "started, incarnation %s, lock %s%s", g_incarnation, cfg.lock_path,
          cfg.naive ? " (naive)" : "");

    static struct worker w;
    struct conn *c = &g_conn;
    c->out.fd = -1;
    c->err.fd = STDERR_FILENO;
    w.cfg = &cfg;
    if (beat_init(&w.beat, &cfg) != 0) {
        logf_("error", "--heartbeat-udp wants HOST:PORT, got '%s'", cfg.heartbeat_udp);
        unlink(cfg.lock_path);
        return EXIT_USAGE;
    }
    code = cfg.listen ? run_listen(&w, c) : cfg.idle ? run_idle(&w) : run_stdio(&w, c);
    if (g_bitflip_req)
        bitflip_switch(&cfg);
    if (g_flip.on)
        bitflip_report();
    if (beat_enabled(&w.beat))
        beat_now(&w.beat, w.processed, " stopped");
    beat_close(&w.beat);
    free(c->in);
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
