/* c_leak_server HOST N: listens (on an ephemeral port), accepts N
 * connections and reads each to EOF in read_until_eof_and_forget, which
 * returns without closing: the sockets sit in CLOSE_WAIT. The test starts
 * it BEFORE its tracing session. Prints "listening HOST:PORT", "eof PEER fd
 * FD" per connection, "done", then stays alive until its stdin closes.
 * Built -O2 like a distribution binary (no frame pointers). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) int read_until_eof_and_forget(int fd)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
    }
    /* EOF: the peer closed. This code path forgets close(fd). */
    return n == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    char text[INET_ADDRSTRLEN];
    char byte;
    int listener, n;
    if (argc != 3) {
        fprintf(stderr, "usage: c_leak_server HOST N\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "c_leak_server: bad address %s\n", argv[1]);
        return 2;
    }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0
        || listen(listener, 64) != 0
        || getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("c_leak_server");
        return 1;
    }
    printf("listening %s:%u\n", argv[1], ntohs(addr.sin_port));
    fflush(stdout);
    n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept(listener, (struct sockaddr *)&peer, &peer_len);
        if (fd < 0 || read_until_eof_and_forget(fd) != 0) {
            perror("c_leak_server");
            return 1;
        }
        inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
        printf("eof %s:%u fd %d\n", text, ntohs(peer.sin_port), fd);
        fflush(stdout);
    }
    printf("done\n");
    fflush(stdout);
    while (read(0, &byte, 1) > 0) {
    }
    return 0;
}
