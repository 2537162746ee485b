/* c_client HOST PORT N: a client that connects per request. connect() and
 * close() are called from c_connect_per_request, which is never inlined.
 * Built -O2 -fomit-frame-pointer, as distributions build: no frame
 * pointers, only CFI (.eh_frame). Prints "done", then stays alive until its
 * stdin closes (the tracer symbolizes stacks while the process lives). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: tcptrace\r\n\r\n";
static const char REPLY_END[] = "\r\n\r\nok\n";

__attribute__((noinline)) int c_connect_per_request(const struct sockaddr_in *server)
{
    char reply[4096];
    size_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)server, sizeof *server) != 0
        || write(fd, REQUEST, sizeof REQUEST - 1) != (ssize_t)(sizeof REQUEST - 1)) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        reply[got] = '\0';
        if (got >= sizeof REPLY_END - 1
            && strcmp(reply + got - (sizeof REPLY_END - 1), REPLY_END) == 0)
            break;
    }
    close(fd);
    return got > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in server;
    char byte;
    int n;
    if (argc != 4) {
        fprintf(stderr, "usage: c_client HOST PORT N\n");
        return 2;
    }
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
        fprintf(stderr, "c_client: bad address %s\n", argv[1]);
        return 2;
    }
    n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
        if (c_connect_per_request(&server) != 0) {
            perror("c_client");
            return 1;
        }
    }
    printf("done\n");
    fflush(stdout);
    while (read(0, &byte, 1) > 0) {
    }
    return 0;
}
