package client

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/pscs/pscs/transport"
)

// DefaultConfigPath is where a delegate's configuration file is looked for
// when PSCS_CONFIG is not set: pscs/client.conf in the user's
// configuration directory (~/.config/pscs/client.conf on Linux).
func DefaultConfigPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pscs", "client.conf"), nil
}

// ConfigPath is the configuration file to use: PSCS_CONFIG, or
// DefaultConfigPath.
func ConfigPath() (string, error) {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p, nil
	}
	return DefaultConfigPath()
}

// CacheDir is the directory of the delegate's session tickets and cached
// catalogues: pscs in the user's cache directory (~/.cache/pscs on Linux,
// or $XDG_CACHE_HOME/pscs).
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pscs"), nil
}

// CacheKey names the cache files of one delegate identity on one server:
// tickets and catalogues must never pass from one identity to another (a
// resumed session keeps the identity of the one that made the ticket).
func CacheKey(cfg Config) string {
	h := sha256.New()
	h.Write([]byte(cfg.Addr + "\x00" + cfg.ServerName + "\x00"))
	if len(cfg.Certificate.Certificate) > 0 {
		h.Write(cfg.Certificate.Certificate[0])
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// SessionCacheFor is the FileSessionCache of cfg's identity and server, in
// CacheDir.
func SessionCacheFor(cfg Config) (*FileSessionCache, error) {
	dir, err := CacheDir()
	if err != nil {
		return nil, err
	}
	return NewFileSessionCache(filepath.Join(dir, "tickets-"+CacheKey(cfg))), nil
}

// FileSessionCache is a tls.ClientSessionCache kept in a file, so that a
// new process resumes the last one's TLS session and sends its first
// request as 0-RTT early data. A session ticket lets whoever holds it
// resume the delegate's session: the file is written with mode 0600 in a
// directory of mode 0700, and replaced whole (write and rename), so that
// processes sharing it never read half a file. It keeps the newest ticket
// per server name.
//
// A FileSessionCache is safe for concurrent use.
type FileSessionCache struct {
	path string
	mu   sync.Mutex
}

var _ tls.ClientSessionCache = (*FileSessionCache)(nil)

// NewFileSessionCache keeps tickets in the file at path (created when the
// first ticket arrives).
func NewFileSessionCache(path string) *FileSessionCache {
	return &FileSessionCache{path: path}
}

// ticketFile is the file's content: per cache key, the ticket and the
// serialized session state (tls.SessionState.Bytes).
type ticketFile struct {
	Entries map[string]ticketEntry `cbor:"1,keyasint"`
}

type ticketEntry struct {
	Ticket []byte `cbor:"1,keyasint"`
	State  []byte `cbor:"2,keyasint"`
}

func (c *FileSessionCache) read() ticketFile {
	f := ticketFile{Entries: map[string]ticketEntry{}}
	b, err := os.ReadFile(c.path)
	if err != nil {
		return f
	}
	if err := transport.Unmarshal(b, &f); err != nil || f.Entries == nil {
		return ticketFile{Entries: map[string]ticketEntry{}}
	}
	return f
}

// Get implements tls.ClientSessionCache.
func (c *FileSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.read().Entries[key]
	if !ok {
		return nil, false
	}
	state, err := tls.ParseSessionState(e.State)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(e.Ticket, state)
	if err != nil {
		return nil, false
	}
	return cs, true
}

// Put implements tls.ClientSessionCache; a nil cs removes the key's entry.
func (c *FileSessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.read()
	if cs == nil {
		if _, ok := f.Entries[key]; !ok {
			return
		}
		delete(f.Entries, key)
	} else {
		ticket, state, err := cs.ResumptionState()
		if err != nil || state == nil {
			return
		}
		b, err := state.Bytes()
		if err != nil {
			return
		}
		f.Entries[key] = ticketEntry{Ticket: ticket, State: b}
	}
	c.write(f) // a ticket not kept costs the next process a round trip, nothing else
}

func (c *FileSessionCache) write(f ticketFile) error {
	b, err := transport.Marshal(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tickets-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), c.path)
}
