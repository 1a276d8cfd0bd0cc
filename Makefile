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
	$(GO) test -run '^$$' -fuzz '^FuzzAllowList$$' -fuzztime $(FUZZTIME) ./loader

demo: deps build
	./scripts/demo.sh

bench: deps build
	./scripts/bench.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/xdpguard

clean:
	rm -rf bin
