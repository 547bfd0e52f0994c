// Command nodeprobe is the test image of the single-node test cluster (make node-up): one static
// binary in a FROM scratch image that the smoke tests run as containers and exec into.
//
// Usage: nodeprobe COMMAND [ARGS...], or a link to it named after the command (the image has
// /hupwait, so that process's comm is "hupwait" and another container can find it by name).
//
//	serve PORT TEXT      answer every HTTP request with "TEXT HOSTNAME"
//	get URL              print the body of an HTTP GET; exit 1 on any error
//	resolve NAME...      resolve through /etc/resolv.conf (search path, ndots); print NAME ADDRS
//	apiversion           GET https://kubernetes.default.svc/version with the mounted token
//	hupwait FILE         append a line to FILE on each SIGHUP; exit 0 on SIGTERM
//	hup COMM             send SIGHUP to every process whose /proc/PID/comm is COMM
//	sleep                wait for SIGTERM
//	id                   print uid, gid, effective capabilities and no_new_privs
//	cat FILE             print a file
//	write FILE TEXT      write TEXT to FILE
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	cmd, args := filepath.Base(os.Args[0]), os.Args[1:]
	if cmd == "nodeprobe" {
		if len(args) == 0 {
			fail("usage: nodeprobe COMMAND [ARGS...]")
		}
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		need(args, 2)
		serve(args[0], args[1])
	case "get":
		need(args, 1)
		get(args[0])
	case "resolve":
		need(args, 1)
		resolve(args)
	case "apiversion":
		apiVersion()
	case "hupwait":
		need(args, 1)
		hupWait(args[0])
	case "hup":
		need(args, 1)
		hup(args[0])
	case "sleep":
		waitTerm()
	case "id":
		id()
	case "cat":
		need(args, 1)
		data, err := os.ReadFile(args[0])
		check(err)
		os.Stdout.Write(data)
	case "write":
		need(args, 2)
		check(os.WriteFile(args[0], []byte(args[1]), 0o644))
	default:
		fail("unknown command " + strconv.Quote(cmd))
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "nodeprobe: "+msg)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func need(args []string, n int) {
	if len(args) < n {
		fail(fmt.Sprintf("needs %d argument(s), got %d", n, len(args)))
	}
}

func waitTerm() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

func serve(port, text string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s %s\n", text, host)
	})
	srv := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		waitTerm()
		srv.Close()
	}()
	fmt.Println("serving on :" + port)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fail(err.Error())
	}
}

func get(url string) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	check(err)
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Sprintf("%s: HTTP %d", url, resp.StatusCode))
	}
	os.Stdout.Write(body)
}

func resolve(names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resolver := &net.Resolver{PreferGo: true}
	for _, name := range names {
		addrs, err := resolver.LookupHost(ctx, name)
		check(err)
		fmt.Printf("%s %s\n", name, strings.Join(addrs, ","))
	}
}

func apiVersion() {
	token, err := os.ReadFile(saDir + "/token")
	check(err)
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	check(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fail("no certificate in " + saDir + "/ca.crt")
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	req, err := http.NewRequest(http.MethodGet, "https://kubernetes.default.svc/version", nil)
	check(err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	check(err)
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body))
	}
	os.Stdout.Write(body)
}

func hupWait(file string) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("waiting for SIGHUP")
	for sig := range ch {
		if sig != syscall.SIGHUP {
			return
		}
		f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		check(err)
		fmt.Fprintf(f, "hup pid=%d at=%d\n", os.Getpid(), time.Now().UnixNano())
		check(f.Close())
		fmt.Println("got SIGHUP")
	}
}

func hup(comm string) {
	entries, err := os.ReadDir("/proc")
	check(err)
	sent := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(data)) != comm {
			continue
		}
		check(syscall.Kill(pid, syscall.SIGHUP))
		fmt.Printf("sent SIGHUP to %d\n", pid)
		sent++
	}
	if sent == 0 {
		fail("no process named " + strconv.Quote(comm))
	}
}

func id() {
	fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	status, err := os.ReadFile("/proc/self/status")
	check(err)
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "CapEff:") || strings.HasPrefix(line, "NoNewPrivs:") {
			fmt.Println(strings.Join(strings.Fields(line), " "))
		}
	}
}
