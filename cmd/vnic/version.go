package main

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// pseudoVersion matches the version the go command stamps on a build from
// a commit that no release tag names (go.dev/ref/mod#pseudo-versions):
// vX.0.0-TIME-REV, vX.Y.Z-pre.0.TIME-REV or vX.Y.Z-0.TIME-REV. Its first
// group is the version the commit comes before, vX.Y.Z or vX.Y.Z-pre.
var pseudoVersion = regexp.MustCompile(`^v(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]*?)??)(?:-0\.|\.0\.|-)\d{14}-[0-9a-f]{12}$`)

// versionLine is what `vnic --version` prints, one line like `wg
// --version`'s:
//
//	vnic 0.0.0-devel (revision 1a2b3c4d5e6f of 2026-12-02, dirty) go1.26.8
//
// from the information the go command stamped on the binary: the module's
// version (a release tag's, or, on a commit no tag names, the version it
// leads to marked -devel), the commit (vcs.revision, its first 12 hex
// digits), the commit's date (vcs.time) and whether the build had
// uncommitted changes (vcs.modified), and the Go release. What a build
// lacks — go run and go test stamp no commit, -buildvcs=false none at all
// — is "unknown". ok is ReadBuildInfo's second result.
func versionLine(bi *debug.BuildInfo, ok bool) string {
	version, revision, date, dirty, goVersion := "unknown", "unknown", "", false, runtime.Version()
	if ok && bi != nil {
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		v, plus, _ := strings.Cut(bi.Main.Version, "+")
		dirty = plus == "dirty" // Go 1.24 and later mark a modified build so
		if m := pseudoVersion.FindStringSubmatch(v); m != nil {
			version = m[1] + "-devel"
		} else if strings.HasPrefix(v, "v") {
			version = v[1:]
		} // "(devel)" or "": the go command did not know it
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					revision = s.Value[:min(12, len(s.Value))]
				}
			case "vcs.time":
				date, _, _ = strings.Cut(s.Value, "T")
			case "vcs.modified":
				dirty = dirty || s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "vnic %s (revision %s", version, revision)
	if date != "" {
		fmt.Fprintf(&b, " of %s", date)
	}
	if dirty {
		b.WriteString(", dirty")
	}
	fmt.Fprintf(&b, ") %s", goVersion)
	return b.String()
}

// version is `vnic version` and `vnic --version`: the line versionLine
// makes of the running binary's build information.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	return versionLine(bi, ok)
}
