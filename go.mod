module github.com/pscs/pscs

go 1.26

require github.com/ebfe/scard v0.0.0-20241214075232-7af069cabc25 // indirect
