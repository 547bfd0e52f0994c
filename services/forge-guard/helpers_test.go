package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a cardano-node stand-in (FORGE_GUARD_FAKE_NODE=1) and as a
// forge-guard process of its own (FORGE_GUARD_AS_PROCESS=1, for tests that need another user).
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("FORGE_GUARD_AS_PROCESS") == "1":
		_ = os.Unsetenv("FORGE_GUARD_AS_PROCESS") // its child is the fake node
		cfg, err := parseArgs(os.Args[1:])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(run(cfg))
	case os.Getenv("FORGE_GUARD_FAKE_NODE") == "1":
		os.Exit(fakeNode(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeNode behaves like cardano-node where forge-guard depends on it: until its boot delay has
// passed it has no SIGHUP handler (a SIGHUP kills it, as it kills a cardano-node that has not
// yet installed its handler) and its socket does not answer; then it listens on --socket-path
// and appends "hup" to --log for every SIGHUP. SIGTERM ends it ("term" logged) unless
// --ignore-term. Events go to --log, one word a line.
func fakeNode(args []string) int {
	fs := flag.NewFlagSet("fake-node", flag.ContinueOnError)
	socketPath := fs.String("socket-path", "", "")
	logPath := fs.String("log", "", "")
	boot := fs.Duration("boot", 0, "")
	ignoreTerm := fs.Bool("ignore-term", false, "")
	fs.Bool("start-as-non-producing-node", false, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	event := func(e string) {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
		if err == nil {
			fmt.Fprintln(f, e)
			_ = f.Close()
		}
	}
	event("started")
	time.Sleep(*boot)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	if *socketPath != "" {
		_ = os.Remove(*socketPath)
		l, err := net.Listen("unix", *socketPath)
		if err != nil {
			event("listen-failed")
			return 1
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
	}
	event("up")
	for s := range sigs {
		switch {
		case s == syscall.SIGHUP:
			event("hup")
		case *ignoreTerm && s == syscall.SIGTERM:
			event("term-ignored")
		default:
			event("term")
			return 0
		}
	}
	return 0
}

// node is a fake node's files: its event log and its socket.
type node struct {
	dir    string
	log    string
	socket string
}

func newNode(t *testing.T, dir string) node {
	t.Helper()
	t.Setenv("FORGE_GUARD_FAKE_NODE", "1") // inherited by the guard's child only
	return node{dir: dir, log: filepath.Join(dir, "node.log"), socket: filepath.Join(dir, "node.socket")}
}

// command runs the fake node; extra are more of its flags.
func (n node) command(boot time.Duration, extra ...string) []string {
	exe, _ := os.Executable()
	return append([]string{exe, "--socket-path", n.socket, "--log", n.log, "--boot", boot.String()}, extra...)
}

func (n node) events() []string {
	data, _ := os.ReadFile(n.log)
	return strings.Fields(string(data))
}

func (n node) count(event string) int {
	c := 0
	for _, e := range n.events() {
		if e == event {
			c++
		}
	}
	return c
}

// waitFor polls cond for at most 10 s (behaviour, not speed, is asserted).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// guardRun is a forge-guard running in this process; result yields run's exit status.
type guardRun struct{ result chan int }

func startGuard(t *testing.T, args ...string) guardRun {
	t.Helper()
	cfg, err := parseArgs(args)
	if err != nil {
		t.Fatalf("parseArgs(%q): %v", args, err)
	}
	g := guardRun{result: make(chan int, 1)}
	go func() { g.result <- run(cfg) }()
	return g
}

// exitStatus waits for the guard to end (its node ended) and returns its status.
func (g guardRun) exitStatus(t *testing.T) int {
	t.Helper()
	select {
	case code := <-g.result:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("forge-guard did not exit")
		return -1
	}
}

// stop interrupts the guard (forwarded to the node) and waits for it.
func (g guardRun) stop(t *testing.T) int {
	t.Helper()
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Signal(os.Interrupt)
	return g.exitStatus(t)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// guardedNode is the usual set-up of a test: a directory of its own, a node stand-in, the
// credential files in it and the path of the forge permit (not written).
func guardedNode(t *testing.T) (dir string, n node, creds []string, permit string) {
	t.Helper()
	dir = t.TempDir()
	return dir, newNode(t, dir), credentialsIn(t, dir), filepath.Join(dir, "permit")
}
