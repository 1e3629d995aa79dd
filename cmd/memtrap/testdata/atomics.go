// Goroutines on GOMAXPROCS >= 2 add to a watched counter with sync/atomic.
package main

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

var counter int64

func worker(n int, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < n; i++ {
		atomic.AddInt64(&counter, 1)
	}
}

func main() {
	runtime.GOMAXPROCS(4)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go worker(2500, &wg)
	}
	wg.Wait()
	fmt.Println(atomic.LoadInt64(&counter))
}
