# xdpguard. `sudo make demo` and `sudo make test` do all the set-up themselves.
GO ?= go
PREFIX ?= /usr/local
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin/xdpguard

.PHONY: all deps generate build test fuzz demo bench install clean

all: build

deps:
	./scripts/deps.sh

# Regenerates the committed bpf2go output from bpf/*.c (needs clang).
generate:
	$(GO) generate ./loader/...

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/xdpguard

test: deps
	./scripts/test.sh

FUZZTIME ?= 60s
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzDifferential$$' -fuzztime $(FUZZTIME) ./loader

demo: deps build
	./scripts/demo.sh

bench: deps build
	./scripts/bench.sh

# The binary, the systemd unit, and the example config and allow list. An
# existing /etc/xdpguard/xdpguard.yaml or allow.txt is never overwritten.
UNITDIR ?= /etc/systemd/system
CONFDIR := /etc/xdpguard
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/xdpguard
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR)
	sed 's|/usr/local/bin|$(PREFIX)/bin|g' deploy/xdpguard.service >$(DESTDIR)$(UNITDIR)/xdpguard.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/xdpguard.service
	test -e $(DESTDIR)$(CONFDIR)/xdpguard.yaml || install -m 0644 deploy/xdpguard.yaml $(DESTDIR)$(CONFDIR)/xdpguard.yaml
	test -e $(DESTDIR)$(CONFDIR)/allow.txt || install -m 0644 deploy/allow.txt $(DESTDIR)$(CONFDIR)/allow.txt

clean:
	rm -rf bin
