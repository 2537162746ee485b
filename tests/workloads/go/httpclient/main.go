// go-httpclient URL N: a client that makes a new net/http Client with a
// fresh Transport for every request (httpClientPerRequest), reads the
// whole body and closes the transport's idle connection itself. Prints
// "done", then stays alive until its stdin closes.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

//go:noinline
func httpClientPerRequest(url string) error {
	transport := &http.Transport{}
	client := &http.Client{Transport: transport}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The body was read to EOF: the connection is idle in the pool by now,
	// and this closes it (the client closes first). close(2) itself runs on
	// the Transport's readLoop goroutine, which holds the fd's read lock.
	transport.CloseIdleConnections()
	if err != nil {
		return err
	}
	if string(body) != "ok\n" {
		return fmt.Errorf("unexpected body %q", body)
	}
	return nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-httpclient URL N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-httpclient: N:", err)
		os.Exit(2)
	}
	for i := 0; i < n; i++ {
		if err := httpClientPerRequest(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "go-httpclient:", err)
			os.Exit(1)
		}
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
}
