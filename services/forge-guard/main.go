// forge-guard is the fence beside cardano-node, in the node's own container.
//
// The forge manager (a sidecar in another container) decides who forges. If it stalls, crashes or
// is frozen while its node holds the credentials, it cannot remove them, and the node would go on
// forging while the lease runs out for everyone else. forge-guard closes that hole, like Patroni's
// watchdog: it runs cardano-node as its child and enforces the manager's *permit*, a file holding
// the instant until which this node may forge. The manager extends it on every successful lease
// renewal; the instant is the manager's own demotion deadline (last renewal sent + renew deadline,
// capped by the pool-wide Lease's), which is earlier than any other pod may take over.
//
// # The permit
//
// One line, "boottime <ns> <boot id>": nanoseconds of CLOCK_BOOTTIME, and the kernel's boot id
// (/proc/sys/kernel/random/boot_id). CLOCK_BOOTTIME is system-wide, so the manager's and the
// guard's readings compare across the containers of a pod, and unlike CLOCK_MONOTONIC it keeps
// counting while the host is suspended: a node resumed after a suspend finds its permit passed,
// as the other pods found its Lease expired. The boot id makes a file kept across a reboot (when
// the clock restarted near zero) invalid instead of valid for as long as the old host ran. Any
// other content is invalid and treated like a passed permit (fail closed): a guard of this
// version beside a manager that writes the older bare CLOCK_MONOTONIC integer, or an older guard
// beside this manager (it cannot parse the new line), revokes every permit, so a mixed pair
// never forges rather than misreading a deadline. The chart installs both from one image.
//
// # Revoking
//
// When the permit has passed (or is invalid), forge-guard removes the credential files and the
// temporaries the manager installs them through (".kes.skey.XXXXXXXX" next to "kes.skey": a
// crash between write and rename leaves one holding key material), then makes sure the node
// stops forging:
//
//   - A node that has answered on its socket (--socket, by default the node's own --socket-path)
//     has installed its SIGHUP handler: it is sent SIGHUP, and with the files gone it disables
//     forging. The guard remembers per node instance that the socket answered, so a node that is
//     up but whose socket stopped answering (hung, overloaded) is still signalled.
//   - A node that has never answered may still be booting, and a SIGHUP before cardano-node
//     installs its handler kills it. Started with --start-as-non-producing-node (or the older
//     --non-producing-node) it cannot be forging: it forges only after an effective SIGHUP,
//     which needs its consensus layer up, and the manager signals it only once its socket
//     answers. So the files are removed and the node is left alone. (It may then fail to boot if
//     it had not read them yet; that ends in "not forging" too, and the container restarts.)
//   - Otherwise (no socket known, or a node started producing, which forges with the keys it read
//     at start as soon as it is up, whatever happens to the files) the node is stopped: SIGTERM,
//     then SIGKILL after --kill-after.
//
// When a removal fails (EACCES, EROFS, a path that cannot be unlinked), the node is stopped the
// same way, and the revocation is retried every tick: a permit counts as revoked only once every
// file is gone.
//
// # The guard never writes the manager's file
//
// It records what it revoked, the permit file's identity (device, inode, change time and a hash
// of its content), in memory and in a marker file of its own (--revoked-file), and acts on each
// passed permit once. The manager writes every permit as a new file renamed into place, and
// rewrites it whenever it installs credentials: credentials installed after a revocation come with
// a new permit, which is enforced again, however close to the revocation it was written. An
// invalid permit is different: it never lets credentials stand, so whenever one appears beside
// it, it is revoked again (a manager of another version, which installs under a permit this guard
// cannot read and does not rewrite it, is fenced within one interval every time).
//
// At start, before the node starts, a passed or invalid permit that was not revoked yet is
// revoked: the files are removed (the node is not running, so nothing is signalled). If that
// fails, the node is not started (exit status 1). The marker survives a container restart (the
// node restarts with the guard), so a permit revoked by an earlier start is not revoked again: the
// credentials the manager provisions for the node's boot are left alone. A permit file left by a
// manager that restarted is the new manager's to withdraw; until then the guard enforces it.
//
// forge-guard never creates credentials and never extends a permit: it can only move the node
// towards "not forging".
//
// Usage: forge-guard [flags] -- cardano-node run ...
// Signals SIGTERM, SIGINT, SIGHUP and SIGQUIT are forwarded to the node; forge-guard exits with the
// node's exit status.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

var version = "0.2.0"

type config struct {
	permitFile  string
	revokedFile string
	credentials []string
	interval    time.Duration
	killAfter   time.Duration
	socket      string // "" when unknown: the node cannot be told up from booting
	command     []string
}

func parseArgs(args []string) (config, error) {
	fs := flag.NewFlagSet("forge-guard", flag.ContinueOnError)
	permit := fs.String("permit-file", envOr("FORGE_PERMIT_FILE", "/run/forge/permit"),
		"the forge manager's permit: 'boottime <ns> <boot id>', the CLOCK_BOOTTIME deadline until which this node may forge")
	revoked := fs.String("revoked-file", "",
		"forge-guard's own record of the permit it revoked (default: the permit file's path + '.revoked')")
	creds := fs.String("credentials", envOr("FORGE_GUARD_CREDENTIALS",
		"/opt/cardano/secrets/kes.skey,/opt/cardano/secrets/vrf.skey,/opt/cardano/secrets/node.cert"),
		"comma-separated credential files to remove when the permit has passed")
	interval := fs.Duration("interval", 100*time.Millisecond, "how often to check the permit")
	killAfter := fs.Duration("kill-after", time.Second,
		"SIGKILL a node that is still running this long after the SIGTERM that stops it; "+
			"interval + kill-after must stay below LEASE_DURATION - LEASE_RENEW_DEADLINE")
	socket := fs.String("socket", "",
		"cardano-node's socket; a node that answered on it is up and may be signalled (default: the node's --socket-path)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if *showVersion {
		fmt.Println("forge-guard", version)
		os.Exit(0)
	}
	cfg := config{permitFile: *permit, revokedFile: *revoked, interval: *interval,
		killAfter: *killAfter, socket: *socket, command: fs.Args()}
	if cfg.revokedFile == "" {
		cfg.revokedFile = cfg.permitFile + ".revoked"
	}
	if cfg.socket == "" {
		cfg.socket = optionValue(cfg.command, "--socket-path")
	}
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
	case cfg.killAfter <= 0 || cfg.killAfter > 10*time.Second:
		return cfg, fmt.Errorf("--kill-after %s out of range (0, 10s]", cfg.killAfter)
	case cfg.revokedFile == cfg.permitFile:
		return cfg, errors.New("--revoked-file must not be the permit file: the guard never writes the manager's file")
	}
	return cfg, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// optionValue is the value of the last "--name value" or "--name=value" in args ("" if none).
func optionValue(args []string, name string) string {
	value := ""
	for i, a := range args {
		if a == name && i+1 < len(args) {
			value = args[i+1]
		} else if v, ok := strings.CutPrefix(a, name+"="); ok {
			value = v
		}
	}
	return value
}

// startedNonProducing: the node boots not forging and forges only once an effective SIGHUP (one
// that arrives after its consensus layer is up) finds the credentials.
func startedNonProducing(command []string) bool {
	for _, a := range command {
		if a == "--start-as-non-producing-node" || a == "--non-producing-node" {
			return true
		}
	}
	return false
}

// clockBoottime is CLOCK_BOOTTIME, the clock the forge manager's deadlines run on
// (forge_manager/clock.py). System-wide like CLOCK_MONOTONIC, but it counts time suspended.
const clockBoottime = 7

func boottimeNow() int64 {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		panic(errno) // CLOCK_BOOTTIME exists since Linux 2.6.39
	}
	return ts.Nano()
}

const bootIDPath = "/proc/sys/kernel/random/boot_id"

func readBootID() (string, error) {
	data, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(data))
	if id == "" {
		return "", fmt.Errorf("%s is empty", bootIDPath)
	}
	return id, nil
}

// permitState is what the permit file says.
type permitState int

const (
	permitAbsent  permitState = iota // no permit: the manager never let this node forge (or it has demoted)
	permitValid                      // deadline in the future
	permitExpired                    // deadline passed: revoke
	permitInvalid                    // unreadable or not understood: treated like expired (fail closed)
)

// permitID tells one permit file from another: the manager writes each as a new file.
type permitID struct {
	dev, ino uint64
	ctime    int64
	sum      [sha256.Size]byte
}

type permit struct {
	state    permitState
	deadline int64
	id       permitID
	problem  string // what makes it invalid
}

const permitFormat = "boottime <ns> <boot id>"

func readPermit(path string, now int64, bootID string) permit {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return permit{state: permitAbsent}
	}
	if err != nil {
		p := permit{state: permitInvalid, problem: err.Error()}
		var st syscall.Stat_t
		if syscall.Lstat(path, &st) == nil {
			p.id = permitID{dev: uint64(st.Dev), ino: uint64(st.Ino), ctime: st.Ctim.Nano()}
		}
		return p
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return permit{state: permitInvalid, problem: err.Error()}
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	p := permit{id: permitID{dev: uint64(st.Dev), ino: uint64(st.Ino), ctime: st.Ctim.Nano(), sum: sha256.Sum256(data)}}
	if err != nil {
		p.state, p.problem = permitInvalid, err.Error()
		return p
	}
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "boottime" {
		p.state, p.problem = permitInvalid, fmt.Sprintf("%q is not %q (a forge manager of another version?)", clip(data), permitFormat)
		return p
	}
	deadline, err := strconv.ParseInt(fields[1], 10, 64)
	switch {
	case err != nil || deadline < 0:
		p.state, p.problem = permitInvalid, fmt.Sprintf("%q: the deadline is not a count of nanoseconds", clip(data))
	case bootID == "":
		p.state, p.problem = permitInvalid, "this host's boot id is unknown, so no permit can be trusted"
	case fields[2] != bootID:
		p.state, p.problem = permitInvalid, fmt.Sprintf("written under another boot (%s, now %s): its clock restarted", fields[2], bootID)
	case now < deadline:
		p.state, p.deadline = permitValid, deadline
	default:
		p.state, p.deadline = permitExpired, deadline
	}
	return p
}

func clip(data []byte) string {
	s := strings.TrimSpace(string(data))
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

func (p permit) describe(now int64) string {
	if p.state == permitInvalid {
		return "permit invalid: " + p.problem
	}
	return fmt.Sprintf("permit passed %d ms ago", (now-p.deadline)/1e6)
}

// ---- the revoked-permit record (forge-guard's own file) ------------------------------------------

func formatRevoked(id permitID) string {
	return fmt.Sprintf("revoked dev=%d ino=%d ctime=%d sha256=%s\n", id.dev, id.ino, id.ctime, hex.EncodeToString(id.sum[:]))
}

func parseRevoked(text string) (permitID, bool) {
	var id permitID
	fields := strings.Fields(text)
	if len(fields) != 5 || fields[0] != "revoked" {
		return id, false
	}
	values := map[string]string{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return id, false
		}
		values[k] = v
	}
	var err1, err2, err3 error
	id.dev, err1 = strconv.ParseUint(values["dev"], 10, 64)
	id.ino, err2 = strconv.ParseUint(values["ino"], 10, 64)
	id.ctime, err3 = strconv.ParseInt(values["ctime"], 10, 64)
	sum, err4 := hex.DecodeString(values["sha256"])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(sum) != sha256.Size {
		return id, false
	}
	copy(id.sum[:], sum)
	return id, true
}

// ---- removal -------------------------------------------------------------------------------------

// removeCredentials unlinks the credential files and the manager's install temporaries next to
// them. It returns how many files it removed and every failure (a missing file is no failure).
func removeCredentials(paths []string) (int, []string) {
	removed := 0
	var failures []string
	remove := func(path string) {
		if err := os.Remove(path); err == nil {
			removed++
		} else if !errors.Is(err, os.ErrNotExist) {
			failures = append(failures, err.Error())
		}
	}
	listed := map[string][]os.DirEntry{}
	for _, c := range paths {
		remove(c)
		dir := filepath.Dir(c)
		entries, seen := listed[dir]
		if !seen {
			var err error
			entries, err = os.ReadDir(dir)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				failures = append(failures, fmt.Sprintf("cannot list %s for install temporaries: %v", dir, err))
			}
			listed[dir] = entries
		}
		prefix := "." + filepath.Base(c) + "." // tempfile.mkstemp(prefix=f".{target.name}.")
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return removed, failures
}

// ---- the guard -----------------------------------------------------------------------------------

type guard struct {
	cfg          config
	bootID       string
	nonProducing bool
	now          func() int64

	node     *os.Process
	answered bool      // this node instance's socket has answered: its SIGHUP handler is installed
	revoked  *permitID // the permit last revoked
	stopping bool
	killC    <-chan time.Time
	problem  string // the last failure logged, so a retry every tick does not flood the log
}

func newGuard(cfg config) *guard {
	g := &guard{cfg: cfg, nonProducing: startedNonProducing(cfg.command), now: boottimeNow}
	id, err := readBootID()
	if err != nil {
		logf("cannot read the boot id (%v): every permit is treated as invalid, the node will not forge", err)
	}
	g.bootID = id
	if data, err := os.ReadFile(cfg.revokedFile); err == nil {
		if rid, ok := parseRevoked(string(data)); ok {
			g.revoked = &rid
		}
	}
	return g
}

func (g *guard) alreadyRevoked(p permit) bool {
	return g.revoked != nil && *g.revoked == p.id
}

// settled: nothing to do about p. A passed permit is revoked once: credentials provisioned
// later under the same file are the manager's start-up credentials (the manager writes a new
// permit before it installs to forge). An invalid permit never lets anything stand: whenever a
// credential appears beside it, it is revoked again (a forge manager of another version
// installing under a permit this guard cannot read is fenced within one interval, every time).
func (g *guard) settled(p permit) bool {
	switch p.state {
	case permitExpired:
		return g.alreadyRevoked(p)
	case permitInvalid:
		return g.alreadyRevoked(p) && !anyPresent(g.cfg.credentials)
	}
	return true
}

func anyPresent(paths []string) bool {
	for _, c := range paths {
		if _, err := os.Lstat(c); err == nil {
			return true
		}
	}
	return false
}

// markRevoked records p as revoked, in memory and in the guard's own file (atomically).
func (g *guard) markRevoked(p permit) {
	g.revoked = &p.id
	tmp := g.cfg.revokedFile + ".tmp"
	err := os.WriteFile(tmp, []byte(formatRevoked(p.id)), 0o600)
	if err == nil {
		err = os.Rename(tmp, g.cfg.revokedFile)
	}
	if err != nil {
		_ = os.Remove(tmp)
		logf("cannot record the revocation in %s (%v): after a restart this permit is revoked again", g.cfg.revokedFile, err)
	}
}

func (g *guard) report(problem string) {
	if problem != g.problem {
		logf("%s", problem)
	}
	g.problem = problem
}

// revokeBeforeStart revokes a passed or invalid permit not revoked yet, before the node runs.
// False: the files could not be removed, and the node must not start.
func (g *guard) revokeBeforeStart() bool {
	now := g.now()
	p := readPermit(g.cfg.permitFile, now, g.bootID)
	if g.settled(p) {
		return true
	}
	removed, failures := removeCredentials(g.cfg.credentials)
	if len(failures) > 0 {
		logf("%s, and the credentials cannot be removed (%s): not starting the node", p.describe(now), strings.Join(failures, "; "))
		return false
	}
	g.markRevoked(p)
	logf("revoked forging before starting the node: %s; removed %d file(s)", p.describe(now), removed)
	return true
}

// probe connects to the node's socket; once it answered, the node counts as up for good.
func (g *guard) probe() bool {
	if g.answered || g.cfg.socket == "" {
		return g.answered
	}
	c, err := net.DialTimeout("unix", g.cfg.socket, 100*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	g.answered = true
	logf("the node answers on %s: it is up, a revocation signals it", g.cfg.socket)
	return true
}

func (g *guard) tick() {
	g.probe()
	now := g.now()
	if p := readPermit(g.cfg.permitFile, now, g.bootID); !g.settled(p) {
		g.revoke(p, now)
	}
}

// revoke removes the credentials and makes sure the node stops forging (see the package comment).
func (g *guard) revoke(p permit, now int64) {
	why := p.describe(now)
	removed, failures := removeCredentials(g.cfg.credentials)
	if len(failures) > 0 {
		g.report(fmt.Sprintf("%s, and the credentials cannot be removed (%s): stopping the node; retrying every %s",
			why, strings.Join(failures, "; "), g.cfg.interval))
		g.stop()
		return
	}
	var action string
	switch {
	case g.probe():
		if err := g.node.Signal(syscall.SIGHUP); err != nil && !errors.Is(err, os.ErrProcessDone) {
			g.report(fmt.Sprintf("%s: cannot send SIGHUP to node pid %d (%v): stopping it", why, g.node.Pid, err))
			g.stop()
			return
		}
		action = fmt.Sprintf("sent SIGHUP to pid %d", g.node.Pid)
	case g.cfg.socket != "" && g.nonProducing:
		action = fmt.Sprintf("pid %d not signalled: its socket has not answered yet (still booting, and a SIGHUP "+
			"would kill it) and it started non-producing, so it cannot forge", g.node.Pid)
	default:
		if g.cfg.socket == "" {
			action = "the node's socket is unknown (give --socket), so it may be booting and cannot be signalled: stopping it"
		} else {
			action = "the node started without --start-as-non-producing-node and has not answered yet: it may " +
				"forge with the keys it read at start and cannot be signalled while booting: stopping it"
		}
		g.stop()
	}
	g.markRevoked(p)
	g.problem = ""
	logf("revoked forging: %s; removed %d file(s); %s", why, removed, action)
}

// stop sends the node SIGTERM once, and SIGKILL after --kill-after.
func (g *guard) stop() {
	if g.stopping {
		return
	}
	g.stopping = true
	if err := g.node.Signal(syscall.SIGTERM); err != nil {
		logf("cannot send SIGTERM to node pid %d: %v", g.node.Pid, err)
	}
	g.killC = time.After(g.cfg.killAfter)
	logf("sent SIGTERM to node pid %d; SIGKILL in %s if it still runs", g.node.Pid, g.cfg.killAfter)
}

func (g *guard) kill() {
	g.killC = nil
	if err := g.node.Signal(syscall.SIGKILL); err == nil {
		logf("node pid %d still ran %s after SIGTERM: sent SIGKILL", g.node.Pid, g.cfg.killAfter)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s forge-guard: %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

func run(cfg config) int {
	g := newGuard(cfg)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	if !g.revokeBeforeStart() {
		return 1
	}
	cmd := exec.Command(cfg.command[0], cfg.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		logf("cannot start %s: %v", cfg.command[0], err)
		return 127
	}
	g.node = cmd.Process
	socket := cfg.socket
	if socket == "" {
		socket = "unknown"
	}
	logf("version %s guarding pid %d (%s), permit %s, every %s, socket %s, non-producing start %t",
		version, cmd.Process.Pid, cfg.command[0], cfg.permitFile, cfg.interval, socket, g.nonProducing)
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
		case <-g.killC:
			g.kill()
		case <-ticker.C:
			g.tick()
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
