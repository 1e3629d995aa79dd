# memtrap: `make demo` builds memtrap and shows it catching a memory stomp;
# `make test` runs every test; `make bench` measures the write path.
GO      ?= go
CC      ?= gcc
BIN     := bin/memtrap
CFLAGS_EXAMPLE := -O0 -g -fno-omit-frame-pointer

.PHONY: all build demo test bench lint deps clean

all: build

build: deps
	$(GO) build -o $(BIN) ./cmd/memtrap

# deps installs what the build and the tests need on a fresh machine.
deps:
	@scripts/deps

bin/stomp: examples/stomp.c
	@mkdir -p bin
	$(CC) $(CFLAGS_EXAMPLE) -o $@ $<

demo: build bin/stomp
	@echo '--- the program alone: its token is corrupted'
	-bin/stomp
	@echo
	@echo '--- under memtrap, watching the token (session+8, 8 bytes)'
	-$(BIN) run --symbol session+8 --len 8 -- bin/stomp

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 200x ./...

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf bin
