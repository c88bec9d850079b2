package testenv

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSeedPostgres(t *testing.T) {
	t.Parallel()
	if _, err := PostgresBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	e := NewT(t)
	s, err := NewSeed(e)
	if err != nil {
		t.Fatal(err)
	}
	const password = "s3cret 'quoted'"
	p, err := s.StartPostgres(password)
	if err != nil {
		t.Fatal(err)
	}
	if cg, err := procCgroup(p.Pid()); err != nil || cg != relCgroup(t, s.Postgres.Cgroup) {
		t.Errorf("postgres runs in cgroup %q (%v), want %s", cg, err, s.Postgres.Cgroup)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	psql := func(ns *NS, host, pw string) (string, error) {
		out, err := ns.Run(ctx, "env", "PGPASSWORD="+pw, "PGCONNECT_TIMEOUT=2",
			"psql", "-h", host, "-U", "postgres", "-d", "postgres", "-At", "-c", "SELECT 40 + 2")
		return strings.TrimSpace(string(out)), err
	}
	if out, err := psql(s.BankHost, "postgres", password); err != nil || out != "42" {
		t.Errorf("psql from the bank host = %q, %v; want 42", out, err)
	}
	if out, err := psql(s.BankHost, "postgres", "wrong"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Errorf("psql with a wrong password = %q, %v", out, err)
	}
	if out, err := psql(s.App.NS, SeedPostgresAddr, password); err == nil {
		t.Errorf("psql from the app container reached PostgreSQL: %q", out)
	}
	if c, err := s.App.NS.DialTCP(ctx, SeedPostgresAddr+":5432", time.Second); err == nil {
		c.Close()
		t.Error("the app container connected to PostgreSQL")
	}
	dropped(t, s.Internet, SeedBankUp+":5432")
}
