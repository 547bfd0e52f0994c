package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// ---- permits as the forge manager writes them ---------------------------------------------------

func clockNow() int64 { return boottimeNow() }

// permitText is the permit the manager writes for a deadline (ns of the guard's clock).
func permitText(deadline int64) string {
	id, _ := readBootID()
	return "boottime " + strconv.FormatInt(deadline, 10) + " " + id + "\n"
}

// writePermit writes a permit as the manager does: a new file renamed into place.
func writePermit(t *testing.T, path string, deadline int64) string {
	t.Helper()
	text := permitText(deadline)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, text)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return text
}

func credentialsIn(t *testing.T, dir string) []string {
	t.Helper()
	creds := []string{filepath.Join(dir, "kes.skey"), filepath.Join(dir, "vrf.skey"), filepath.Join(dir, "node.cert")}
	for _, c := range creds {
		writeFile(t, c, "key")
	}
	return creds
}

func noneLeft(creds []string) func() bool {
	return func() bool {
		for _, c := range creds {
			if exists(c) {
				return false
			}
		}
		return true
	}
}

// ---- item 3: the permit file is the manager's ------------------------------------------------------

func TestGuardNeverWritesThePermitFile(t *testing.T) {
	_, n, creds, permit := guardedNode(t)
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	text := writePermit(t, permit, clockNow()+int64(200*time.Millisecond))
	waitFor(t, "the credentials removed", noneLeft(creds))
	waitFor(t, "the node signalled", func() bool { return n.count("hup") == 1 })
	time.Sleep(100 * time.Millisecond)
	data, err := os.ReadFile(permit)
	if err != nil || string(data) != text {
		t.Fatalf("the guard changed the manager's permit: %q (%v), want %q", data, err, text)
	}
	g.stop(t)
}

// The race of issue 11: the guard reads a passed permit, the manager renews and writes a fresh
// one, then the guard revokes. The fresh permit must survive (and be enforced).
func TestFreshPermitWrittenDuringARevocationIsKept(t *testing.T) {
	dir := t.TempDir()
	permit := filepath.Join(dir, "permit")
	creds := credentialsIn(t, dir)
	writePermit(t, permit, clockNow()-1)
	cfg, err := parseArgs([]string{"--permit-file", permit, "--credentials", strings.Join(creds, ","), "--", "sleep", "5"})
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(cfg)
	passed := readPermit(permit, clockNow(), g.bootID)
	if passed.state != permitExpired {
		t.Fatalf("setup: %v", passed.state)
	}
	fresh := writePermit(t, permit, clockNow()+int64(time.Minute)) // the manager renewed
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	g.node = cmd.Process
	g.revoke(passed, clockNow())
	data, _ := os.ReadFile(permit)
	if string(data) != fresh {
		t.Fatalf("a fresh permit written during the revocation was replaced by %q", data)
	}
	if p := readPermit(permit, clockNow(), g.bootID); p.state != permitValid || g.alreadyRevoked(p) {
		t.Fatalf("the fresh permit is not enforced as a permit of its own: %+v", p)
	}
}

// ---- item 4: CLOCK_BOOTTIME, in a versioned format --------------------------------------------------

func TestPermitFormatNamesItsClockAndBoot(t *testing.T) {
	dir, n, creds, permit := guardedNode(t)
	if _, err := readBootID(); err != nil {
		t.Skip("no boot id on this system")
	}
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 7 /* CLOCK_BOOTTIME */, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		t.Fatal(e)
	}
	writeFile(t, permit, permitText(ts.Nano()+int64(time.Minute)))
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	time.Sleep(100 * time.Millisecond)
	if !exists(creds[0]) {
		t.Fatal("a valid boottime permit was revoked")
	}
	// A bare integer (the old format) must fail closed, not be read as a deadline.
	writeFile(t, permit, strconv.FormatInt(ts.Nano()+int64(time.Hour), 10)+"\n")
	waitFor(t, "an old-format permit revoked", noneLeft(creds))
	// A permit of another boot (a file kept across a reboot) too.
	credentialsIn(t, dir)
	writePermit(t, permit, ts.Nano()+int64(time.Hour))
	time.Sleep(100 * time.Millisecond)
	if !exists(creds[0]) {
		t.Fatal("a valid boottime permit was revoked")
	}
	writeFile(t, permit, "boottime "+strconv.FormatInt(ts.Nano()+int64(time.Hour), 10)+" 00000000-0000-0000-0000-000000000000\n")
	waitFor(t, "another boot's permit revoked", noneLeft(creds))
	g.stop(t)
}

// ---- item 5: removal that fails, temporaries, booting nodes ------------------------------------------

// stuckCredentials makes the VRF key path impossible to unlink (a non-empty directory).
func stuckCredentials(t *testing.T, dir string) []string {
	t.Helper()
	creds := credentialsIn(t, dir)
	if err := os.Remove(creds[1]); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(creds[1], "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	return creds
}

// A credential path that cannot be unlinked must not leave the node forging: the guard stops it.
func TestFailedRemovalStopsTheNode(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	creds := stuckCredentials(t, dir)
	permit := filepath.Join(dir, "permit")
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	writePermit(t, permit, clockNow()+int64(100*time.Millisecond))
	if code := g.exitStatus(t); code != 0 || n.count("term") != 1 {
		t.Fatalf("guard exited %d, want the node stopped by SIGTERM; node events %v", code, n.events())
	}
	if exists(creds[0]) || exists(creds[2]) {
		t.Fatal("the removable credentials were left in place")
	}
}

// A node that does not end on SIGTERM is killed after --kill-after.
func TestNodeIgnoringSIGTERMIsKilled(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, dir)
	creds := stuckCredentials(t, dir)
	permit := filepath.Join(dir, "permit")
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms", "--kill-after", "300ms"}, n.command(0, "--start-as-non-producing-node", "--ignore-term"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	writePermit(t, permit, clockNow()+int64(100*time.Millisecond))
	if code := g.exitStatus(t); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("guard exited %d, want the node killed (137); node events %v", code, n.events())
	}
	if n.count("term-ignored") != 1 {
		t.Fatalf("the node was not sent SIGTERM first: %v", n.events())
	}
}

// A credentials directory the guard may not write (EACCES; EROFS behaves alike): the guard stops
// the node. Root may unlink anywhere, so as root the guard runs as nobody.
func TestReadOnlyCredentialDirectoryStopsTheNode(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, _ := os.Executable()
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "forge-guard.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(run, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	credDir := filepath.Join(dir, "secrets")
	if err := os.Mkdir(credDir, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := credentialsIn(t, credDir)
	if err := os.Chmod(credDir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(credDir, 0o755) })
	n := node{dir: run, log: filepath.Join(run, "node.log"), socket: filepath.Join(run, "node.socket")}
	permit := filepath.Join(run, "permit")
	args := guardArgs(permit, creds, []string{"--interval", "20ms"},
		[]string{bin, "--socket-path", n.socket, "--log", n.log, "--start-as-non-producing-node"})
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "FORGE_GUARD_AS_PROCESS=1", "FORGE_GUARD_FAKE_NODE=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	writePermit(t, permit, clockNow()+int64(100*time.Millisecond))
	if err := os.Chmod(permit, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || n.count("term") != 1 {
			t.Fatalf("guard: %v, node events %v, want the node stopped by SIGTERM\n%s", err, n.events(), stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the node runs on beside credentials that could not be removed\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "permission denied") {
		t.Fatalf("the failure is not named:\n%s", stderr.String())
	}
}

// The manager installs through mkstemp temporaries (".kes.skey.XXXXXXXX") in the credentials
// directory; one left by a crash holds key material.
func TestRevocationRemovesTheManagersTemporaries(t *testing.T) {
	dir, n, creds, permit := guardedNode(t)
	temp := filepath.Join(dir, ".kes.skey.a1b2c3d4")
	writeFile(t, temp, "key material")
	keep := filepath.Join(dir, ".keep.me")
	writeFile(t, keep, "not ours")
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(0, "--start-as-non-producing-node"))...)
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	writePermit(t, permit, clockNow()+int64(100*time.Millisecond))
	waitFor(t, "the credentials removed", noneLeft(creds))
	waitFor(t, "the temporary removed", func() bool { return !exists(temp) })
	if !exists(keep) {
		t.Fatal("an unrelated file was removed")
	}
	g.stop(t)
}

// A SIGHUP before cardano-node installs its handler kills it. A node started non-producing
// cannot forge before it is up, so the guard removes the files and leaves it alone.
func TestBootingNodeIsNotSignalled(t *testing.T) {
	_, n, creds, permit := guardedNode(t)
	writePermit(t, permit, clockNow()+int64(300*time.Millisecond))
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(2*time.Second, "--start-as-non-producing-node"))...)
	waitFor(t, "the node started", func() bool { return n.count("started") == 1 })
	waitFor(t, "the credentials removed", noneLeft(creds))
	waitFor(t, "the node up", func() bool { return n.count("up") == 1 })
	time.Sleep(100 * time.Millisecond)
	if n.count("hup") != 0 {
		t.Fatalf("signalled after it came up, with nothing to disable: %v", n.events())
	}
	if code := g.stop(t); code != 0 {
		t.Fatalf("the node did not survive its boot: exit %d, events %v", code, n.events())
	}
}

// A node started without --start-as-non-producing-node forges as soon as it is up with the keys
// it read at start; a booting one cannot be signalled safely, so it is stopped.
func TestBootingProducingNodeIsStopped(t *testing.T) {
	_, n, creds, permit := guardedNode(t)
	writePermit(t, permit, clockNow()+int64(300*time.Millisecond))
	g := startGuard(t, guardArgs(permit, creds, []string{"--interval", "20ms"}, n.command(5*time.Second))...)
	if code := g.exitStatus(t); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("guard exited %d, want the node stopped with SIGTERM (143)", code)
	}
	if !noneLeft(creds)() {
		t.Fatal("credentials left in place")
	}
}

// guardArgs is forge-guard's command line: its flags, then "--" and the node's command.
func guardArgs(permit string, creds []string, flags []string, node []string) []string {
	args := append([]string{"--permit-file", permit, "--credentials", strings.Join(creds, ",")}, flags...)
	return append(append(args, "--"), node...)
}
