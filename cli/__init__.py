"""The `embed` command line: parses arguments, calls the library, turns errors into exit codes."""
