package vpcd

import (
	"io"
	"net"
	"syscall"
)

// quickAckReader re-arms TCP_QUICKACK before every read: Linux clears it
// after it has acknowledged, and vpcd's split writes otherwise wait up to
// 40 ms for our delayed ACK.
type quickAckReader struct {
	r  io.Reader
	rc syscall.RawConn
}

func (q quickAckReader) Read(p []byte) (int, error) {
	q.rc.Control(func(fd uintptr) {
		// Best effort: a failure only costs latency.
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
	return q.r.Read(p)
}

// quickAckConn returns a reader of conn that sets TCP_QUICKACK before every
// read, or conn itself if it is not a TCP connection.
func quickAckConn(conn net.Conn) io.Reader {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	return quickAckReader{r: conn, rc: rc}
}
