package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	now := boottimeNow()
	const boot = "8c1f0a4e-5b59-4b8e-9d0f-3e1f2a9b7c6d"
	if st := readPermit(p, now, boot).state; st != permitAbsent {
		t.Fatalf("missing file: got %v, want absent", st)
	}
	cases := []struct {
		text string
		want permitState
	}{
		{"boottime 2000 " + boot + "\n", permitValid},
		{"boottime 1000 " + boot + "\n", permitExpired}, // now == deadline: passed
		{"boottime 999 " + boot, permitExpired},
		{"boottime 5000 another-boot\n", permitInvalid},
		{"2000\n", permitInvalid}, // the older bare CLOCK_MONOTONIC integer
		{"monotonic 2000 " + boot, permitInvalid},
		{"boottime -1 " + boot, permitInvalid},
		{"boottime soon " + boot, permitInvalid},
		{"revoked\n", permitInvalid}, // an older guard's marker
		{"", permitInvalid},
	}
	for _, c := range cases {
		writeFile(t, p, c.text)
		if got := readPermit(p, 1000, boot); got.state != c.want {
			t.Errorf("%q: got %v (%s), want %v", c.text, got.state, got.problem, c.want)
		}
	}
	writeFile(t, p, "boottime 2000 "+boot+"\n")
	if got := readPermit(p, 1000, ""); got.state != permitInvalid {
		t.Errorf("unknown boot id: got %v, want invalid", got.state)
	}
}

func TestPermitIdentityTellsFilesApart(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "permit")
	const boot = "b"
	first := writePermitAs(t, p, "boottime 5 b\n")
	if readPermit(p, 1, boot).id != first {
		t.Fatal("the same file read twice has two identities")
	}
	second := writePermitAs(t, p, "boottime 5 b\n") // same content, new file
	if second == first {
		t.Fatal("a permit rewritten with the same deadline looks like the old one")
	}
	id, ok := parseRevoked(formatRevoked(second))
	if !ok || id != second {
		t.Fatalf("the revoked record does not round-trip: %v %v", ok, id)
	}
	for _, bad := range []string{"", "revoked", "revoked dev=1 ino=2 ctime=3 sha256=zz", "x dev=1 ino=2 ctime=3 sha256=00"} {
		if _, ok := parseRevoked(bad); ok {
			t.Errorf("%q parsed as a revoked record", bad)
		}
	}
}

func writePermitAs(t *testing.T, path, text string) permitID {
	t.Helper()
	tmp := path + ".new"
	writeFile(t, tmp, text)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return readPermit(path, 0, "").id
}

func TestParseArgs(t *testing.T) {
	if _, err := parseArgs([]string{"--permit-file", "/x"}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Fatalf("want a 'no command' error, got %v", err)
	}
	cfg, err := parseArgs([]string{"--permit-file", "/run/forge/permit", "--", "cardano-node", "run",
		"--socket-path", "/ipc/node.socket", "--start-as-non-producing-node"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.socket != "/ipc/node.socket" || cfg.revokedFile != "/run/forge/permit.revoked" || cfg.killAfter != time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
	if !startedNonProducing(cfg.command) || startedNonProducing([]string{"cardano-node", "run"}) {
		t.Fatal("the non-producing flag is misread")
	}
	if !startedNonProducing([]string{"cardano-node", "run", "--non-producing-node"}) {
		t.Fatal("the flag's older spelling (8.7.2 to 10.5.0) is not recognised")
	}
	cfg, _ = parseArgs([]string{"--socket", "/s", "--", "n", "--socket-path=/other"})
	if cfg.socket != "/s" {
		t.Fatalf("--socket does not override the node's: %q", cfg.socket)
	}
	if cfg, _ = parseArgs([]string{"--", "n", "--socket-path=/eq"}); cfg.socket != "/eq" {
		t.Fatalf("--socket-path=value: %q", cfg.socket)
	}
	for _, bad := range [][]string{
		{"--kill-after", "0s", "--", "n"},
		{"--kill-after", "1m", "--", "n"},
		{"--interval", "0s", "--", "n"},
		{"--permit-file", "/p", "--revoked-file", "/p", "--", "n"},
		{"--credentials", " , ", "--", "n"},
	} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExpiredPermitRemovesCredentialsAndSignalsTheNodeOnce(t *testing.T) {
	dir, n, creds, permit := guardedNode(t)
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	writePermit(t, permit, clockNow()+int64(300*time.Millisecond))
	time.Sleep(100 * time.Millisecond)
	for _, c := range creds {
		if !exists(c) {
			t.Fatalf("credential %s removed while the permit was valid", c)
		}
	}
	waitFor(t, "the node signalled", func() bool { return n.count("hup") == 1 })
	if !noneLeft(creds)() {
		t.Fatal("credentials still present after the permit passed")
	}
	time.Sleep(150 * time.Millisecond)
	if n.count("hup") != 1 {
		t.Fatalf("a revoked permit was acted on again: %v", n.events())
	}
	// The manager installs again (after a renewal): a new permit, enforced again when it passes.
	credentialsIn(t, dir)
	writePermit(t, permit, clockNow()+int64(200*time.Millisecond))
	waitFor(t, "the node signalled again", func() bool { return n.count("hup") == 2 })
	if !noneLeft(creds)() {
		t.Fatal("credentials installed under a second permit outlived it")
	}
	if code := g.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestAbsentPermitLeavesStartupCredentialsAlone(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	creds := credentialsIn(t, dir)
	g := startGuard(t, guardArgs(filepath.Join(dir, "permit"), creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	time.Sleep(150 * time.Millisecond)
	if !exists(creds[0]) {
		t.Fatal("startup credentials removed without any permit")
	}
	if n.count("hup") != 0 {
		t.Fatalf("node signalled without any permit: %v", n.events())
	}
	g.stop(t)
}

func TestExpiredPermitAtStartIsRevokedBeforeTheNodeStartsAndOnlyOnce(t *testing.T) {
	dir, n, creds, permit := guardedNode(t)
	temp := filepath.Join(dir, ".node.cert.x1y2z3")
	writeFile(t, temp, "key material")
	text := writePermit(t, permit, clockNow()-int64(time.Second))
	args := guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))
	g := startGuard(t, args...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	if !noneLeft(append(creds, temp))() {
		t.Fatal("credentials left in place under an expired permit")
	}
	if data, _ := os.ReadFile(permit); string(data) != text {
		t.Fatalf("the permit was changed: %q", data)
	}
	time.Sleep(100 * time.Millisecond)
	if n.count("hup") != 0 {
		t.Fatalf("the node was signalled right after it started: %v", n.events())
	}
	g.stop(t)

	// The container restarts (the node with it); the manager has provisioned credentials for the
	// node's boot meanwhile. The same permit, already revoked, must not take them away again.
	credentialsIn(t, dir)
	g = startGuard(t, args...)
	waitFor(t, "the node up again", func() bool { return n.count("up") == 2 })
	time.Sleep(100 * time.Millisecond)
	if !exists(creds[0]) || n.count("hup") != 0 {
		t.Fatalf("a permit revoked before the restart was revoked again (credentials present: %t, events %v)",
			exists(creds[0]), n.events())
	}
	g.stop(t)
}

func TestCredentialsThatCannotBeRemovedAtStartKeepTheNodeFromStarting(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	creds := stuckCredentials(t, dir)
	permit := filepath.Join(dir, "permit")
	writePermit(t, permit, clockNow()-1)
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0))...)
	if code := g.exitStatus(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if n.count("started") != 0 {
		t.Fatal("the node was started beside credentials that could not be removed")
	}
}

func TestUpNodeWhoseSocketStoppedAnsweringIsStillSignalled(t *testing.T) {
	_, n, creds, permit := guardedNode(t)
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	time.Sleep(100 * time.Millisecond) // the guard sees it answer
	if err := os.Remove(n.socket); err != nil {
		t.Fatal(err)
	}
	writePermit(t, permit, clockNow()+int64(50*time.Millisecond))
	waitFor(t, "the node signalled", func() bool { return n.count("hup") == 1 })
	if code := g.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestUnknownSocketStopsTheNodeInsteadOfSignalling(t *testing.T) {
	dir := t.TempDir()
	creds := credentialsIn(t, dir)
	permit := filepath.Join(dir, "permit")
	hupLog := filepath.Join(dir, "hups")
	script := `trap 'echo hup >> "$0"' HUP; trap 'echo term >> "$0"; exit 0' TERM; while :; do sleep 0.02; done`
	writePermit(t, permit, clockNow()+int64(300*time.Millisecond))
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"},
		[]string{"sh", "-c", script, hupLog, "--start-as-non-producing-node"})...)
	if code := g.exitStatus(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	data, _ := os.ReadFile(hupLog)
	if strings.TrimSpace(string(data)) != "term" {
		t.Fatalf("node got %q, want one SIGTERM", data)
	}
	if !noneLeft(creds)() {
		t.Fatal("credentials left in place")
	}
}

func TestForwardedSignalsReachTheNode(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	g := startGuard(t, guardArgs(filepath.Join(dir, "permit"), []string{filepath.Join(dir, "kes.skey")}, nil, n.command(0))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Signal(syscall.SIGHUP)
	waitFor(t, "the forwarded SIGHUP", func() bool { return n.count("hup") == 1 })
	if code := g.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A manager of another version installs again under the same permit file, which this guard
// cannot read: each time, the credentials are removed again.
func TestCredentialsReappearingUnderAnInvalidPermitAreRemovedAgain(t *testing.T) {
	dir, n, creds, permit := guardedNode(t)
	writeFile(t, permit, strconv.FormatInt(clockNow()+int64(time.Hour), 10)+"\n") // the old format
	args := guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))
	g := startGuard(t, args...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	if !noneLeft(creds)() {
		t.Fatal("credentials left beside an invalid permit at start")
	}
	for i := 1; i <= 2; i++ {
		credentialsIn(t, dir)
		waitFor(t, "the credentials removed again", noneLeft(creds))
		waitFor(t, "the node signalled", func() bool { return n.count("hup") == i })
	}
	g.stop(t)
	// Restarted beside the same unreadable permit, with credentials present: removed before start.
	credentialsIn(t, dir)
	g = startGuard(t, args...)
	waitFor(t, "the node up again", func() bool { return n.count("up") == 2 })
	if !noneLeft(creds)() {
		t.Fatal("credentials left beside an invalid permit at a restart")
	}
	g.stop(t)
}
