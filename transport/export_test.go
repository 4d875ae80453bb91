package transport

// Sweep runs the server's sweep at once, at the server's clock: what the
// sweeper does on its own every few seconds.
func (s *Server) Sweep() {
	s.init()
	s.lim.sweep(s.Now())
}
