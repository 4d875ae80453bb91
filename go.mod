module github.com/pscs/pscs

go 1.26.0

require (
	github.com/ebfe/scard v0.0.0-20241214075232-7af069cabc25
	golang.org/x/term v0.48.0
)

require golang.org/x/sys v0.50.0 // indirect
