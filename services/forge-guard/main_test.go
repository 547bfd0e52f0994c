package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReadPermit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "permit")
	now := monotonicNow()
	if st, _ := readPermit(p, now); st != permitAbsent {
		t.Fatalf("missing file: got %v, want absent", st)
	}
	writeFile(t, p, strconv.FormatInt(now+int64(time.Second), 10)+"\n")
	if st, _ := readPermit(p, now); st != permitValid {
		t.Fatalf("future deadline: got %v, want valid", st)
	}
	if st, _ := readPermit(p, now+int64(2*time.Second)); st != permitExpired {
		t.Fatalf("past deadline: got %v, want expired", st)
	}
	writeFile(t, p, "revoked\n")
	if st, _ := readPermit(p, now); st != permitRevoked {
		t.Fatalf("revoked marker: got %v, want revoked", st)
	}
	writeFile(t, p, "soon")
	if st, _ := readPermit(p, now); st != permitInvalid {
		t.Fatalf("garbage: got %v, want invalid", st)
	}
}

// guardedChild runs forge-guard around a shell that logs every SIGHUP it receives.
func guardedChild(t *testing.T, dir string, creds []string) (stop func() int, hups func() int) {
	t.Helper()
	hupLog := filepath.Join(dir, "hups")
	script := `trap 'echo hup >> "$0"' HUP; trap 'exit 0' TERM; while :; do sleep 0.02; done`
	cfg := config{
		permitFile:  filepath.Join(dir, "permit"),
		credentials: creds,
		interval:    20 * time.Millisecond,
		command:     []string{"sh", "-c", script, hupLog},
	}
	result := make(chan int, 1)
	go func() { result <- run(cfg) }()
	time.Sleep(200 * time.Millisecond) // let the shell install its traps
	return func() int {
			p, _ := os.FindProcess(os.Getpid())
			_ = p.Signal(os.Interrupt) // forwarded to the child
			select {
			case code := <-result:
				return code
			case <-time.After(5 * time.Second):
				t.Fatal("guard did not exit after its child was interrupted")
				return -1
			}
		}, func() int {
			data, _ := os.ReadFile(hupLog)
			return strings.Count(string(data), "hup")
		}
}

func TestExpiredPermitRemovesCredentialsAndSignals(t *testing.T) {
	dir := t.TempDir()
	creds := []string{filepath.Join(dir, "kes.skey"), filepath.Join(dir, "vrf.skey"), filepath.Join(dir, "node.cert")}
	stop, hups := guardedChild(t, dir, creds)
	for _, c := range creds {
		writeFile(t, c, "key")
	}
	writeFile(t, filepath.Join(dir, "permit"), strconv.FormatInt(monotonicNow()+int64(300*time.Millisecond), 10))
	time.Sleep(100 * time.Millisecond)
	for _, c := range creds {
		if _, err := os.Stat(c); err != nil {
			t.Fatalf("credential %s removed while the permit was valid", c)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for hups() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if hups() != 1 {
		t.Fatalf("node got %d SIGHUPs, want 1", hups())
	}
	for _, c := range creds {
		if _, err := os.Stat(c); !os.IsNotExist(err) {
			t.Fatalf("credential %s still present after the permit passed", c)
		}
	}
	if st, _ := readPermit(filepath.Join(dir, "permit"), monotonicNow()); st != permitRevoked {
		t.Fatalf("permit not marked revoked: %v", st)
	}
	time.Sleep(150 * time.Millisecond)
	if hups() != 1 {
		t.Fatalf("a revoked permit was acted on again: %d SIGHUPs", hups())
	}
	stop()
}

func TestAbsentPermitLeavesStartupCredentialsAlone(t *testing.T) {
	dir := t.TempDir()
	creds := []string{filepath.Join(dir, "kes.skey")}
	writeFile(t, creds[0], "key")
	stop, hups := guardedChild(t, dir, creds)
	time.Sleep(150 * time.Millisecond)
	if _, err := os.Stat(creds[0]); err != nil {
		t.Fatal("startup credentials removed without any permit")
	}
	if hups() != 0 {
		t.Fatalf("node signalled without any permit: %d", hups())
	}
	stop()
}

func TestParseArgsRejectsMissingCommand(t *testing.T) {
	if _, err := parseArgs([]string{"--permit-file", "/x"}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Fatalf("want a 'no command' error, got %v", err)
	}
}

func TestExpiredPermitAtStartIsRevokedBeforeTheNodeStarts(t *testing.T) {
	dir := t.TempDir()
	creds := []string{filepath.Join(dir, "kes.skey")}
	writeFile(t, creds[0], "key")
	writeFile(t, filepath.Join(dir, "permit"), strconv.FormatInt(monotonicNow()-int64(time.Second), 10))
	stop, hups := guardedChild(t, dir, creds)
	time.Sleep(150 * time.Millisecond)
	if _, err := os.Stat(creds[0]); !os.IsNotExist(err) {
		t.Fatal("credentials left in place under an expired permit")
	}
	if st, _ := readPermit(filepath.Join(dir, "permit"), monotonicNow()); st != permitRevoked {
		t.Fatalf("permit not marked revoked at start: %v", st)
	}
	if hups() != 0 {
		t.Fatalf("the node was signalled %d times right after it started", hups())
	}
	stop()
}
