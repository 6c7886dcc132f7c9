// A Go server for herder's cluster mode: it serves on the listening socket herder passes as
// descriptor 3 (socket activation), which every instance shares.
//
//	go build -o server . && herder start herder.toml
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") != "" {
		return net.FileListener(os.NewFile(3, "herder"))
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	return net.Listen("tcp", ":"+port)
}

func main() {
	l, err := listener()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d (instance %s)\n", os.Getpid(), os.Getenv("HERDER_INSTANCE"))
	})}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
		// Stop accepting; requests under way finish.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	if err := server.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
