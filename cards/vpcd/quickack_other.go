//go:build !linux

package vpcd

import (
	"io"
	"net"
)

// quickAckConn returns conn: TCP_QUICKACK is Linux-only.
func quickAckConn(conn net.Conn) io.Reader { return conn }
