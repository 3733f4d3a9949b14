// Command chatguard is a sidecar reverse proxy for a Node.js/Socket.IO chat
// backend. Subcommands: serve (default), check-config, inject, version.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	env := environment{
		args:      os.Args[1:],
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		environ:   os.Environ,
		exit:      os.Exit,
	}
	os.Exit(run(context.Background(), env))
}

// environment is everything run takes from the process, so tests can fake it.
type environment struct {
	args      []string
	stdin     io.Reader // nil reads as empty
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	environ   func() []string // nil: no check of unknown CHATGUARD_ variables
	// exit ends the process at once (a second shutdown signal).
	exit func(int)
}

const usage = `usage: chatguard [serve] [flags]      run the proxy (default)
       chatguard check-config [flags]  validate the configuration, list every problem
       chatguard inject [flags]        add the sidecar to Kubernetes manifests, take it
                                       out (--uninject), or serve it as a webhook (--webhook)
       chatguard version               print version and build information
Run "chatguard serve -h" for the flags; every flag has an environment variable
and a YAML key, listed in the README. "chatguard inject -h" lists inject's flags.
`

// commandNames are run's commands: written after the flags, one is named
// as a misplaced command, not as an unexpected argument.
var commandNames = []string{"serve", "check-config", "inject", "version", "help"}

// run dispatches the subcommand and returns the exit code.
func run(ctx context.Context, env environment) int {
	cmd, args := "serve", env.args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		// No command named: the commands first, then serve's flags (QA:
		// --help printed 70 flags and never said there were commands).
		fmt.Fprint(env.stderr, usage+"\n")
	} else if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		// What every other tool answers to, rather than serve's
		// "flag provided but not defined" after its whole flag list.
		cmd, args = "version", args[1:]
	}
	env.args = args
	switch cmd {
	case "serve":
		return serve(ctx, env)
	case "check-config":
		return checkConfig(env)
	case "inject":
		return injectCmd(ctx, env)
	case "version":
		return version(env)
	case "help":
		fmt.Fprint(env.stdout, usage)
		return 0
	default:
		fmt.Fprintf(env.stderr, "chatguard: unknown command %q\n%s", cmd, usage)
		return 2
	}
}
