// The soak's faults, injected and healed as its schedule says.

package faults

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/waywo/embed/internal/proctest"
)

// injected is what became of one planned entry.
type injected struct {
	planned
	started time.Duration // after the soak's start
	err     error         // the fault could not be injected or healed
	note    string        // a reindex's outcome
}

// inject runs the schedule from start: one goroutine per resource, each
// taking its entries in order (a late heal delays its next fault, never
// overlaps it). It returns once every fault is healed.
func (s *soak) inject(start time.Time, plan schedule) []injected {
	byResource := map[string][]planned{}
	var order []string
	for _, p := range plan {
		r := p.resource()
		if _, ok := byResource[r]; !ok {
			order = append(order, r)
		}
		byResource[r] = append(byResource[r], p)
	}
	var (
		mu  sync.Mutex
		out []injected
		wg  sync.WaitGroup
	)
	for _, r := range order {
		wg.Go(func() {
			for _, p := range byResource[r] {
				s.wait(time.Until(start.Add(p.At)))
				in := injected{planned: p, started: time.Since(start)}
				in.note, in.err = s.apply(p)
				if in.err != nil {
					s.t.Errorf("%s: %v", p, in.err)
				}
				mu.Lock()
				out = append(out, in)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// apply injects one fault, waits while it lasts and heals it.
func (s *soak) apply(p planned) (note string, err error) {
	c := s.c
	lasts := func() { s.wait(p.For) }
	switch p.Kind {
	case faultKillWorker:
		c.workers[p.Target].Kill()
		lasts()
		s.restart(func() { c.startWorker(p.Target) })
	case faultTermAPI:
		c.api.Stop(40 * time.Second) // EMBED_SHUTDOWN_TIMEOUT is 20 s
		lasts()
		s.restart(c.startAPI)
	case faultKillNode:
		c.nodes[p.Target].proc.Kill()
		lasts()
		s.restart(func() { c.startNode(p.Target) })
	case faultFullDisk:
		filler, err := fill(s.smallDisk)
		if err != nil {
			return "", err
		}
		lasts()
		if err := os.Remove(filler); err != nil {
			return "", err
		}
	case faultStopOllama:
		s.ollamas[p.Target].Pause()
		lasts()
		s.ollamas[p.Target].Resume()
	case faultLockSQLite:
		return "", s.lockFor(c.dbPath, p.For)
	case runReindex:
		return s.reindex()
	default:
		return "", fmt.Errorf("no such fault %q", p.Kind)
	}
	return "", nil
}

// restart starts a process again, while the watchers do not look.
func (s *soak) restart(start func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start()
}

// fill writes a file under dir until its disk is full and returns its
// path: removing it frees the space.
func fill(dir string) (string, error) {
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path, nil
			}
			return "", err
		}
	}
}

// lockFor holds SQLite's write lock on path for d, as a backend's long
// transaction would.
func (s *soak) lockFor(path string, d time.Duration) error {
	conn, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=30000&_txlock=exclusive")
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.Begin()
	if err != nil {
		return fmt.Errorf("take the write lock: %w", err)
	}
	if _, err := tx.Exec("UPDATE waywo_projects SET title = title WHERE id = 1"); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("take the write lock: %w", err)
	}
	s.wait(d)
	return tx.Commit()
}

// reindex runs `api reindex --all` beside the api, as an operator would,
// and says how it ended; a reindex that fails says why (a fault can make
// it), and is no defect as long as it does.
func (s *soak) reindex() (string, error) {
	s.reindexes++
	env := map[string]string{}
	for k, v := range s.c.apiEnv {
		env[k] = v
	}
	env["EMBED_DATA_DIR"] = filepath.Join(s.c.dir, fmt.Sprintf("reindex-%d", s.reindexes))
	env["EMBED_HTTP_ADDR"] = "127.0.0.1:0"
	p := startProc(s.t, s.c.dir, "api", fmt.Sprintf("reindex-%d", s.reindexes), env, "reindex", "--all")
	code, err := p.Wait(5 * time.Minute)
	if err != nil {
		p.Kill()
		return "", fmt.Errorf("reindex did not end: %w\n%s", err, p.Tail(2000))
	}
	if code != 0 {
		return fmt.Sprintf("failed (exit %d): %s", code, lastLine(p)), nil
	}
	return "ok", nil
}

func lastLine(p *proctest.Process) string {
	tail := p.Tail(600)
	for i := len(tail) - 1; i > 0; i-- {
		if tail[i-1] == '\n' {
			return tail[i:]
		}
	}
	return tail
}
