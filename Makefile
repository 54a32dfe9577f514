# vnic's build and install, in the way of wireguard-go's and
# wireguard-tools' Makefiles:
#
#   make                         build ./vnic (needs Go 1.26 or newer)
#   make install                 as root: the binary, the man page, the bash
#                                completion and, when there is one, the
#                                systemd unit, under PREFIX (/usr/local)
#   make install PREFIX=/usr DESTDIR=/tmp/pkg
#                                the same, staged for a package
#   make uninstall               remove what make install put there
#   make test                    every test (scripts/test.sh, as root)
#   make man                     check that docs/vnic.8 renders without warnings
#   make clean                   remove ./vnic
#   make BUILDVCS=false          build without naming the commit (for a
#                                tree git refuses: another user's)

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system

# The go command on PATH, else the one the scripts use.
GO ?= $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)

# auto: vnic --version names the commit when the tree is a git work tree,
# overriding a GOFLAGS=-buildvcs=false in the environment. false: when git
# refuses the tree (a tree another user owns: "dubious ownership").
BUILDVCS ?= auto

# vnic is rebuilt when a Go file, go.mod or go.sum changes, or git's
# index (a commit or checkout rewrites it: the binary names its commit).
SOURCES := go.mod go.sum $(shell find . -name '*.go' -not -name '*_test.go' -not -path './.git/*') $(wildcard .git/index)

all: build

build: vnic

# -trimpath: no build paths in the binary.
vnic: $(SOURCES)
	$(GO) build -trimpath -buildvcs=$(BUILDVCS) -o $@ ./cmd/vnic

install: vnic
	@install -v -d "$(DESTDIR)$(BINDIR)" && install -v -m 0755 vnic "$(DESTDIR)$(BINDIR)/vnic"
	@install -v -d "$(DESTDIR)$(MANDIR)/man8" && install -v -m 0644 docs/vnic.8 "$(DESTDIR)$(MANDIR)/man8/vnic.8"
	@install -v -d "$(DESTDIR)$(BASHCOMPDIR)" && install -v -m 0644 contrib/completion/vnic.bash "$(DESTDIR)$(BASHCOMPDIR)/vnic"
	@if [ -f contrib/systemd/vnic@.service ]; then \
		install -v -d "$(DESTDIR)$(SYSTEMDUNITDIR)" && \
		sed 's|/usr/local/bin/vnic|$(BINDIR)/vnic|' contrib/systemd/vnic@.service >"$(DESTDIR)$(SYSTEMDUNITDIR)/vnic@.service" && \
		chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/vnic@.service" && echo "installed $(DESTDIR)$(SYSTEMDUNITDIR)/vnic@.service"; \
	fi

uninstall:
	@rm -vf "$(DESTDIR)$(BINDIR)/vnic" "$(DESTDIR)$(MANDIR)/man8/vnic.8" \
		"$(DESTDIR)$(BASHCOMPDIR)/vnic" "$(DESTDIR)$(SYSTEMDUNITDIR)/vnic@.service"

test:
	bash scripts/test.sh

# groff -ww: every warning; -z: no output. groff exits 0 on warnings, so
# any line it prints fails the check.
man:
	@command -v groff >/dev/null || { echo "make man needs groff: apt-get install groff-base" >&2; exit 1; }
	@out=$$(LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 docs/vnic.8 2>&1); \
		if [ -n "$$out" ]; then echo "$$out" >&2; echo "docs/vnic.8 renders with warnings" >&2; exit 1; fi
	@echo "docs/vnic.8 renders without warnings"

clean:
	rm -f vnic

.PHONY: all build install uninstall test man clean
