# python3 client.py HOST PORT N: a client that connects per request
# (socket.create_connection in python_connect_per_request), sends one HTTP
# request, and closes first (python_close_after_reply) once the reply has
# arrived; one request after the other. Prints "done", then stays alive
# until its stdin closes (the tracer symbolizes stacks while it lives).
#
# Python 3.12+ names these functions in a perf map when run with -X perf;
# Debian 12's Python 3.11 cannot, and tcptrace says so.
import socket
import sys


def python_close_after_reply(sock):
    sock.close()


def python_connect_per_request(host, port):
    sock = socket.create_connection((host, port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: tcptrace\r\n\r\n")
    got = b""
    while not got.endswith(b"\r\n\r\nok\n"):
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("python client: the server closed before replying")
        got += chunk
    python_close_after_reply(sock)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: python3 client.py HOST PORT N")
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for _ in range(count):
        python_connect_per_request(host, port)
    print("done", flush=True)
    sys.stdin.read()


main()
