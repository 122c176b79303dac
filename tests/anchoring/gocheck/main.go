// Command gocheck checks fhir-bridge's notes, checkpoints and proofs with Go's own
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, an implementation written
// independently of ours. It is a test helper: tests/anchoring/test_go_interop.py builds and runs it.
//
// Exit status: 0 the input checked out, 1 it did not (the reason on stderr), 2 bad usage.
//
//	gocheck genkey NAME                        print a new signer key line, then its verifier key line
//	gocheck sign SKEY TEXTFILE                 print the signed note of TEXTFILE's text
//	gocheck open VKEY NOTEFILE                 print the text of a signed note that VKEY signed
//	gocheck checkpoint VKEY NOTEFILE           print "ORIGIN SIZE ROOTHEX" of a signed checkpoint
//	gocheck leafhash FILE                      print tlog.RecordHash of FILE's bytes, in hex
//	gocheck record VKEY PROOFFILE ENTRYFILE    check a c2sp.org/tlog-proof@v1 for the entry
//	gocheck tree VKEY OLDNOTE NEWNOTE PROOFFILE
//	                                           check a consistency proof (one base64 hash a line)
//	                                           between two signed checkpoints
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type usageError string

func (e usageError) Error() string { return string(e) }

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func readFile(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocheck:", err)
		os.Exit(2)
	}
	return data
}

func decodeHash(text string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return h, fmt.Errorf("hash %q: %v", text, err)
	}
	if len(raw) != tlog.HashSize {
		return h, fmt.Errorf("hash %q: %d bytes, want %d", text, len(raw), tlog.HashSize)
	}
	copy(h[:], raw)
	return h, nil
}

func parseSize(text string) (int64, error) {
	if text == "" || (len(text) > 1 && text[0] == '0') || strings.TrimLeft(text, "0123456789") != "" {
		return 0, fmt.Errorf("size %q is not a canonical decimal number", text)
	}
	return strconv.ParseInt(text, 10, 64)
}

func openNote(vkey string, msg []byte) (*note.Note, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return note.Open(msg, note.VerifierList(verifier))
}

// openCheckpoint opens a signed c2sp.org/tlog-checkpoint whose origin is the key's name.
func openCheckpoint(vkey string, msg []byte) (checkpoint, error) {
	var c checkpoint
	n, err := openNote(vkey, msg)
	if err != nil {
		return c, err
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return c, fmt.Errorf("checkpoint has %d lines, want at least 3", len(lines))
	}
	c.origin = lines[0]
	if want := n.Sigs[0].Name; c.origin != want {
		return c, fmt.Errorf("checkpoint origin %q, want %q", c.origin, want)
	}
	if c.size, err = parseSize(lines[1]); err != nil {
		return c, err
	}
	if c.root, err = decodeHash(lines[2]); err != nil {
		return c, err
	}
	return c, nil
}

// checkRecord checks a c2sp.org/tlog-proof@v1 text for the entry's bytes.
func checkRecord(vkey string, proofText, entry []byte) (string, error) {
	head, signed, found := bytes.Cut(proofText, []byte("\n\n"))
	if !found {
		return "", errors.New("tlog-proof: no blank line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return "", fmt.Errorf("tlog-proof: first line %q", lines[0])
	}
	lines = lines[1:]
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return "", errors.New("tlog-proof: no index line")
	}
	index, err := parseSize(strings.TrimPrefix(lines[0], "index "))
	if err != nil {
		return "", err
	}
	var proof tlog.RecordProof
	for _, line := range lines[1:] {
		h, err := decodeHash(line)
		if err != nil {
			return "", err
		}
		proof = append(proof, h)
	}
	c, err := openCheckpoint(vkey, signed)
	if err != nil {
		return "", err
	}
	if err := tlog.CheckRecord(proof, c.size, c.root, index, tlog.RecordHash(entry)); err != nil {
		return "", err
	}
	return fmt.Sprintf("OK index %d size %d", index, c.size), nil
}

func checkTree(vkey string, oldNote, newNote, proofText []byte) (string, error) {
	old, err := openCheckpoint(vkey, oldNote)
	if err != nil {
		return "", fmt.Errorf("old checkpoint: %v", err)
	}
	cur, err := openCheckpoint(vkey, newNote)
	if err != nil {
		return "", fmt.Errorf("new checkpoint: %v", err)
	}
	var proof tlog.TreeProof
	for _, line := range strings.Fields(string(proofText)) {
		h, err := decodeHash(line)
		if err != nil {
			return "", err
		}
		proof = append(proof, h)
	}
	if err := tlog.CheckTree(proof, cur.size, cur.root, old.size, old.root); err != nil {
		return "", err
	}
	return fmt.Sprintf("OK %d -> %d", old.size, cur.size), nil
}

func run(args []string) (string, error) {
	want := map[string]int{"genkey": 1, "sign": 2, "open": 2, "checkpoint": 2, "leafhash": 1, "record": 3, "tree": 4}
	if len(args) == 0 || want[args[0]] == 0 || len(args)-1 != want[args[0]] {
		return "", usageError("usage: gocheck genkey|sign|open|checkpoint|leafhash|record|tree ARGS (see main.go)")
	}
	switch args[0] {
	case "genkey":
		skey, vkey, err := note.GenerateKey(rand.Reader, args[1])
		if err != nil {
			return "", err
		}
		return skey + "\n" + vkey, nil
	case "sign":
		signer, err := note.NewSigner(args[1])
		if err != nil {
			return "", err
		}
		msg, err := note.Sign(&note.Note{Text: string(readFile(args[2]))}, signer)
		return strings.TrimSuffix(string(msg), "\n"), err
	case "open":
		n, err := openNote(args[1], readFile(args[2]))
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(n.Text, "\n"), nil
	case "checkpoint":
		c, err := openCheckpoint(args[1], readFile(args[2]))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %d %x", c.origin, c.size, c.root[:]), nil
	case "leafhash":
		h := tlog.RecordHash(readFile(args[1]))
		return hex.EncodeToString(h[:]), nil
	case "record":
		return checkRecord(args[1], readFile(args[2]), readFile(args[3]))
	default: // "tree"
		return checkTree(args[1], readFile(args[2]), readFile(args[3]), readFile(args[4]))
	}
}

func main() {
	out, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocheck:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
	fmt.Println(out)
}
