// A Go client for the BPF backend's tests: Go makes its own system calls,
// so only a cgroup hook can confine it.  It prints "pid N" first, then one
// "local ADDR:PORT" line per connection it made.
//
//	goclient tcp HOST:PORT [COUNT]       connect, send a line, read one back, close; COUNT times
//	goclient udp HOST:PORT [COUNT]       the same over a connected UDP socket (an echo server)
//	goclient hold HOST:PORT[,...] EACH   EACH TCP connections to every address, all open at once
//
// Exit status (sysexits.h): 0 all worked, 77 a call was refused with EPERM
// ("error EPERM" on stdout), 1 any other error, 64 usage.  None of them is
// one that `portfence` itself uses.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	exitError = 1
	exitEPERM = 77
	exitUsage = 64
)

const ioTimeout = 10 * time.Second

func fail(err error) {
	if errors.Is(err, syscall.EPERM) {
		fmt.Println("error EPERM")
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(exitEPERM)
	}
	fmt.Println("error", err)
	os.Exit(exitError)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: goclient tcp|udp HOST:PORT [COUNT] | hold HOST:PORT[,...] EACH")
	os.Exit(exitUsage)
}

// exchange sends a line and waits for one back: the server has then
// seen the connection (TCP greets on accept, UDP echoes).
func exchange(conn net.Conn) error {
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	_, err := conn.Read(buf)
	return err
}

func once(network, address string) {
	conn, err := net.DialTimeout(network, address, ioTimeout)
	if err != nil {
		fail(err)
	}
	fmt.Println("local", conn.LocalAddr().String())
	err = exchange(conn)
	conn.Close()
	if err != nil {
		fail(err)
	}
}

func hold(addresses []string, each int) {
	var open []net.Conn
	for _, address := range addresses {
		for i := 0; i < each; i++ {
			conn, err := net.DialTimeout("tcp", address, ioTimeout)
			if err != nil {
				fail(err)
			}
			// Printed at once: a later failure leaves the ports taken so far.
			fmt.Println("local", conn.LocalAddr().String(), "remote", conn.RemoteAddr().String())
			open = append(open, conn)
		}
	}
	for _, conn := range open {
		conn.Close()
	}
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	count := 1
	if len(os.Args) > 3 {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil || n < 1 {
			usage()
		}
		count = n
	}
	fmt.Println("pid", os.Getpid())
	switch os.Args[1] {
	case "tcp", "udp":
		for i := 0; i < count; i++ {
			once(os.Args[1], os.Args[2])
		}
	case "hold":
		hold(strings.Split(os.Args[2], ","), count)
	default:
		usage()
	}
}
