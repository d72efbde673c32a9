/* A `provided` runtime (bootstrap) that echoes every event, for benches/invoke.py.
 *
 * Talks to the Runtime API at $AWS_LAMBDA_RUNTIME_API over one keep-alive HTTP/1.1 connection:
 * GET /2018-06-01/runtime/invocation/next, then POST .../invocation/<id>/response with the event
 * as the body. Build: gcc -static -O2 -o bootstrap echo_runtime.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static char host[256], port[16];
static int fd = -1;
static char *buf; /* bytes received and not yet consumed: buf[0..len) */
static size_t len, cap;

static void die(const char *what) {
    fprintf(stderr, "echo_runtime: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void connect_api(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port))};
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &a.sin_addr) != 1) {
        errno = EINVAL;
        die("AWS_LAMBDA_RUNTIME_API is not an IPv4 address and port");
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    len = 0;
}

static void send_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Reads more bytes into buf; exits when the API closes the connection. */
static void fill(void) {
    if (cap - len < 4096) {
        cap = cap ? cap * 2 : 65536;
        buf = realloc(buf, cap);
        if (!buf) die("realloc");
    }
    ssize_t r;
    do r = recv(fd, buf + len, cap - len, 0); while (r < 0 && errno == EINTR);
    if (r < 0) die("recv");
    if (r == 0) {
        errno = ECONNRESET;
        die("runtime API closed the connection");
    }
    len += (size_t)r;
}

/* Value of header `name` in the head [h, h+n), copied into out (NUL-terminated), or -1. */
static int header(const char *h, size_t n, const char *name, char *out, size_t outcap) {
    size_t nl = strlen(name);
    const char *end = h + n, *line = memchr(h, '\n', n); /* skip the status line */
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            size_t vl = (size_t)(ve - v);
            if (vl >= outcap) return -1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 0;
        }
        line = eol;
    }
    return -1;
}

/* Reads one response: its head (status, request id) and body. The body stays in buf[*off..). */
static int read_response(char *reqid, size_t idcap, size_t *off, size_t *blen) {
    char *e;
    size_t scanned = 0;
    for (;;) {
        if (len >= 4 && (e = memmem(buf + (scanned > 3 ? scanned - 3 : 0), len - (scanned > 3 ? scanned - 3 : 0), "\r\n\r\n", 4)))
            break;
        scanned = len;
        fill();
    }
    size_t hlen = (size_t)(e - buf) + 4;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        errno = EPROTO;
        die("bad status line");
    }
    char cl[32];
    size_t n = 0;
    if (header(buf, hlen, "Content-Length", cl, sizeof cl) == 0) n = strtoull(cl, NULL, 10);
    if (reqid && header(buf, hlen, "Lambda-Runtime-Aws-Request-Id", reqid, idcap) != 0) reqid[0] = 0;
    while (len < hlen + n) fill();
    *off = hlen;
    *blen = n;
    return status;
}

static void consume(size_t n) {
    memmove(buf, buf + n, len - n);
    len -= n;
}

int main(void) {
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    if (!api) {
        errno = EINVAL;
        die("AWS_LAMBDA_RUNTIME_API is not set");
    }
    const char *colon = strrchr(api, ':');
    if (!colon || (size_t)(colon - api) >= sizeof host || strlen(colon + 1) >= sizeof port) {
        errno = EINVAL;
        die("bad AWS_LAMBDA_RUNTIME_API");
    }
    memcpy(host, api, (size_t)(colon - api));
    strcpy(port, colon + 1);
    connect_api();

    static const char next[] =
        "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: runtime\r\n\r\n";
    char id[256], head[512];
    for (;;) {
        send_all(next, sizeof next - 1);
        size_t off, n;
        int st = read_response(id, sizeof id, &off, &n);
        if (st != 200 || !id[0]) {
            errno = EPROTO;
            die("/next did not return an event");
        }
        int hl = snprintf(head, sizeof head,
                          "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
                          "Host: runtime\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          id, n);
        if (hl < 0 || (size_t)hl >= sizeof head) {
            errno = EOVERFLOW;
            die("request id too long");
        }
        /* Head and body in one write when small, so the API reads them together. */
        if (n <= 16384) {
            static char out[512 + 16384];
            memcpy(out, head, (size_t)hl);
            memcpy(out + hl, buf + off, n);
            send_all(out, (size_t)hl + n);
        } else {
            send_all(head, (size_t)hl);
            send_all(buf + off, n);
        }
        consume(off + n);
        st = read_response(NULL, 0, &off, &n);
        if (st != 202) {
            errno = EPROTO;
            die("the response was not accepted");
        }
        consume(off + n);
    }
}
