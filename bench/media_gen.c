/* Paced SRTP⇄RTP load generator and sink for bench/media.py (one thread, epoll).
 *
 * N calls; call i has a "phone" side (SRTP, AES_CM_128_HMAC_SHA1_80 via libsrtp2) and a
 * "PBX" side (plain RTP). Every 20 ms each call sends one 172-byte G.711 RTP packet from
 * each side to the relay under test (phone: protected with the phone's key; PBX: plain),
 * calls spread evenly over the 20 one-millisecond slots of a ptime. The payload starts
 * with the send time (CLOCK_REALTIME, ns) and a "measured" flag; the receive time is the
 * kernel's (SO_TIMESTAMPNS), so the sink's own scheduling delay is not counted.
 *
 * Sockets: K per side, call i uses socket sock_of(i) on both sides (the relay latches/sends to
 * them); each tick's packets leave with sendmmsg, receiving is recvmmsg. SSRC 0x1000000+i phone→PBX ("up"), 0x2000000+i PBX→phone ("down") tells calls
 * apart). Protocol with bench/media.py:
 *   argv: N K warmup_ms measure_ms drain_ms
 *   stdout: "phone <K ports>" and "pbx <K ports>"
 *   stdin:  N lines "relay_phone_port relay_pbx_port phone_key_hex relay_key_hex"
 *   stdout: "measure-start", "measure-end", then one JSON line with the results.
 * Build: cc -O2 -o media_gen media_gen.c -lsrtp2   (Debian: apt-get install libsrtp2-dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 1000000LL
#define SLOTS 20
#define PKT 172
#define HIST 1000000 /* 1 µs bins up to 1 s */
#define BATCH 64

typedef struct {
    struct sockaddr_in phone_dst, pbx_dst;
    srtp_t tx, rx;
} call_t;

static int N, K;
static call_t *calls;
static int *fds; /* 0..K-1 phone side, K..2K-1 PBX side */
static uint32_t *hist[2], *lag;
static long long over[2], sent[2], received[2], auth_fail, unknown, send_err, lag_over;

static long long clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int make_socket(int *port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int size = 4 << 20, on = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static void unhex(const char *hex, unsigned char *out, int n) {
    for (int i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
}

static srtp_t session(const char *hex, int outbound) {
    unsigned char key[30];
    unhex(hex, key, 30);
    srtp_policy_t p;
    memset(&p, 0, sizeof p);
    srtp_crypto_policy_set_rtp_default(&p.rtp); /* AES_CM_128_HMAC_SHA1_80 */
    srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    p.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    p.key = key;
    p.window_size = 128;
    srtp_t s;
    if (srtp_create(&s, &p) != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed\n");
        exit(2);
    }
    return s;
}

/* One tick's packets, sent with sendmmsg in runs of the same socket. */
static unsigned char (*out_buf)[PKT + SRTP_MAX_TRAILER_LEN];
static struct mmsghdr *out_msg;
static struct iovec *out_iov;
static int *out_fd, *out_dir;

/* Call i's socket (same index on both sides): contiguous blocks of the calls of a tick, so
 * that one tick's packets leave in long sendmmsg runs. */
static int sock_of(int i) {
    int per_tick = (N + SLOTS - 1) / SLOTS, block = (per_tick + K - 1) / K;
    return (i / SLOTS) / block;
}

static void flush_run(int first, int count, int measured) {
    while (count > 0) {
        int n = sendmmsg(out_fd[first], out_msg + first, (unsigned)(count > 1024 ? 1024 : count), 0);
        if (n <= 0) {
            send_err += count;
            return;
        }
        if (measured)
            for (int m = first; m < first + n; m++) sent[out_dir[m]]++;
        first += n;
        count -= n;
    }
}

static void send_tick(long long tick, int measured) {
    uint32_t k = (uint32_t)(tick / SLOTS);
    int count = 0;
    for (int dir = 0; dir < 2; dir++) {
        for (int i = (int)(tick % SLOTS); i < N; i += SLOTS) {
            unsigned char *buf = out_buf[count];
            uint16_t seq = htons((uint16_t)k);
            uint32_t ts = htonl(k * 160), ssrc = htonl((uint32_t)((dir + 1) << 24 | i));
            buf[0] = 0x80;
            buf[1] = 8;
            memcpy(buf + 2, &seq, 2);
            memcpy(buf + 4, &ts, 4);
            memcpy(buf + 8, &ssrc, 4);
            memset(buf + 12, 0xd5, PKT - 12);
            buf[20] = (unsigned char)measured;
            long long now = clock_ns(CLOCK_REALTIME);
            memcpy(buf + 12, &now, 8);
            int len = PKT;
            if (dir == 0 && srtp_protect(calls[i].tx, buf, &len) != srtp_err_status_ok) {
                send_err++; /* phone → relay is SRTP, PBX → relay plain */
                continue;
            }
            out_iov[count] = (struct iovec){.iov_base = buf, .iov_len = (size_t)len};
            memset(&out_msg[count], 0, sizeof out_msg[count]);
            out_msg[count].msg_hdr.msg_iov = &out_iov[count];
            out_msg[count].msg_hdr.msg_iovlen = 1;
            out_msg[count].msg_hdr.msg_name = dir == 0 ? &calls[i].phone_dst : &calls[i].pbx_dst;
            out_msg[count].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
            out_fd[count] = fds[dir * K + sock_of(i)];
            out_dir[count] = dir;
            count++;
        }
    }
    int first = 0;
    for (int m = 1; m <= count; m++)
        if (m == count || out_fd[m] != out_fd[first]) {
            flush_run(first, m - first, measured);
            first = m;
        }
}

static void receive(int index) {
    static unsigned char bufs[BATCH][2048];
    static char ctrl[BATCH][CMSG_SPACE(sizeof(struct timespec))];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int fd = fds[index], phone = index < K;
    int dir = phone ? 1 : 0; /* what arrives at the phone went "down" */
    for (;;) {
        for (int m = 0; m < BATCH; m++) {
            iov[m].iov_base = bufs[m];
            iov[m].iov_len = sizeof bufs[m];
            memset(&msgs[m].msg_hdr, 0, sizeof msgs[m].msg_hdr);
            msgs[m].msg_hdr.msg_iov = &iov[m];
            msgs[m].msg_hdr.msg_iovlen = 1;
            msgs[m].msg_hdr.msg_control = ctrl[m];
            msgs[m].msg_hdr.msg_controllen = sizeof ctrl[m];
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int m = 0; m < n; m++) {
            unsigned char *buf = bufs[m];
            int len = (int)msgs[m].msg_len;
            long long arrived = 0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[m].msg_hdr); c;
                 c = CMSG_NXTHDR(&msgs[m].msg_hdr, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    arrived = ts.tv_sec * 1000000000LL + ts.tv_nsec;
                }
            if (!arrived) arrived = clock_ns(CLOCK_REALTIME);
            if (len < 12) {
                unknown++;
                continue;
            }
            uint32_t ssrc;
            memcpy(&ssrc, buf + 8, 4);
            ssrc = ntohl(ssrc);
            int i = (int)(ssrc & 0xFFFFFF);
            if ((int)(ssrc >> 24) != dir + 1 || i >= N) {
                unknown++;
                continue;
            }
            if (phone && srtp_unprotect(calls[i].rx, buf, &len) != srtp_err_status_ok) {
                auth_fail++;
                continue;
            }
            if (len < 21) {
                unknown++;
                continue;
            }
            if (!buf[20]) continue; /* warm-up packet */
            long long when;
            memcpy(&when, buf + 12, 8);
            long long us = (arrived - when) / 1000;
            if (us < 0) us = 0;
            if (us < HIST)
                hist[dir][us]++;
            else
                over[dir]++;
            received[dir]++;
        }
    }
}

static long long percentile(const uint32_t *a, const uint32_t *b, long long overflow, double q) {
    long long total = overflow, seen = 0;
    for (int i = 0; i < HIST; i++) total += a[i] + (b ? b[i] : 0);
    if (!total) return -1;
    long long want = (long long)(q * (double)total);
    for (int i = 0; i < HIST; i++) {
        seen += a[i] + (b ? b[i] : 0);
        if (seen > want) return i;
    }
    return HIST;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s N K warmup_ms measure_ms drain_ms\n", argv[0]);
        return 2;
    }
    N = atoi(argv[1]);
    K = atoi(argv[2]);
    long long warmup = atoll(argv[3]), measure = atoll(argv[4]), drain = atoll(argv[5]);
    if (srtp_init() != srtp_err_status_ok) return 2;
    calls = calloc((size_t)N, sizeof *calls);
    fds = calloc((size_t)(2 * K), sizeof *fds);
    for (int d = 0; d < 2; d++) hist[d] = calloc(HIST, sizeof(uint32_t));
    lag = calloc(HIST, sizeof(uint32_t));
    int per_tick = 2 * (N / SLOTS + 1);
    out_buf = calloc((size_t)per_tick, sizeof *out_buf);
    out_msg = calloc((size_t)per_tick, sizeof *out_msg);
    out_iov = calloc((size_t)per_tick, sizeof *out_iov);
    out_fd = calloc((size_t)per_tick, sizeof *out_fd);
    out_dir = calloc((size_t)per_tick, sizeof *out_dir);
    int port;
    printf("phone");
    for (int s = 0; s < K; s++) fds[s] = make_socket(&port), printf(" %d", port);
    printf("\npbx");
    for (int s = 0; s < K; s++) fds[K + s] = make_socket(&port), printf(" %d", port);
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < N; i++) {
        int pp, bp;
        char tx[64], rx[64];
        if (scanf("%d %d %63s %63s", &pp, &bp, tx, rx) != 4 || strlen(tx) != 60 ||
            strlen(rx) != 60) {
            fprintf(stderr, "bad call line %d\n", i);
            return 2;
        }
        calls[i].phone_dst = (struct sockaddr_in){.sin_family = AF_INET,
                                                  .sin_port = htons((uint16_t)pp),
                                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        calls[i].pbx_dst = calls[i].phone_dst;
        calls[i].pbx_dst.sin_port = htons((uint16_t)bp);
        calls[i].tx = session(tx, 1);
        calls[i].rx = session(rx, 0);
    }
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0xFFFFFFFFu};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    for (int s = 0; s < 2 * K; s++) {
        ev.data.u32 = (uint32_t)s;
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[s], &ev);
    }
    long long start = clock_ns(CLOCK_MONOTONIC) + 20 * TICK_NS;
    struct itimerspec spec = {.it_interval = {0, TICK_NS},
                              .it_value = {start / 1000000000LL, start % 1000000000LL}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &spec, NULL);
    long long next = 0, total = warmup + measure, end = -1;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, 20);
        for (int e = 0; e < n; e++) {
            if (evs[e].data.u32 != 0xFFFFFFFFu) {
                receive((int)evs[e].data.u32);
                continue;
            }
            uint64_t expirations;
            if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("read");
            long long now = clock_ns(CLOCK_MONOTONIC);
            while (next < total && start + next * TICK_NS <= now) {
                long long late = (now - (start + next * TICK_NS)) / 1000;
                if (next >= warmup) {
                    if (late < HIST)
                        lag[late]++;
                    else
                        lag_over++;
                }
                if (next == warmup) printf("measure-start\n"), fflush(stdout);
                send_tick(next, next >= warmup);
                next++;
            }
            if (next == total && end < 0) {
                printf("measure-end\n");
                fflush(stdout);
                end = clock_ns(CLOCK_MONOTONIC) + drain * TICK_NS;
            }
        }
        if (end >= 0 && clock_ns(CLOCK_MONOTONIC) >= end) break;
    }
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
                          r0.ru_stime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
                          r0.ru_stime.tv_usec) /
                     1e6;
    printf("{\"sent\": [%lld, %lld], \"received\": [%lld, %lld], \"auth_fail\": %lld, "
           "\"unknown\": %lld, \"send_errors\": %lld, "
           "\"latency_us\": {\"p50\": %lld, \"p99\": %lld, \"max\": %lld}, "
           "\"lag_us\": {\"p50\": %lld, \"p99\": %lld, \"max\": %lld}, \"cpu_s\": %.3f, "
           "\"wall_s\": %.3f}\n",
           sent[0], sent[1], received[0], received[1], auth_fail, unknown, send_err,
           percentile(hist[0], hist[1], over[0] + over[1], 0.50),
           percentile(hist[0], hist[1], over[0] + over[1], 0.99),
           percentile(hist[0], hist[1], over[0] + over[1], 1.0 - 1e-12),
           percentile(lag, NULL, lag_over, 0.50), percentile(lag, NULL, lag_over, 0.99),
           percentile(lag, NULL, lag_over, 1.0 - 1e-12), cpu,
           (double)(clock_ns(CLOCK_MONOTONIC) - start) / 1e9);
    fflush(stdout);
    return 0;
}
