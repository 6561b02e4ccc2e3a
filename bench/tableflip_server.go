// tableflip_server.go — the peer of bench/upgrade.lua's mode (b): an HTTP
// server that upgrades itself with cloudflare/tableflip (Debian's
// golang-github-cloudflare-tableflip-dev), written like tableflip's own
// example: SIGHUP starts the next generation, which inherits the listener,
// says Ready (tableflip then writes its pid to -pid-file), and the old one
// shuts its server down (http.Server.Shutdown: idle keep-alive connections
// are closed, active ones finish). -port-file gets the port chosen for
// 127.0.0.1:0 (the listener, and so the port, is inherited by every
// generation).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	pidFile := flag.String("pid-file", "", "where tableflip writes the ready generation's pid")
	portFile := flag.String("port-file", "", "where the port is written")
	flag.Parse()

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Fds.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	body := []byte(fmt.Sprintf("%d\n", os.Getpid()))
	server := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})}
	go func() { _ = server.Serve(ln) }()
	if *portFile != "" {
		port := ln.Addr().(interface{ String() string }).String()
		if err := os.WriteFile(*portFile+".tmp", []byte(port+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(*portFile+".tmp", *portFile); err != nil {
			log.Fatal(err)
		}
	}
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	time.AfterFunc(30*time.Second, func() { os.Exit(1) })
	_ = server.Shutdown(context.Background())
}
