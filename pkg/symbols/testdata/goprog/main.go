// Command goprog is a fixture for pkg/symbols: a Go program whose function
// names, line table and DWARF variables the tests check. Run with "addrs"
// it prints where its variables are.
package main

import (
	"fmt"
	"os"
	"unsafe"
)

type config struct {
	verbose bool
	limit   int64
	name    [8]byte
}

var cfg = config{limit: 42}

type ring struct{ buf [16]int }

//go:noinline
func (r *ring) push(i, v int) { r.buf[i%len(r.buf)] = v }

//go:noinline
func worker(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i * int(cfg.limit)
	}
	return s
}

func main() {
	var r ring
	r.push(3, worker(len(os.Args)))
	if len(os.Args) > 1 && os.Args[1] == "addrs" {
		fmt.Printf("main.cfg %p %d\n", &cfg, unsafe.Sizeof(cfg))
		fmt.Printf("main.cfg.limit %p %d\n", &cfg.limit, unsafe.Sizeof(cfg.limit))
	}
}
