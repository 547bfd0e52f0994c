// forge-guard is the fence beside cardano-node, in the node's own container.
//
// The forge manager (a sidecar in another container) decides who forges. If it stalls, crashes or
// is frozen while its node holds the credentials, it cannot remove them, and the node would go on
// forging while the lease runs out for everyone else. forge-guard closes that hole, like Patroni's
// watchdog: it runs cardano-node as its child and enforces the manager's *permit*, a file holding
// the CLOCK_MONOTONIC instant (nanoseconds) until which this node may forge. The manager extends it
// on every successful lease renewal; the instant is the manager's own demotion deadline (last
// renewal sent + renew deadline), which is earlier than any other pod may take over.
//
// When the permit has passed, forge-guard removes the credential files and sends SIGHUP to the node
// (a missing file disables forging), then marks the permit revoked. It never creates credentials and
// never extends a permit: it can only move the node towards "not forging".
//
// Usage: forge-guard [flags] -- cardano-node run ...
// Signals SIGTERM, SIGINT, SIGHUP and SIGQUIT are forwarded to the node; forge-guard exits with the
// node's exit status.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

var version = "0.1.0"

type config struct {
	permitFile  string
	credentials []string
	interval    time.Duration
	command     []string
}

func parseArgs(args []string) (config, error) {
	fs := flag.NewFlagSet("forge-guard", flag.ContinueOnError)
	permit := fs.String("permit-file", envOr("FORGE_PERMIT_FILE", "/run/forge/permit"),
		"file with the CLOCK_MONOTONIC deadline (ns) until which this node may forge")
	creds := fs.String("credentials", envOr("FORGE_GUARD_CREDENTIALS",
		"/opt/cardano/secrets/kes.skey,/opt/cardano/secrets/vrf.skey,/opt/cardano/secrets/node.cert"),
		"comma-separated credential files to remove when the permit has passed")
	interval := fs.Duration("interval", 100*time.Millisecond, "how often to check the permit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if *showVersion {
		fmt.Println("forge-guard", version)
		os.Exit(0)
	}
	cfg := config{permitFile: *permit, interval: *interval, command: fs.Args()}
	for _, c := range strings.Split(*creds, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.credentials = append(cfg.credentials, c)
		}
	}
	switch {
	case len(cfg.command) == 0:
		return cfg, errors.New("no command: usage: forge-guard [flags] -- cardano-node run ...")
	case len(cfg.credentials) == 0:
		return cfg, errors.New("--credentials is empty: name the KES key, VRF key and operational certificate")
	case cfg.interval <= 0 || cfg.interval > 5*time.Second:
		return cfg, fmt.Errorf("--interval %s out of range (0, 5s]", cfg.interval)
	}
	return cfg, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// clockMonotonic is CLOCK_MONOTONIC, the clock Python's time.monotonic() reads on Linux; it is
// system-wide, so the manager's and the guard's readings compare across containers of a pod.
const clockMonotonic = 1

func monotonicNow() int64 {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		panic(errno) // cannot happen on Linux
	}
	return ts.Nano()
}

// permitState is what the permit file says.
type permitState int

const (
	permitAbsent  permitState = iota // no permit: the manager never let this node forge (or it has demoted)
	permitValid                      // deadline in the future
	permitExpired                    // deadline passed: revoke
	permitRevoked                    // already revoked by forge-guard
	permitInvalid                    // unreadable: treated like expired (fail closed)
)

const revokedMarker = "revoked"

func readPermit(path string, now int64) (permitState, int64) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return permitAbsent, 0
	}
	if err != nil {
		return permitInvalid, 0
	}
	text := strings.TrimSpace(string(data))
	if text == revokedMarker {
		return permitRevoked, 0
	}
	deadline, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return permitInvalid, 0
	}
	if now < deadline {
		return permitValid, deadline
	}
	return permitExpired, deadline
}

// revoke removes the credentials, signals the node and marks the permit revoked.
func revoke(cfg config, node *os.Process, why string) {
	removed := 0
	for _, c := range cfg.credentials {
		if err := os.Remove(c); err == nil {
			removed++
		} else if !errors.Is(err, os.ErrNotExist) {
			logf("error removing %s: %v", c, err)
		}
	}
	if err := node.Signal(syscall.SIGHUP); err != nil {
		logf("error sending SIGHUP to node pid %d: %v", node.Pid, err)
	}
	markRevoked(cfg.permitFile)
	logf("revoked forging: %s; removed %d credential file(s), sent SIGHUP to pid %d", why, removed, node.Pid)
}

// markRevoked replaces the permit by the revoked marker, so a revocation happens once.
func markRevoked(path string) {
	tmp := path + ".guard"
	if err := os.WriteFile(tmp, []byte(revokedMarker+"\n"), 0o600); err == nil {
		_ = os.Rename(tmp, path)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s forge-guard: %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

func run(cfg config) int {
	cmd := exec.Command(cfg.command[0], cfg.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	// A permit left over from before this container started is void: the node being started now
	// must be enabled by a fresh SIGHUP from the manager anyway.
	// It is revoked here, before the node starts: a SIGHUP sent to a node that has not yet
	// installed its handler would kill it.
	if st, _ := readPermit(cfg.permitFile, monotonicNow()); st == permitExpired || st == permitInvalid {
		for _, c := range cfg.credentials {
			_ = os.Remove(c)
		}
		markRevoked(cfg.permitFile)
		logf("expired permit found at start: credentials removed and permit revoked before starting the node")
	}
	if err := cmd.Start(); err != nil {
		logf("cannot start %s: %v", cfg.command[0], err)
		return 127
	}
	logf("version %s guarding pid %d (%s), permit %s, every %s", version, cmd.Process.Pid, cfg.command[0], cfg.permitFile, cfg.interval)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ticker := time.NewTicker(cfg.interval)
	defer ticker.Stop()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return exit.ExitCode()
			}
			if err != nil {
				return 1
			}
			return 0
		case <-ticker.C:
			now := monotonicNow()
			switch st, deadline := readPermit(cfg.permitFile, now); st {
			case permitExpired:
				revoke(cfg, cmd.Process, fmt.Sprintf("permit passed %d ms ago", (now-deadline)/1e6))
			case permitInvalid:
				revoke(cfg, cmd.Process, "permit file unreadable")
			}
		}
	}
}

func main() {
	cfg, err := parseArgs(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "forge-guard: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(cfg))
}
