package backup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"time"
)

// ErrNoSTARTTLS: the SMTP server does not offer STARTTLS, so nothing is
// sent (a backup never travels in clear).
var ErrNoSTARTTLS = errors.New("backup: the SMTP server does not offer STARTTLS; nothing sent")

// SMTP sends mail through one server, always over TLS started with
// STARTTLS and with the server's certificate verified.
type SMTP struct {
	Addr string // host:port
	// RootCAs verifies the server's certificate; nil: the system's.
	RootCAs *x509.CertPool
	// ServerName is the name the certificate must hold; empty: Addr's host.
	ServerName string
	// Hello is the name pscsd gives in EHLO; empty: "localhost".
	Hello string
}

// Send sends msg from from to to; ctx bounds the whole exchange.
func (s *SMTP) Send(ctx context.Context, from, to string, msg []byte) (err error) {
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return fmt.Errorf("backup: SMTP address %q: %w", s.Addr, err)
	}
	name := s.ServerName
	if name == "" {
		name = host
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("backup: SMTP: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, name)
	if err != nil {
		conn.Close()
		return fmt.Errorf("backup: SMTP %s: %w", s.Addr, err)
	}
	defer c.Close()
	hello := s.Hello
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return fmt.Errorf("backup: SMTP %s: EHLO: %w", s.Addr, err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return ErrNoSTARTTLS
	}
	if err := c.StartTLS(&tls.Config{ServerName: name, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12}); err != nil {
		return fmt.Errorf("backup: SMTP %s: STARTTLS: %w", s.Addr, err)
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("backup: SMTP %s: MAIL FROM: %w", s.Addr, err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("backup: SMTP %s: RCPT TO %s: %w", s.Addr, to, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("backup: SMTP %s: DATA: %w", s.Addr, err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("backup: SMTP %s: %w", s.Addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("backup: SMTP %s: the message was not accepted: %w", s.Addr, err)
	}
	return c.Quit()
}
