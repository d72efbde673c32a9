/* The floor for benches/invoke.py: a minimal HTTP/1.1 keep-alive server that answers every
 * request with its body (200, application/json). One blocking thread per connection.
 * Usage: echo_server PORT (listens on 127.0.0.1; prints "ready" once listening).
 * Build: gcc -O2 -pthread -o echo_server echo_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t content_length(const char *h, size_t n) {
    const char *end = h + n, *line = h;
    while ((line = memchr(line, '\n', (size_t)(end - line))) && ++line < end) {
        if (end - line > 15 && strncasecmp(line, "Content-Length:", 15) == 0)
            return strtoull(line + 15, NULL, 10);
    }
    return 0;
}

static void *serve(void *arg) {
    int fd = (int)(long)arg;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    char head[128];
    for (;;) {
        char *e = NULL;
        size_t from = 0;
        while (!(len >= 4 && (e = memmem(buf + from, len - from, "\r\n\r\n", 4)))) {
            from = len > 3 ? len - 3 : 0;
            if (cap - len < 4096) buf = realloc(buf, cap *= 2);
            ssize_t r = recv(fd, buf + len, cap - len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                goto out;
            }
            len += (size_t)r;
        }
        size_t hlen = (size_t)(e - buf) + 4, n = content_length(buf, hlen);
        while (len < hlen + n) {
            if (cap < hlen + n + 4096) buf = realloc(buf, cap = hlen + n + 4096);
            ssize_t r = recv(fd, buf + len, cap - len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                goto out;
            }
            len += (size_t)r;
        }
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", n);
        /* Status, headers and body in one write (move the head in front of the body). */
        if (hlen >= (size_t)hl) {
            char *p = buf + hlen - hl;
            memcpy(p, head, (size_t)hl);
            if (send_all(fd, p, (size_t)hl + n) < 0) goto out;
        } else if (send_all(fd, head, (size_t)hl) < 0 || send_all(fd, buf + hlen, n) < 0) {
            goto out;
        }
        memmove(buf, buf + hlen + n, len - hlen - n);
        len -= hlen + n;
    }
out:
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: echo_server PORT\n");
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 512) < 0) {
        perror("echo_server: bind/listen");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("echo_server: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, serve, (void *)(long)fd) != 0) close(fd);
        pthread_attr_destroy(&at);
    }
}
