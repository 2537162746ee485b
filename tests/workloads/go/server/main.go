// go-server ADDR: an HTTP/1.1 server (keep-alive, as net/http serves by
// default) answering "ok\n" to every request. Prints "listening ADDR" once
// it listens and serves until its stdin closes.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-server ADDR")
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-server:", err)
		os.Exit(1)
	}
	fmt.Println("listening", listener.Addr())
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	go http.Serve(listener, handler)
	io.Copy(io.Discard, os.Stdin)
}
