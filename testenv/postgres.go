package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PostgreSQL settings of the seed.
const (
	PostgresPort  = "5432"
	PostgresUser  = "postgres" // both the OS user that runs it and the superuser role
	postgresReady = 30 * time.Second
)

// pgHBA lets local (unix socket) connections in without a password and
// everyone else with one.
const pgHBA = `# written by testenv
local all all trust
host  all all 0.0.0.0/0 scram-sha-256
host  all all ::/0      scram-sha-256
`

// StartPostgres initializes a cluster in <Env.Dir()>/postgres/data (owned by
// the postgres user, superuser "postgres" with password), starts it in the
// Postgres container listening on every address, port 5432, with its unix
// socket in the data directory, and waits until pg_isready says it is
// ready. Stopping it is up to the caller or Close.
func (s *Seed) StartPostgres(password string) (*Process, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup(PostgresUser)
	if err != nil {
		return nil, fmt.Errorf("start postgres: look up user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	root := filepath.Join(s.Env.Dir(), "postgres")
	data := filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	for _, d := range []string{root, data} {
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.initdb(ctx, bin, root, data, password, uid, gid); err != nil {
		return nil, err
	}
	return s.startPostgres(ctx, bin, root, data)
}

// RestartPostgres starts PostgreSQL again on the cluster StartPostgres
// made, after it stopped or was killed (Container.KillAll: it recovers
// from its WAL), and waits until it is ready.
func (s *Seed) RestartPostgres() (*Process, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(s.Env.Dir(), "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.startPostgres(ctx, bin, root, filepath.Join(root, "data"))
}

func (s *Seed) startPostgres(ctx context.Context, bin, root, data string) (*Process, error) {
	ns := s.Postgres.NS
	p, err := ns.Start("postgres", []string{filepath.Join(bin, "postgres"), "-D", data}, ProcOptions{User: PostgresUser, Dir: root})
	if err != nil {
		return nil, err
	}
	if err := waitPostgres(ctx, ns, bin, p); err != nil {
		return nil, errors.Join(err, p.Kill())
	}
	return p, nil
}

// initdb creates the cluster and writes its configuration.
func (s *Seed) initdb(ctx context.Context, bin, root, data, password string, uid, gid int) error {
	pwfile := filepath.Join(root, "pwfile")
	if err := writeOwned(pwfile, password+"\n", 0o600, uid, gid); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer os.Remove(pwfile)
	argv := []string{filepath.Join(bin, "initdb"), "-D", data, "-U", PostgresUser, "--pwfile=" + pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"}
	if _, err := s.Postgres.NS.run(ctx, argv, ProcOptions{User: PostgresUser, Dir: root}); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	// Room for a soak's 100 clients and the probes beside them.
	conf := fmt.Sprintf("\n# written by testenv\nlisten_addresses = '*'\nport = %s\nunix_socket_directories = '%s'\npassword_encryption = 'scram-sha-256'\nmax_connections = 200\n",
		PostgresPort, data)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("configure postgres: %w", err)
	}
	_, werr := f.WriteString(conf)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("configure postgres: %w", err)
	}
	if err := writeOwned(filepath.Join(data, "pg_hba.conf"), pgHBA, 0o600, uid, gid); err != nil {
		return fmt.Errorf("configure postgres: %w", err)
	}
	return nil
}

// writeOwned writes a file owned by uid:gid.
func writeOwned(path, content string, mode os.FileMode, uid, gid int) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", filepath.Base(path), err)
	}
	return nil
}

// waitPostgres polls pg_isready over TCP until the server is ready, it
// exits, or the time is up.
func waitPostgres(ctx context.Context, ns *NS, bin string, p *Process) error {
	ctx, cancel := context.WithTimeout(ctx, postgresReady)
	defer cancel()
	argv := []string{filepath.Join(bin, "pg_isready"), "-q", "-h", SeedPostgresAddr, "-p", PostgresPort, "-t", "1"}
	for {
		out, err := ns.run(ctx, argv, ProcOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("start postgres: exited (%v):\n%s", p.Wait(), tail(p.Output(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("start postgres: not ready after %v: %s\n%s", postgresReady, out, tail(p.Output(), 2000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PostgresBinDir finds the PostgreSQL server binaries: `pg_config --bindir`
// if it has initdb, else the highest version in /usr/lib/postgresql/*/bin
// (Debian's layout).
func PostgresBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var best string
	bestVer := -1.0
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err == nil && v > bestVer {
			best, bestVer = d, v
		}
	}
	if best == "" {
		return "", errors.New("find postgres: no initdb in pg_config --bindir or /usr/lib/postgresql/*/bin")
	}
	return best, nil
}
