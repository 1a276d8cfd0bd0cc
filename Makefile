# xdpguard. `sudo make demo` and `sudo make test` do all the set-up themselves.
GO ?= go
PREFIX ?= /usr/local
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin/xdpguard

.PHONY: all deps generate build test vmtest fuzz demo bench install image clean

all: build

# `make print-LDFLAGS`: a variable's value, for scripts that must build
# exactly as this Makefile does (scripts/vmtest.sh).
print-%:
	@echo '$($*)'

deps:
	./scripts/deps.sh

# Regenerates the committed bpf2go output from bpf/*.c (needs clang).
generate:
	$(GO) generate ./loader/...

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/xdpguard

test: deps
	./scripts/test.sh

# The kernel-facing tests inside Debian's stock kernels under qemu
# (docs/vmtest.md): `sudo make vmtest KERNEL=6.1`; all three by default.
KERNEL ?= 5.10 6.1 6.12
vmtest: deps
	./scripts/vmtest.sh $(KERNEL)

FUZZTIME ?= 60s
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzDifferential$$' -fuzztime $(FUZZTIME) ./loader
	$(GO) test -run '^$$' -fuzz '^FuzzAllowList$$' -fuzztime $(FUZZTIME) ./loader

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

# The container image (Containerfile): the static binary built here, in an
# empty image whose every timestamp is the last commit's, so the same source
# gives the same digest. Never from the layer cache: a cached step keeps the
# timestamps and parent ids of the build that made it.
IMAGE ?= localhost/xdpguard
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_BUILDER ?= $(if $(shell command -v podman),podman build,buildah bud)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -s -w -buildid=" -o bin/image/xdpguard ./cmd/xdpguard
	$(IMAGE_BUILDER) --layers=false --timestamp $(SOURCE_DATE_EPOCH) --identity-label=false \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-f Containerfile -t $(IMAGE):latest -t $(IMAGE):$(VERSION) bin/image

clean:
	rm -rf bin
