// go-dial ADDR N: a client that dials a new connection for every request
// (net.Dial in dialPerRequest), sends one HTTP request, reads the reply and
// closes first. Prints "done", then stays alive until its stdin closes (the
// tracer symbolizes stacks while the process lives).
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

//go:noinline
func dialPerRequest(addr string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: tcptrace\r\n\r\n"); err != nil {
		return err
	}
	return readReply(conn)
}

// readReply reads until the body "ok\n" has arrived.
func readReply(conn net.Conn) error {
	var got strings.Builder
	buf := make([]byte, 4096)
	for !strings.HasSuffix(got.String(), "\r\n\r\nok\n") {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("reply %q: %w", got.String(), err)
		}
		got.Write(buf[:n])
	}
	return nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-dial ADDR N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-dial: N:", err)
		os.Exit(2)
	}
	for i := 0; i < n; i++ {
		if err := dialPerRequest(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "go-dial:", err)
			os.Exit(1)
		}
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
}
