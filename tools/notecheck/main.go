// Command notecheck verifies a C2SP signed note (a log checkpoint) with Go's reference
// implementation, golang.org/x/mod/sumdb/note, so the PDP's checkpoints are checked by code
// that is not ours. Usage: notecheck VERIFIER_KEY... < note. It prints the verified text and
// exits 0, or prints why and exits 1 (2 for bad usage).
package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: notecheck VERIFIER_KEY... < note")
		os.Exit(2)
	}
	var verifiers []note.Verifier
	for _, key := range os.Args[1:] {
		v, err := note.NewVerifier(key)
		if err != nil {
			fmt.Fprintf(os.Stderr, "notecheck: verifier key %q: %v\n", key, err)
			os.Exit(2)
		}
		verifiers = append(verifiers, v)
	}
	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "notecheck:", err)
		os.Exit(2)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "notecheck:", err)
		os.Exit(1)
	}
	fmt.Print(n.Text)
}
