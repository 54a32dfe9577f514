package main

import (
	"errors"
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// upFlag is one flag of `vnic up`, as its flag set prints it.
type upFlag struct {
	name string
	def  string // the default PrintDefaults states, "" when it states none
}

// upFlags returns the flags of `vnic up` from parseUp's own flag set: the
// list `vnic up -h` prints to standard error, which it points at a file
// for the call (so no test that calls it may run in parallel).
func upFlags(t *testing.T) []upFlag {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "up-h")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stderr := os.Stderr
	os.Stderr = f
	_, err = parseUp([]string{"-h"})
	os.Stderr = stderr
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("vnic up -h: %v, want flag.ErrHelp", err)
	}
	out, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	// PrintDefaults: "  -name type" then "    \tusage (default X)".
	flagLine := regexp.MustCompile(`^  -([a-z][a-z0-9-]*)`)
	defaultOf := regexp.MustCompile(`\(default (?:"([^"]*)"|([^:)][^)]*))\)$`)
	var flags []upFlag
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, upFlag{name: m[1]})
		} else if m := defaultOf.FindStringSubmatch(line); m != nil && len(flags) > 0 {
			flags[len(flags)-1].def = m[1] + m[2]
		}
	}
	if len(flags) < 10 {
		t.Fatalf("vnic up -h lists %d flags; could not read its output:\n%s", len(flags), out)
	}
	return flags
}

// usageCommands returns the commands the usage text lists ("sa add",
// "stats", ...) and its options ("--socket", ...).
func usageCommands(t *testing.T) (commands, options []string) {
	t.Helper()
	section := ""
	for _, line := range strings.Split(usage, "\n") {
		switch {
		case strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " "):
			section = line
		case !strings.HasPrefix(line, "  ") || strings.HasPrefix(line, "   "):
			// not an entry, or an entry's second line
		case strings.HasPrefix(section, "commands"):
			var words []string
			for _, w := range strings.Fields(strings.SplitN(line[2:], "  ", 2)[0]) {
				if !commandWord.MatchString(w) {
					break
				}
				words = append(words, w)
			}
			commands = append(commands, strings.Join(words, " "))
		case strings.HasPrefix(section, "options"):
			options = append(options, strings.Fields(line)[0])
		}
	}
	if len(commands) < 8 || len(options) < 3 {
		t.Fatalf("read %q and %q from the usage text; could it change shape?", commands, options)
	}
	return commands, options
}

// manEntry is one tagged paragraph (.TP) of the man page.
type manEntry struct {
	section string // the .SH it is under
	tag     string // the tag line, as text
	body    string // the paragraph, as text
}

var (
	// roffEscapes strips the font changes and escapes this man page uses.
	roffEscapes = strings.NewReplacer(`\fB`, "", `\fI`, "", `\fR`, "", `\fP`, "", `\-`, "-", `\e`, `\`, `\&`, "", `\(aq`, "'")
	// roffArg is one argument of a macro: a quoted string or a word.
	roffArg = regexp.MustCompile(`"[^"]*"|[^ "]+`)
	// commandWord is a word of a command's name, like sa or request-delete.
	commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)
)

// roffText is the text a line of the man page shows: a macro's arguments
// joined as it joins them (.BR and the other two-font macros without
// spaces), or a text line, less its font changes and escapes.
func roffText(line string) string {
	macro, rest, _ := strings.Cut(line, " ")
	if !strings.HasPrefix(line, ".") {
		rest = line
	} else {
		sep := " "
		if len(macro) == 3 && strings.ContainsRune("BIR", rune(macro[1])) && strings.ContainsRune("BIR", rune(macro[2])) {
			sep = ""
		}
		args := roffArg.FindAllString(rest, -1)
		for i, a := range args {
			args[i] = strings.Trim(a, `"`)
		}
		rest = strings.Join(args, sep)
	}
	return strings.TrimSpace(roffEscapes.Replace(rest))
}

// manEntries reads the .TP entries of docs/vnic.8.
func manEntries(t *testing.T) []manEntry {
	t.Helper()
	src, err := os.ReadFile("../../docs/vnic.8")
	if err != nil {
		t.Fatalf("the man page: %v", err)
	}
	var (
		entries []manEntry
		section string
		cur     *manEntry
		wantTag bool
	)
	for _, line := range strings.Split(string(src), "\n") {
		macro, _, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(line, ".") {
			macro = ""
		}
		text := roffText(line)
		switch {
		case macro == `.\"`:
		case macro == ".SH":
			section, cur = text, nil
		case macro == ".TP":
			entries = append(entries, manEntry{section: section})
			cur, wantTag = &entries[len(entries)-1], true
		case macro == ".RE" || macro == ".RS" || macro == ".PP" || macro == ".IP":
			cur = nil
		case cur != nil && wantTag:
			cur.tag, wantTag = text, false
		case cur != nil:
			cur.body += " " + text
		}
	}
	return entries
}

// TestManPage: docs/vnic.8 describes every command of the usage text,
// every option, and every flag of `vnic up` with the default the flag set
// states, and none that the code does not have.
func TestManPage(t *testing.T) {
	entries := manEntries(t)
	commands, options := usageCommands(t)

	var manCommands, manFlags, manOptions []string
	bodyOf := map[string]string{}
	for _, e := range entries {
		switch e.section {
		case "COMMANDS":
			if strings.HasPrefix(e.tag, "-") {
				name := strings.Fields(e.tag)[0]
				manFlags = append(manFlags, name)
				bodyOf[name] = e.body
				continue
			}
			var words []string
			for _, w := range strings.Fields(e.tag) {
				if !commandWord.MatchString(w) {
					break
				}
				words = append(words, w)
			}
			manCommands = append(manCommands, strings.Join(words, " "))
		case "OPTIONS":
			for _, o := range strings.Split(e.tag, ", ") {
				manOptions = append(manOptions, strings.Fields(o)[0])
			}
		}
	}

	for _, c := range append(commands, "help") {
		if !slices.Contains(manCommands, c) {
			t.Errorf("the usage text lists the command %q; docs/vnic.8 has no entry for it under COMMANDS", c)
		}
	}
	for _, c := range manCommands {
		if c != "help" && !slices.Contains(commands, c) {
			t.Errorf("docs/vnic.8 describes the command %q, which the usage text does not list", c)
		}
	}

	for _, o := range append(options, "--all", "--help", "-h") {
		if !slices.Contains(manOptions, o) {
			t.Errorf("vnic takes the option %s; docs/vnic.8 has no entry for it under OPTIONS", o)
		}
	}
	for _, o := range manOptions {
		args := []string{o}
		if o == "--socket" || o == "--dev" || o == "--esp-sa-file" || o == "--timeout" { // they take a value
			args = append(args, "vnic9")
		}
		if _, _, err := (&cli{}).options(args); err != nil {
			t.Errorf("docs/vnic.8 describes the option %s, which vnic refuses: %v", o, err)
		}
	}

	flags := upFlags(t)
	for _, f := range flags {
		body, ok := bodyOf["-"+f.name]
		if !ok {
			t.Errorf("vnic up has the flag -%s; docs/vnic.8 has no entry for it", f.name)
			continue
		}
		// -crypto-workers' default is the machine's CPUs less two: the page
		// says so in words.
		if f.def != "" && f.name != "crypto-workers" && !strings.Contains(body, "(default "+f.def+")") {
			t.Errorf("docs/vnic.8 does not give -%s's default, %s: %q", f.name, f.def, body)
		}
	}
	for _, name := range manFlags {
		if !slices.ContainsFunc(flags, func(f upFlag) bool { return "-"+f.name == name }) {
			t.Errorf("docs/vnic.8 describes %s, which vnic up does not have", name)
		}
	}
}

// TestBashCompletion: contrib/completion/vnic.bash offers every command of
// the usage text, every option and every flag of `vnic up`.
func TestBashCompletion(t *testing.T) {
	src, err := os.ReadFile("../../contrib/completion/vnic.bash")
	if err != nil {
		t.Fatalf("the bash completion: %v", err)
	}
	has := func(word string) bool {
		return regexp.MustCompile(`(^|[\s"'(=])` + regexp.QuoteMeta(word) + `($|[\s"')])`).Match(src)
	}
	commands, options := usageCommands(t)
	for _, c := range commands {
		for _, w := range strings.Fields(c) {
			if !has(w) {
				t.Errorf("the bash completion does not offer %q (of the command %q)", w, c)
			}
		}
	}
	for _, o := range append(options, "--all") {
		if !has(o) {
			t.Errorf("the bash completion does not offer the option %s", o)
		}
	}
	for _, f := range upFlags(t) {
		if !has("-" + f.name) {
			t.Errorf("the bash completion does not offer vnic up's flag -%s", f.name)
		}
	}
}
