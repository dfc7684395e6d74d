// Spawn 1,000,000 goroutines that do nothing and wait for all of them with a
// sync.WaitGroup: Go's counterpart of weft's spawn + join.
package main

import (
	"fmt"
	"sync"
	"time"
)

func main() {
	const n = 1000000
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	ns := float64(time.Since(start).Nanoseconds()) / float64(n)
	fmt.Printf("go spawn+join of %d goroutines: %.1f ns/goroutine\n", n, ns)
}
