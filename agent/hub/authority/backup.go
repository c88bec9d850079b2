package authority

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Backup writes a consistent copy of the database to the writer that open
// returns for the copy's size, in one read transaction: the hub goes on
// serving meanwhile (writers wait for nothing). It returns the bytes
// written.
func (a *Authority) Backup(open func(size int64) io.Writer) (int64, error) {
	n, err := a.store.Backup(open)
	if err != nil {
		return n, fmt.Errorf("back up hub database: %w", err)
	}
	return n, nil
}

// BackupFix is what to do when a backup file is refused.
const BackupFix = "choose another backup (`agent hub check --project DIR FILE` checks one)"

// Restore replaces the project's database with the backup in file. check
// approves file first (nil: CheckDatabase against the project, without
// Consistency). It refuses while another process (a hub) holds the
// database. The database it replaces is kept beside it as
// hub.db.bak-TIMESTAMP, whose path it returns ("" if there was none).
func Restore(p *Project, file string, check func(file string) error) (kept string, err error) {
	if check == nil {
		check = func(file string) error {
			_, err := CheckDatabase(file, CheckOptions{ProjectID: p.ID, Fix: BackupFix})
			return err
		}
	}
	path := DatabasePath(p.Dir)
	unlock, err := lockDatabase(path)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := check(file); err != nil {
		return "", err
	}
	tmp := path + ".restoring"
	if err := copyFile(file, tmp); err != nil {
		return "", fmt.Errorf("restore hub database from %s: %w", file, err)
	}
	defer os.Remove(tmp) // gone after the rename
	if _, err := CheckDatabase(tmp, CheckOptions{ProjectID: p.ID, Fix: "the copy of " + file + " differs from it; try again"}); err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		if kept, err = keepAside(path); err != nil {
			return "", fmt.Errorf("restore hub database: keep the current one: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return kept, fmt.Errorf("restore hub database: %w", err)
	}
	return kept, syncDir(p.Dir)
}

// lockDatabase takes the lock that a hub holds on its open database
// (bbolt's flock), so that no hub runs on it meanwhile; a database that
// does not exist is not locked.
func lockDatabase(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock hub database: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &DatabaseError{Path: path, Problem: "is in use by another process (a hub is running on this project)",
				Fix: "stop it before restoring", Err: ErrDatabaseBusy}
		}
		return nil, fmt.Errorf("lock hub database: %w", err)
	}
	return func() { f.Close() }, nil
}

// keepAside hard-links path to path.bak-TIMESTAMP, so that renaming the
// new database over path leaves no moment without one.
func keepAside(path string) (string, error) {
	base := path + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
	kept := base
	for i := 2; ; i++ {
		err := os.Link(path, kept)
		if err == nil {
			return kept, nil
		}
		if !errors.Is(err, os.ErrExist) || i > 100 {
			return "", err
		}
		kept = fmt.Sprintf("%s-%d", base, i)
	}
}

// copyFile copies src to a new file dst (0600) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	os.Remove(dst) // left by a restore that died
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if err = errors.Join(err, out.Close()); err != nil {
		os.Remove(dst)
	}
	return err
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
