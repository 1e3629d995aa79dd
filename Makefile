# memtrap: `make demo` builds memtrap and shows it catching a memory stomp;
# `make test` runs every test; `make bench` measures the write path.
GO      ?= go
CC      ?= gcc
BIN     := bin/memtrap
CFLAGS_EXAMPLE := -O0 -g -fno-omit-frame-pointer

PREFIX  ?= /usr/local

.PHONY: all build demo test bench lint deps clean install agent

all: build

build: deps
	$(GO) build -o $(BIN) ./cmd/memtrap

# deps installs what the build and the tests need on a fresh machine.
deps:
	@scripts/deps

bin/stomp: examples/stomp.c
	@mkdir -p bin
	$(CC) $(CFLAGS_EXAMPLE) -o $@ $<

bin/heapstomp: examples/heapstomp.c
	@mkdir -p bin
	$(CC) $(CFLAGS_EXAMPLE) -o $@ $<

demo: build bin/stomp bin/heapstomp
	@echo '--- the program alone: its token comes out corrupted'
	@bin/stomp || echo "(bin/stomp exited with status $$?)"
	@echo
	@echo '--- under memtrap, watching the token (session+8, 8 bytes): who wrote it?'
	@echo '$$ $(BIN) run --backtrace 3 --symbol session+8 --len 8 -- bin/stomp'
	@$(BIN) run --backtrace 3 --symbol session+8 --len 8 -- bin/stomp || true
	@echo
	@echo '--- the same stomp on the heap: nobody knows the block'"'"'s address before the run'
	@bin/heapstomp || echo "(bin/heapstomp exited with status $$?)"
	@echo
	@echo '--- watching every block new_credentials() allocates, from its allocation on'
	@echo '$$ $(BIN) run --backtrace 2 --heap size=24,site=new_credentials -- bin/heapstomp'
	@$(BIN) run --backtrace 2 --heap size=24,site=new_credentials -- bin/heapstomp || true

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

bench: build
	scripts/bench/bench
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./pkg/... ./internal/...

# agent rebuilds the in-target agent's blob from its C source (committed,
# so that building memtrap needs no C compiler; its test compares).
agent:
	pkg/agent/csrc/build.sh

# install puts the binary and its man pages (generated from the commands,
# so they never drift from --help) under $(DESTDIR)$(PREFIX).
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/memtrap
	$(BIN) man $(DESTDIR)$(PREFIX)/share/man/man1

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf bin
